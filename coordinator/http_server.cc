#include "coordinator/http_server.h"

#include <optional>

#include <fmt/format.h>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace tandem::coord {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Percent-decoding of a path or query component; nullopt when a '%' is not followed by two hex
// digits (the request is then answered 400, never thrown out of the loop).
std::optional<std::string> url_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%') {
            if (i + 2 >= s.size()) return std::nullopt;
            const int hi = hex_value(s[i + 1]);
            const int lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += s[i] == '+' ? ' ' : s[i];
        }
    }
    return out;
}

HttpResponse error_reply(int status, std::string_view message) {
    return {status, "application/json",
            nlohmann::json{{"error", message}}.dump(-1, ' ', false,
                                                    nlohmann::json::error_handler_t::replace)};
}

}  // namespace

bool parse_target(std::string_view target, HttpRequest& r) {
    const auto q = target.find('?');
    auto path = url_decode(target.substr(0, q));
    if (!path) return false;
    r.path = std::move(*path);
    if (q == std::string_view::npos) return true;
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const std::string_view kv = rest.substr(0, amp);
        const auto eq = kv.find('=');
        auto key = url_decode(kv.substr(0, eq));
        auto value = eq == std::string_view::npos ? std::optional<std::string>("")
                                                  : url_decode(kv.substr(eq + 1));
        if (!key || !value) return false;
        r.query[std::move(*key)] = std::move(*value);
        if (amp == std::string_view::npos) break;
        rest.remove_prefix(amp + 1);
    }
    return true;
}

namespace {

// One connection: read a request, answer it, repeat while keep-alive.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, std::shared_ptr<HttpServer::Handler> handler,
            std::shared_ptr<const HttpLimits> limits, std::shared_ptr<size_t> connections)
        : stream_(std::move(socket)),
          handler_(std::move(handler)),
          limits_(std::move(limits)),
          connections_(std::move(connections)) {
        ++*connections_;
    }
    ~Session() { --*connections_; }

    void start() { read(); }

    // Answers 503 and closes: the server is at its connection limit.
    void refuse() {
        keep_alive_ = false;
        write(error_reply(503, "too many connections; try again later"));
    }

private:
    void read() {
        req_ = {};
        parser_.emplace();
        parser_->header_limit(limits_->header_bytes);
        parser_->body_limit(limits_->body_bytes);
        stream_.expires_after(limits_->read_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, size_t) {
                             if (ec) return self->read_failed(ec);
                             self->req_ = self->parser_->release();
                             self->keep_alive_ = self->req_.keep_alive();
                             self->respond();
                         });
    }

    // A request that cannot be read: answered when the client can still take an answer, then
    // the connection is closed.
    void read_failed(beast::error_code ec) {
        keep_alive_ = false;
        if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
            ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset ||
            ec == boost::asio::error::operation_aborted) {
            return close();
        }
        if (ec == http::error::header_limit)
            return write(error_reply(431, "request header too large"));
        if (ec == http::error::body_limit) return write(error_reply(413, "request body too large"));
        if (ec.category() == http::make_error_code(http::error::bad_method).category() ||
            ec == http::error::partial_message) {
            return write(error_reply(400, "malformed HTTP request: " + ec.message()));
        }
        close();
    }

    void respond() {
        HttpRequest r;
        r.method = std::string(req_.method_string());
        if (!parse_target(std::string_view(req_.target().data(), req_.target().size()), r)) {
            return write(error_reply(400, "malformed percent-encoding in the request target"));
        }
        r.body = std::move(req_.body());
        if (auto it = req_.find(http::field::authorization); it != req_.end()) {
            r.authorization = std::string(it->value());
        }
        if (auto it = req_.find(http::field::content_type); it != req_.end()) {
            r.content_type = std::string(it->value());
        }
        beast::error_code ec;
        const auto ep = stream_.socket().remote_endpoint(ec);
        if (!ec) r.remote = ep.address().to_string();

        HttpResponse out;
        try {
            out = (*handler_)(r);
        } catch (const std::exception& e) {
            out = error_reply(500, std::string("internal: ") + e.what());
        } catch (...) {
            out = error_reply(500, "internal: unknown exception");
        }
        write(std::move(out));
    }

    void write(HttpResponse out) {
        auto res = std::make_shared<http::response<http::string_body>>(
            static_cast<http::status>(out.status), req_.version() ? req_.version() : 11);
        res->set(http::field::server, "tandem-coordinator");
        res->set(http::field::content_type, out.content_type);
        res->keep_alive(keep_alive_);
        res->body() = std::move(out.body);
        res->prepare_payload();
        stream_.expires_after(limits_->write_timeout);
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
    bool keep_alive_ = true;
    std::shared_ptr<HttpServer::Handler> handler_;
    std::shared_ptr<const HttpLimits> limits_;
    std::shared_ptr<size_t> connections_;
};

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::listen(boost::asio::io_context& io,
                                                       const std::string& address, uint16_t port,
                                                       Handler handler, HttpLimits limits) {
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
    return std::make_unique<HttpServer>(io, std::move(acceptor), std::move(handler), limits);
}

HttpServer::HttpServer(boost::asio::io_context& io, tcp::acceptor acceptor, Handler h,
                       HttpLimits limits)
    : io_(io),
      acceptor_(std::move(acceptor)),
      handler_(std::make_shared<Handler>(std::move(h))),
      limits_(std::make_shared<const HttpLimits>(limits)),
      connections_(std::make_shared<size_t>(0)) {
    accept();
}

HttpServer::~HttpServer() {
    beast::error_code ec;
    acceptor_.close(ec);
}

uint16_t HttpServer::port() const { return acceptor_.local_endpoint().port(); }

size_t HttpServer::connections() const { return *connections_; }

void HttpServer::accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (ec == boost::asio::error::operation_aborted) return;
        if (!ec) {
            const bool full = *connections_ >= limits_->max_connections;
            auto s = std::make_shared<Session>(std::move(socket), handler_, limits_, connections_);
            if (full) {
                s->refuse();
            } else {
                s->start();
            }
        }
        accept();
    });
}

}  // namespace tandem::coord
