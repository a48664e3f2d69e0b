#pragma once

// A blocking HTTP/1.1 client (Boost.Beast) for the coordinator's API: the CLI, actors and tests.

#include <chrono>
#include <string>

#include "common/status.h"

namespace tandem::net {

struct HttpReply {
    int status = 0;
    std::string body;
};

// `base` is "http://HOST:PORT". Connection failures are unavailable errors naming the address.
Result<HttpReply> http_call(const std::string& base, const std::string& method,
                            const std::string& target, const std::string& body = "",
                            const std::string& token = "",
                            std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace tandem::net
