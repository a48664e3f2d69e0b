#pragma once

// A small HTTP/1.1 server on the coordinator's Boost.Asio loop (Boost.Beast): accepts, reads one
// request at a time per connection (keep-alive), hands it to a handler, writes the response. The
// handler runs on the loop thread. Neither copyable nor movable.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "common/status.h"

namespace tandem::coord {

struct HttpRequest {
    std::string method;  // "GET", "POST"
    std::string path;    // without the query
    std::map<std::string, std::string> query;
    std::string body;
    std::string authorization;  // the Authorization header
    std::string remote;         // peer address
};

struct HttpResponse {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
};

class HttpServer {
public:
    using Handler = std::function<HttpResponse(const HttpRequest&)>;

    static Result<std::unique_ptr<HttpServer>> listen(boost::asio::io_context& io,
                                                      const std::string& address, uint16_t port,
                                                      Handler handler);
    HttpServer(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor acceptor, Handler h);
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;
    ~HttpServer();

    uint16_t port() const;

private:
    void accept();

    boost::asio::io_context& io_;
    boost::asio::ip::tcp::acceptor acceptor_;
    std::shared_ptr<Handler> handler_;  // shared with live sessions
};

}  // namespace tandem::coord
