// HttpServer over a real loopback socket: malformed percent-encoding in the request target is
// answered 400 (it used to throw std::invalid_argument out of the loop and abort the coordinator),
// and the server keeps serving afterwards; oversized headers and bodies, garbage, slow clients,
// too many connections and a throwing handler each get an error reply or a closed connection.
#include "coordinator/http_server.h"

#include <gtest/gtest.h>

#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include <boost/asio/buffers_iterator.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <nlohmann/json.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

namespace tandem::coord {
namespace {

using tcp = boost::asio::ip::tcp;

class HttpServerTest : public ::testing::Test {
protected:
    void SetUp() override { start({}); }
    void start(HttpLimits limits) {
        auto server = HttpServer::listen(
            io_, "127.0.0.1", 0,
            [this](const HttpRequest& r) {
                if (r.path == "/throw") throw std::runtime_error("bad \"thing\"\n\xff");
                last_path_ = r.path;
                last_query_ = r.query;
                return HttpResponse{200, "text/plain", "ok " + r.path};
            },
            limits);
        ASSERT_TRUE(server.ok()) << server.status().to_string();
        server_ = std::move(server).value();
        loop_ = std::thread([this] { io_.run(); });
    }
    void TearDown() override {
        work_.reset();
        io_.stop();
        if (loop_.joinable()) loop_.join();
    }

    // Sends one raw request on a fresh connection (Connection: close) and returns the reply.
    std::string roundtrip(const std::string& target) {
        return raw("GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    }
    // Sends `bytes` on a fresh connection, half-closes it and reads until the server closes it.
    std::string raw(const std::string& bytes) {
        tcp::socket s(client_io_);
        s.connect(endpoint());
        boost::system::error_code ec;
        boost::asio::write(s, boost::asio::buffer(bytes), ec);
        s.shutdown(tcp::socket::shutdown_send, ec);
        return read_all(s);
    }
    static std::string read_all(tcp::socket& s) {
        std::string reply;
        boost::system::error_code ec;
        char buf[4096];
        for (;;) {
            const size_t n = s.read_some(boost::asio::buffer(buf), ec);
            reply.append(buf, n);
            if (ec) break;
        }
        return reply;
    }
    // One keep-alive request on an open connection; returns the reply's status line.
    static std::string request_on(tcp::socket& s, const std::string& target) {
        const std::string req = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
        boost::asio::write(s, boost::asio::buffer(req));
        boost::asio::streambuf buf;
        boost::asio::read_until(s, buf, "\r\n\r\n");
        std::string head(boost::asio::buffers_begin(buf.data()),
                         boost::asio::buffers_end(buf.data()));
        return head.substr(0, head.find("\r\n"));
    }
    tcp::endpoint endpoint() const {
        return tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), server_->port());
    }
    // Waits (with a deadline) until the server counts `n` open connections.
    bool wait_connections(size_t n) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            std::promise<size_t> p;
            boost::asio::post(io_, [&] { p.set_value(server_->connections()); });
            if (p.get_future().get() == n) return true;
            std::this_thread::yield();
        }
        return false;
    }

    boost::asio::io_context client_io_;

    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
        io_.get_executor()};
    std::unique_ptr<HttpServer> server_;
    std::thread loop_;
    std::string last_path_;
    std::map<std::string, std::string> last_query_;
};

TEST_F(HttpServerTest, MalformedPercentEncodingIsAnswered400AndServerKeepsServing) {
    for (const std::string target :
         {"/%zz", "/%", "/%4", "/a%", "/v1/jobs?x=%G1", "/v1/jobs?%zz=1", "/%%%%"}) {
        const std::string reply = roundtrip(target);
        EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << target << " -> " << reply;
        EXPECT_NE(reply.find("malformed percent-encoding"), std::string::npos) << reply;
    }
    const std::string ok = roundtrip("/v1/a%20b?k=v%3D1&flag");
    EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
    EXPECT_EQ(last_path_, "/v1/a b");
    EXPECT_EQ(last_query_["k"], "v=1");
    EXPECT_EQ(last_query_.count("flag"), 1u);
}

TEST_F(HttpServerTest, OversizedHeaderIs431AndOversizedBodyIs413) {
    const std::string big_header =
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n";
    EXPECT_EQ(raw(big_header).rfind("HTTP/1.1 431", 0), 0u);
    const std::string big_target = "GET /" + std::string(64 << 10, 'a') + " HTTP/1.1\r\n\r\n";
    EXPECT_EQ(raw(big_target).rfind("HTTP/1.1 431", 0), 0u);
    // Refused from the declared length, before any of the body is read.
    const std::string big_body =
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{";
    const std::string reply = raw(big_body);
    EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply;
    EXPECT_EQ(roundtrip("/still-here").rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(HttpServerTest, GarbageIs400AndTruncatedRequestsAreClosed) {
    for (const std::string& bytes :
         {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15),
          std::string("GET / HTTP/9.9\r\n\r\n"), std::string("G\x00T / HTTP/1.1\r\n\r\n"),
          std::string("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
          std::string("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")}) {
        const std::string reply = raw(bytes);
        EXPECT_TRUE(reply.empty() || reply.rfind("HTTP/1.1 400", 0) == 0) << reply;
    }
    // A body shorter than its Content-Length, then EOF: 400 and closed.
    const std::string reply = raw("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort");
    EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
    EXPECT_NE(reply.find("partial message"), std::string::npos) << reply;
    EXPECT_EQ(roundtrip("/still-here").rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(HttpServerTest, HandlerExceptionIs500WithValidJson) {
    const std::string reply = roundtrip("/throw");
    ASSERT_EQ(reply.rfind("HTTP/1.1 500", 0), 0u) << reply;
    const auto body =
        nlohmann::json::parse(reply.substr(reply.find("\r\n\r\n") + 4), nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << reply;
    EXPECT_NE(body["error"].get<std::string>().find("bad \"thing\""), std::string::npos);
    EXPECT_EQ(roundtrip("/still-here").rfind("HTTP/1.1 200", 0), 0u);
}

class HttpServerLimitsTest : public HttpServerTest {
protected:
    void SetUp() override {
        HttpLimits limits;
        limits.max_connections = 2;
        limits.read_timeout = std::chrono::milliseconds(300);
        start(limits);
    }
};

TEST_F(HttpServerLimitsTest, SlowClientIsDisconnectedAfterTheReadTimeout) {
    tcp::socket s(client_io_);
    s.connect(endpoint());
    const auto t0 = std::chrono::steady_clock::now();
    boost::asio::write(s, boost::asio::buffer(std::string("GET / HTTP/1.1\r\nHost: x\r\n")));
    EXPECT_EQ(read_all(s), "");  // returns when the server closes, never a reply
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
    EXPECT_TRUE(wait_connections(0));
}

TEST_F(HttpServerLimitsTest, ConnectionsBeyondTheLimitAre503UntilOneCloses) {
    tcp::socket a(client_io_), b(client_io_);
    a.connect(endpoint());
    b.connect(endpoint());
    EXPECT_EQ(request_on(a, "/a"), "HTTP/1.1 200 OK");
    EXPECT_EQ(request_on(b, "/b"), "HTTP/1.1 200 OK");
    ASSERT_TRUE(wait_connections(2));
    EXPECT_EQ(roundtrip("/c").rfind("HTTP/1.1 503", 0), 0u);
    a.close();
    ASSERT_TRUE(wait_connections(1));
    EXPECT_EQ(roundtrip("/d").rfind("HTTP/1.1 200", 0), 0u);
}

}  // namespace
}  // namespace tandem::coord
