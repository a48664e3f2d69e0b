#include "common/net/http_client.h"

#include <fmt/format.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace tandem::net {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

Result<HttpReply> http_call(const std::string& base, const std::string& method,
                            const std::string& target, const std::string& body,
                            const std::string& token, std::chrono::milliseconds timeout) {
    std::string hostport = base;
    if (hostport.starts_with("http://")) hostport = hostport.substr(7);
    while (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
    const auto colon = hostport.rfind(':');
    if (colon == std::string::npos) {
        return invalid_argument(
            fmt::format("coordinator address '{}': expected http://HOST:PORT", base));
    }
    const std::string host = hostport.substr(0, colon), port = hostport.substr(colon + 1);
    try {
        boost::asio::io_context io;
        tcp::resolver resolver(io);
        beast::tcp_stream stream(io);
        stream.expires_after(timeout);
        stream.connect(resolver.resolve(host, port));
        http::request<http::string_body> req(method == "POST" ? http::verb::post : http::verb::get,
                                             target, 11);
        req.set(http::field::host, host);
        req.set(http::field::user_agent, "tandem-cli");
        if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
        if (!body.empty()) req.set(http::field::content_type, "application/json");
        req.body() = body;
        req.prepare_payload();
        http::write(stream, req);
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.body_limit(64 << 20);
        http::read(stream, buffer, parser);
        beast::error_code ec;
        stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        return HttpReply{static_cast<int>(parser.get().result_int()), parser.get().body()};
    } catch (const std::exception& e) {
        return unavailable(fmt::format("cannot reach the coordinator at {}: {}", base, e.what()));
    }
}

}  // namespace tandem::net
