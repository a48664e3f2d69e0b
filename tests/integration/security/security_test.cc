// A live local cluster under hostile HTTP input and with tokens: a few hundred malformed requests
// (garbage, bad percent-encoding, oversized headers and bodies, truncated bodies, deep JSON, wrong
// content types and tokens, more connections than the limit) leave the coordinator serving; every
// endpoint but /healthz needs a token, `tandem token create` makes working tokens of each role;
// a second coordinator on the same state directory exits 2 naming the first one's pid.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

// A connected loopback socket with 5 s send/receive timeouts (no test waits longer on it).
class Conn {
public:
    explicit Conn(int port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        timeval tv{5, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    }
    ~Conn() {
        if (fd_ >= 0) ::close(fd_);
    }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    bool ok() const { return ok_; }
    void send(const std::string& bytes) {
        size_t off = 0;
        while (off < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
            if (n <= 0) return;  // the server may close early (413, 431): fine
            off += static_cast<size_t>(n);
        }
    }
    void half_close() { ::shutdown(fd_, SHUT_WR); }
    // Reads until the server closes (or 5 s pass); returns what came.
    std::string read_all() {
        std::string out;
        char buf[4096];
        for (;;) {
            const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }

private:
    int fd_ = -1;
    bool ok_ = false;
};

// The status class of a raw reply ("2xx".."5xx"), "closed" when nothing came back.
std::string status_class(const std::string& reply) {
    if (reply.rfind("HTTP/1.1 ", 0) != 0 || reply.size() < 12) return "closed";
    return std::string(1, reply[9]) + "xx";
}

// Deterministic hostile requests: index i picks a kind, the generator the details.
std::string hostile_request(int i, std::mt19937& rng, const std::string& admin) {
    auto random_bytes = [&](size_t n) {
        std::string s(n, '\0');
        for (auto& c : s) c = static_cast<char>(rng() & 0xff);
        return s;
    };
    const std::string auth = "Authorization: Bearer " + admin + "\r\n";
    switch (i % 12) {
        case 0:
            return random_bytes(1 + rng() % 512);
        case 1:
            return "GET /%" + random_bytes(2) + " HTTP/1.1\r\nHost: x\r\n\r\n";
        case 2:
            return "GET /api/v1/jobs?%zz=" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
        case 3:
            return "GET / HTTP/1.1\r\nX-Big: " + std::string(20000 + rng() % 50000, 'a') +
                   "\r\n\r\n";
        case 4:
            return "POST /api/v1/jobs HTTP/1.1\r\n" + auth +
                   "Content-Length: 999999999999\r\n\r\n{\"spec_yaml\":";
        case 5:  // truncated: fewer bytes than announced, then EOF
            return "POST /api/v1/jobs HTTP/1.1\r\n" + auth + "Content-Length: 500\r\n\r\n{\"sp";
        case 6: {
            const size_t depth = 1000 + rng() % 100000;
            const std::string body = std::string(depth, '[') + std::string(depth, ']');
            return fmt::format(
                "POST /api/v1/jobs HTTP/1.1\r\n{}Content-Type: application/json\r\n"
                "Content-Length: {}\r\n\r\n{}",
                auth, body.size(), body);
        }
        case 7:
            return "POST /api/v1/jobs HTTP/1.1\r\n" + auth +
                   "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        case 8:
            return "GET /api/v1/jobs HTTP/1.1\r\nAuthorization: Bearer " + random_bytes(16) +
                   "\r\n\r\n";
        case 9:
            return "POST /api/v1/jobs HTTP/1.1\r\n" + auth +
                   "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n";
        case 10:
            return "POST /api/v1/jobs HTTP/1.1\r\n" + auth +
                   "Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                   "{\"spec_yaml\": 5, \"dry_run\": \"maybe\"}   ";
        default:
            return "GET /api/v1/jobs/" + std::string(1 + rng() % 4000, '/') +
                   "versions/99999999999999999999999 HTTP/1.1\r\n" + auth + "\r\n";
    }
}

int coordinator_pid(const LocalCluster& c) {
    std::ifstream in(c.run_dir() + "/coordinator.json");
    const auto j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() ? j.value("pid", 0) : 0;
}

TEST(Security, HundredsOfMalformedRequestsLeaveTheCoordinatorServing) {
    LocalCluster c("security_hostile", 1, 1);
    const CmdResult up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const int pid = coordinator_pid(c);
    ASSERT_GT(pid, 0);
    const int port = std::stoi(c.address().substr(c.address().rfind(':') + 1));

    std::mt19937 rng(17);
    std::map<std::string, int> classes;
    constexpr int kRequests = 360;
    for (int i = 0; i < kRequests; ++i) {
        Conn conn(port);
        ASSERT_TRUE(conn.ok()) << "request " << i << ": the coordinator stopped accepting";
        conn.send(hostile_request(i, rng, c.token()));
        conn.half_close();
        ++classes[status_class(conn.read_all())];
    }
    // More connections than the server takes at once: the extra ones are told 503.
    std::vector<std::unique_ptr<Conn>> idle;
    for (int i = 0; i < 300; ++i) idle.push_back(std::make_unique<Conn>(port));
    Conn extra(port);
    extra.send("GET /healthz HTTP/1.1\r\n\r\n");
    const std::string busy = extra.read_all();
    EXPECT_EQ(busy.rfind("HTTP/1.1 503", 0), 0u) << busy.substr(0, 200);
    idle.clear();

    std::string summary;
    for (const auto& [k, n] : classes) summary += fmt::format("{} {}, ", k, n);
    std::cout << "hostile requests by reply: " << summary << "\n";
    EXPECT_EQ(classes["5xx"], 0) << summary;
    EXPECT_EQ(classes["2xx"], 0) << summary;  // none of them is a valid, authorized request
    EXPECT_GE(classes["4xx"], kRequests / 2) << summary;

    EXPECT_EQ(::kill(pid, 0), 0) << "the coordinator died";
    EXPECT_TRUE(wait_until(
        [&] {
            auto h = net::http_call(c.address(), "GET", "/healthz");
            return h.ok() && h->status == 200;
        },
        std::chrono::seconds(20)));
    const CmdResult status = c.cli("status");
    EXPECT_EQ(status.code, 0) << status.out;
    EXPECT_EQ(coordinator_pid(c), pid);
}

TEST(Security, EveryEndpointButHealthzNeedsATokenOfTheRightRole) {
    LocalCluster c("security_tokens", 1, 1);
    const CmdResult up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    for (const std::string f : {"api-token", "tokens.json"}) {
        struct stat st {};
        ASSERT_EQ(::stat((c.run_dir() + "/" + f).c_str(), &st), 0) << f;
        EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
    }
    auto status_of = [&](const std::string& method, const std::string& target,
                         const std::string& token, const std::string& body = "") {
        auto r = net::http_call(c.address(), method, target, body, token);
        return r.ok() ? r->status : -1;
    };
    EXPECT_EQ(status_of("GET", "/healthz", ""), 200);
    for (const std::string t : {"/api/v1/jobs", "/api/v1/nodes", "/metrics", "/api/v1/cluster"}) {
        EXPECT_EQ(status_of("GET", t, ""), 401) << t;
        EXPECT_EQ(status_of("GET", t, "not-a-token"), 401) << t;
        EXPECT_EQ(status_of("GET", t, c.token()), 200) << t;
    }

    auto create = [&](const std::string& role) {
        const CmdResult r = c.cli("token create --role " + role);
        EXPECT_EQ(r.code, 0) << r.out;
        std::string t = r.out;
        while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
        return t;
    };
    const std::string viewer = create("viewer"), scrape = create("scrape"),
                      submitter = create("submitter");
    const std::string spec = R"({"spec_yaml": "name: d\nkind: diagnostic\n", "dry_run": true})";
    EXPECT_EQ(status_of("GET", "/api/v1/jobs", viewer), 200);
    EXPECT_EQ(status_of("POST", "/api/v1/jobs", viewer, spec), 403);
    EXPECT_EQ(status_of("GET", "/metrics", scrape), 200);
    EXPECT_EQ(status_of("GET", "/api/v1/nodes", scrape), 403);
    EXPECT_EQ(status_of("POST", "/api/v1/jobs", submitter, spec), 200);
    EXPECT_EQ(status_of("POST", "/api/v1/tokens", submitter, R"({"role":"admin"})"), 403);
    const CmdResult bad = c.cli("token create --role root");
    EXPECT_NE(bad.code, 0) << bad.out;
}

TEST(Security, SecondCoordinatorOnTheSameStateDirectoryExits2NamingTheHolder) {
    LocalCluster c("security_lock", 1, 1);
    const CmdResult up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const int pid = coordinator_pid(c);
    const CmdResult second = run_cmd(
        fmt::format("{}/bin/tandem-coordinator --cluster {} --run-dir {} coordinator.http_port={} "
                    "coordinator.agent_port={}",
                    TANDEM_BINARY_DIR, c.cluster_file(), c.run_dir(), free_port(), free_port()));
    EXPECT_EQ(second.code, 2) << second.out;
    EXPECT_NE(second.out.find(fmt::format("pid {}", pid)), std::string::npos) << second.out;
    EXPECT_NE(second.out.find("one coordinator per state directory"), std::string::npos);
    EXPECT_EQ(::kill(pid, 0), 0);
}

}  // namespace
}  // namespace tandem::testing
