#pragma once

// The control-plane envelope. On the wire a message is a ZeroMQ multipart message:
//
//   frame 0: header, text: "TANDEM/<major>.<minor> <type> <seq>"
//   frame 1: body, a JSON object
//   frame 2..: optional binary frames (UCX worker addresses, packed remote keys)
//
// A ROUTER socket sees the sender's routing id before frame 0. A peer with another protocol
// major is refused; a higher minor is accepted (fields are only ever added within a major).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tandem::wire {

inline constexpr uint16_t kProtocolMajor = 1;
inline constexpr uint16_t kProtocolMinor = 0;

struct Envelope {
    uint16_t major = kProtocolMajor;
    uint16_t minor = kProtocolMinor;
    std::string type;
    uint64_t seq = 0;
    nlohmann::json body = nlohmann::json::object();
    std::vector<std::string> frames;  // binary attachments
};

std::vector<std::string> encode(const Envelope& e);

// Decodes and validates: header syntax, protocol major, known type, JSON object body, and the
// required fields of that type (messages.h). On error, `partial` (if given) receives whatever
// header fields could be read, so the receiver can answer the sender.
Result<Envelope> decode(const std::vector<std::string>& frames, Envelope* partial = nullptr);

}  // namespace tandem::wire
