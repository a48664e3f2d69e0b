#pragma once

// A small HTTP/1.1 server on the coordinator's Boost.Asio loop (Boost.Beast): accepts, reads one
// request at a time per connection (keep-alive), hands it to a handler, writes the response. The
// handler runs on the loop thread. Neither copyable nor movable.
//
// Hostile clients (HttpLimits): a request whose header or body is too large is answered 431/413
// and the connection closed; one that cannot be parsed, 400; a client that takes longer than
// read_timeout to send a whole request (or idles that long between keep-alive requests) is
// disconnected; connections beyond max_connections are answered 503 and closed. A handler that
// throws is answered 500 with a JSON body; the loop never sees the exception.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "common/status.h"

namespace tandem::coord {

struct HttpRequest {
    std::string method;  // "GET", "POST"
    std::string path;    // without the query
    std::map<std::string, std::string> query;
    std::string body;
    std::string content_type;   // the Content-Type header ("" when absent)
    std::string authorization;  // the Authorization header
    std::string remote;         // peer address
};

struct HttpResponse {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
};

struct HttpLimits {
    size_t max_connections = 256;
    uint32_t header_bytes = 16 << 10;  // request line + headers
    uint64_t body_bytes = 4 << 20;
    std::chrono::milliseconds read_timeout{15'000};  // a whole request, or idle keep-alive
    std::chrono::milliseconds write_timeout{30'000};
};

// Splits a request target "path?k=v&k2" into r.path and r.query, percent-decoding each part;
// false when a '%' is not followed by two hex digits.
bool parse_target(std::string_view target, HttpRequest& r);

class HttpServer {
public:
    using Handler = std::function<HttpResponse(const HttpRequest&)>;

    static Result<std::unique_ptr<HttpServer>> listen(boost::asio::io_context& io,
                                                      const std::string& address, uint16_t port,
                                                      Handler handler, HttpLimits limits = {});
    HttpServer(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor acceptor, Handler h,
               HttpLimits limits = {});
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;
    ~HttpServer();

    uint16_t port() const;
    size_t connections() const;  // open now

private:
    void accept();

    boost::asio::io_context& io_;
    boost::asio::ip::tcp::acceptor acceptor_;
    // Shared with live sessions, which may outlive the server.
    std::shared_ptr<Handler> handler_;
    std::shared_ptr<const HttpLimits> limits_;
    std::shared_ptr<size_t> connections_;  // sessions alive (each decrements it when destroyed)
};

}  // namespace tandem::coord
