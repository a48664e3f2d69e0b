#include "coordinator/http_server.h"

#include <optional>

#include <fmt/format.h>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace tandem::coord {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

std::string url_decode(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            out += s[i] == '+' ? ' ' : s[i];
        }
    }
    return out;
}

// One connection: read a request, answer it, repeat while keep-alive.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, std::shared_ptr<HttpServer::Handler> handler)
        : stream_(std::move(socket)), handler_(std::move(handler)) {}

    void start() { read(); }

private:
    void read() {
        req_ = {};
        parser_.emplace();
        parser_->body_limit(16 << 20);
        stream_.expires_after(std::chrono::seconds(60));
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, size_t) {
                             if (ec) return self->close();
                             self->req_ = self->parser_->release();
                             self->respond();
                         });
    }

    void respond() {
        HttpRequest r;
        r.method = std::string(req_.method_string());
        const std::string target(req_.target());
        const auto q = target.find('?');
        r.path = url_decode(target.substr(0, q));
        if (q != std::string::npos) {
            std::string_view rest = std::string_view(target).substr(q + 1);
            while (!rest.empty()) {
                const auto amp = rest.find('&');
                const std::string_view kv = rest.substr(0, amp);
                const auto eq = kv.find('=');
                r.query[url_decode(kv.substr(0, eq))] =
                    eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
                if (amp == std::string_view::npos) break;
                rest.remove_prefix(amp + 1);
            }
        }
        r.body = req_.body();
        if (auto it = req_.find(http::field::authorization); it != req_.end()) {
            r.authorization = std::string(it->value());
        }
        beast::error_code ec;
        const auto ep = stream_.socket().remote_endpoint(ec);
        if (!ec) r.remote = ep.address().to_string();

        HttpResponse out;
        try {
            out = (*handler_)(r);
        } catch (const std::exception& e) {
            out = {500, "application/json", fmt::format(R"({{"error":"internal: {}"}})", e.what())};
        }
        auto res = std::make_shared<http::response<http::string_body>>(
            static_cast<http::status>(out.status), req_.version());
        res->set(http::field::server, "tandem-coordinator");
        res->set(http::field::content_type, out.content_type);
        res->keep_alive(req_.keep_alive());
        res->body() = std::move(out.body);
        res->prepare_payload();
        http::async_write(stream_, *res,
                          [self = shared_from_this(), res](beast::error_code ec, size_t) {
                              if (ec || !res->keep_alive()) return self->close();
                              self->read();
                          });
    }

    void close() {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::request<http::string_body> req_;
    std::shared_ptr<HttpServer::Handler> handler_;
};

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::listen(boost::asio::io_context& io,
                                                       const std::string& address, uint16_t port,
                                                       Handler handler) {
    beast::error_code ec;
    const auto addr = boost::asio::ip::make_address(address, ec);
    if (ec)
        return invalid_argument(fmt::format("http bind address '{}': {}", address, ec.message()));
    tcp::acceptor acceptor(io);
    const tcp::endpoint ep(addr, port);
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
    if (ec)
        return unavailable(fmt::format("cannot listen on {}:{}: {}", address, port, ec.message()));
    return std::make_unique<HttpServer>(io, std::move(acceptor), std::move(handler));
}

HttpServer::HttpServer(boost::asio::io_context& io, tcp::acceptor acceptor, Handler h)
    : io_(io), acceptor_(std::move(acceptor)), handler_(std::make_shared<Handler>(std::move(h))) {
    accept();
}

HttpServer::~HttpServer() {
    beast::error_code ec;
    acceptor_.close(ec);
}

uint16_t HttpServer::port() const { return acceptor_.local_endpoint().port(); }

void HttpServer::accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (ec == boost::asio::error::operation_aborted) return;
        if (!ec) std::make_shared<Session>(std::move(socket), handler_)->start();
        accept();
    });
}

}  // namespace tandem::coord
