// CURVE on the agent and trajectory planes (common/net/curve.h, trajectory_curve.h,
// coordinator/agent_security.h): Z85 checks and the cluster file's security fields, key files and
// their modes, derived keys, the ZAP handler's answers, and live sockets: an allowed key gets its
// name as User-Id, an unknown key or a peer without CURVE fails the handshake and is counted.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "common/config/loader.h"
#include "common/net/curve.h"
#include "common/net/trajectory_curve.h"
#include "common/wire/messages.h"
#include "coordinator/agent_security.h"

namespace tandem::net {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

bool wait_for(const std::function<bool()>& ok, std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < deadline) {
        if (ok()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return ok();
}

class TempDir {
public:
    TempDir() {
        path_ = fs::temp_directory_path() / fmt::format("tandem_curve_{}_{}", ::getpid(), n_++);
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~TempDir() { fs::remove_all(path_); }
    std::string str() const { return path_.string(); }
    std::string write(const std::string& name, const std::string& text) const {
        const std::string p = (path_ / name).string();
        std::ofstream(p) << text;
        return p;
    }

private:
    static inline int n_ = 0;
    fs::path path_;
};

unsigned mode_of(const std::string& path) {
    struct stat st {};
    ::stat(path.c_str(), &st);
    return st.st_mode & 0777;
}

TEST(CurveKeys, Z85KeysAreCheckedForLengthAlphabetAndRange) {
    auto k = generate_curve_keys();
    ASSERT_TRUE(k.ok()) << k.status().message();
    EXPECT_TRUE(config::validate_z85_key(k->public_z85).ok());
    EXPECT_TRUE(config::validate_z85_key(k->secret_z85).ok());
    const Status short_key = config::validate_z85_key(k->public_z85.substr(0, 39));
    EXPECT_NE(short_key.message().find("got 39 characters"), std::string::npos)
        << short_key.message();
    std::string bad = k->public_z85;
    bad[7] = '~';
    const Status bad_char = config::validate_z85_key(bad);
    EXPECT_NE(bad_char.message().find("character 8 ('~')"), std::string::npos)
        << bad_char.message();
    // "#####" is 84 * (85^4 + ... + 1), more than 32 bits.
    const Status overflow = config::validate_z85_key(std::string(40, '#'));
    EXPECT_NE(overflow.message().find("characters 1-5"), std::string::npos) << overflow.message();
}

TEST(CurveKeys, ClusterFileErrorsNameTheFileAndTheField) {
    TempDir dir;
    const std::string good = generate_curve_keys()->public_z85;
    const std::string nodes =
        "nodes:\n"
        "  - {id: t0, role: trainer, host: 127.0.0.1}\n"
        "  - {id: r0, role: rollout, host: 127.0.0.1, public_key: \"" +
        good.substr(0, 30) + "\"}\n";
    const std::string bad_key = dir.write("bad_key.yaml", nodes);
    auto r = config::load_cluster_file(bad_key);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("bad_key.yaml"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("nodes[1].public_key"), std::string::npos)
        << r.status().message();

    const std::string coord =
        dir.write("coord.yaml", "coordinator: {public_key: \"" + std::string(40, '~') + "\"}\n" +
                                    "nodes:\n  - {id: t0, role: trainer}\n");
    r = config::load_cluster_file(coord);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("coordinator.public_key"), std::string::npos)
        << r.status().message();

    // curve: off is refused once an address is not loopback, naming it.
    const std::string remote =
        dir.write("remote.yaml",
                  "security: {curve: off}\nnodes:\n  - {id: t0, role: trainer, host: 10.1.2.3}\n");
    r = config::load_cluster_file(remote);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("security"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("10.1.2.3"), std::string::npos) << r.status().message();
}

TEST(CurveKeys, CurveIsOnByDefaultAsSoonAsAnAddressIsNotLoopback) {
    TempDir dir;
    auto load = [&](const std::string& text) {
        auto r = config::load_cluster_file(dir.write("c.yaml", text));
        EXPECT_TRUE(r.ok()) << r.status().message();
        return r.ok() ? r->curve_enabled() : false;
    };
    const std::string local = "nodes:\n  - {id: t0, role: trainer, host: 127.0.0.1}\n";
    EXPECT_FALSE(load(local));
    EXPECT_TRUE(load("security: {curve: on}\n" + local));
    EXPECT_FALSE(load("security: {curve: off}\n" + local));
    EXPECT_TRUE(load("nodes:\n  - {id: t0, role: trainer, host: 10.0.0.2}\n"));
    EXPECT_TRUE(load("coordinator: {host: 192.168.1.5}\n" + local));
    EXPECT_TRUE(load(
        "nodes:\n  - {id: t0, role: trainer, host: 127.0.0.1, advertise_address: 10.0.0.9}\n"));
}

TEST(CurveKeys, KeyFilesAreWrittenOwnerOnlyAndReadBack) {
    TempDir dir;
    auto k = generate_curve_keys();
    ASSERT_TRUE(k.ok());
    ASSERT_TRUE(write_curve_keys(dir.str(), "rollout-0", *k).ok());
    const std::string key_path = curve_key_path(dir.str(), "rollout-0");
    EXPECT_EQ(mode_of(key_path), 0600u);
    EXPECT_EQ(mode_of(dir.str() + "/keys"), 0700u);
    auto back = read_curve_keys(key_path);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(back->public_z85, k->public_z85);  // derived from the secret
    EXPECT_EQ(back->secret_z85, k->secret_z85);
    auto pub = read_curve_public(curve_public_path(dir.str(), "rollout-0"));
    ASSERT_TRUE(pub.ok());
    EXPECT_EQ(*pub, k->public_z85);

    ::chmod(key_path.c_str(), 0644);
    auto open_file = read_curve_keys(key_path);
    ASSERT_FALSE(open_file.ok());
    EXPECT_NE(open_file.status().message().find(key_path), std::string::npos);
    EXPECT_NE(open_file.status().message().find("644"), std::string::npos)
        << open_file.status().message();

    const std::string garbage = dir.write("keys/bad.key", "not a key\n");
    ::chmod(garbage.c_str(), 0600);
    auto bad = read_curve_keys(garbage);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find(garbage), std::string::npos);
    auto missing = read_curve_keys(dir.str() + "/keys/none.key");
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(CurveKeys, DerivedKeysDependOnRootAndLabelOnly) {
    const std::string root = generate_curve_keys()->secret_z85;
    const std::string other = generate_curve_keys()->secret_z85;
    auto a = derive_curve_keys(root, "label a");
    auto a2 = derive_curve_keys(root, "label a");
    auto b = derive_curve_keys(root, "label b");
    auto c = derive_curve_keys(other, "label a");
    ASSERT_TRUE(a.ok() && a2.ok() && b.ok() && c.ok());
    EXPECT_EQ(a->secret_z85, a2->secret_z85);
    EXPECT_EQ(a->public_z85, a2->public_z85);
    EXPECT_NE(a->secret_z85, b->secret_z85);
    EXPECT_NE(a->secret_z85, c->secret_z85);
    EXPECT_EQ(curve_keys_from_secret(a->secret_z85)->public_z85, a->public_z85);
}

std::vector<std::string> zap_request(const std::string& domain, const std::string& mechanism,
                                     const std::string& public_z85) {
    std::vector<std::string> r = {"1.0", "7", domain, "10.0.0.1", "", mechanism};
    if (!public_z85.empty()) {
        std::string raw(32, '\0');
        zmq_z85_decode(reinterpret_cast<uint8_t*>(raw.data()), public_z85.c_str());
        r.push_back(raw);
    }
    return r;
}

TEST(ZapHandler, AnswersKnownKeysWithTheirNameAndRefusesOthers) {
    if (!curve_available()) GTEST_SKIP() << "this libzmq has no CURVE";
    zmq::context_t ctx(1);
    auto zap = ZapHandler::create(ctx, "test");
    ASSERT_TRUE(zap.ok()) << zap.status().message();
    const auto known = *generate_curve_keys();
    const auto stranger = *generate_curve_keys();
    (*zap)->allow("agents", known.public_z85, "rollout-3");

    auto ok = (*zap)->answer(zap_request("agents", "CURVE", known.public_z85));
    ASSERT_EQ(ok.size(), 6u);
    EXPECT_EQ(ok[1], "7");
    EXPECT_EQ(ok[2], "200");
    EXPECT_EQ(ok[4], "rollout-3");
    EXPECT_EQ((*zap)->answer(zap_request("agents", "CURVE", stranger.public_z85))[2], "400");
    // The key is known in another domain only.
    EXPECT_EQ((*zap)->answer(zap_request("trajectories", "CURVE", known.public_z85))[2], "400");
    EXPECT_EQ((*zap)->answer(zap_request("agents", "NULL", ""))[2], "400");
    EXPECT_EQ((*zap)->answer({"0.9", "1"})[2], "500");
    EXPECT_EQ((*zap)->refused_keys(), 3u);
}

// A CURVE ROUTER with a ZAP handler, as the coordinator runs it.
struct Server {
    zmq::context_t ctx{1};
    CurveKeys keys = *generate_curve_keys();
    std::unique_ptr<ZapHandler> zap;
    zmq::socket_t router{ctx, zmq::socket_type::router};
    std::string endpoint;

    Server() {
        zap = std::move(*ZapHandler::create(ctx, "test"));
        router.set(zmq::sockopt::linger, 0);
        set_curve_server(router, keys, "agents");
        EXPECT_TRUE(zap->watch(router, "test ROUTER").ok());
        router.bind("tcp://127.0.0.1:*");
        endpoint = router.get(zmq::sockopt::last_endpoint);
        zap->start();
    }
    ~Server() { zap.reset(); }
    // The User-Id of the next message within 3 s, or nullopt.
    std::optional<std::string> receive() {
        zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, std::chrono::milliseconds(3000)) <= 0) return std::nullopt;
        zmq::message_t id, body;
        (void)router.recv(id);
        (void)router.recv(body);
        const char* u = zmq_msg_gets(body.handle(), "User-Id");
        return std::string(u ? u : "");
    }
};

TEST(ZapHandler, LiveSocketsGetTheKeysNameAndStrangersAreCounted) {
    if (!curve_available()) GTEST_SKIP() << "this libzmq has no CURVE";
    Server server;
    const auto node = *generate_curve_keys();
    server.zap->allow("agents", node.public_z85, "rollout-1");
    zmq::context_t cctx(1);
    {
        zmq::socket_t d(cctx, zmq::socket_type::dealer);
        d.set(zmq::sockopt::linger, 0);
        set_curve_client(d, node, server.keys.public_z85);
        d.connect(server.endpoint);
        d.send(zmq::str_buffer("hello"), zmq::send_flags::none);
        EXPECT_EQ(server.receive(), std::optional<std::string>("rollout-1"));
    }
    {
        zmq::socket_t d(cctx, zmq::socket_type::dealer);
        d.set(zmq::sockopt::linger, 0);
        set_curve_client(d, *generate_curve_keys(), server.keys.public_z85);
        d.connect(server.endpoint);
        d.send(zmq::str_buffer("let me in"), zmq::send_flags::dontwait);
        EXPECT_TRUE(wait_for([&] { return server.zap->failed_handshakes() >= 1; },
                             std::chrono::seconds(5)));
        EXPECT_GE(server.zap->refused_keys(), 1u);
    }
    {
        const uint64_t before = server.zap->failed_handshakes();
        zmq::socket_t d(cctx, zmq::socket_type::dealer);  // no CURVE at all
        d.set(zmq::sockopt::linger, 0);
        d.connect(server.endpoint);
        d.send(zmq::str_buffer("plain"), zmq::send_flags::dontwait);
        EXPECT_TRUE(wait_for([&] { return server.zap->failed_handshakes() > before; },
                             std::chrono::seconds(5)));
    }
    zmq::pollitem_t item{server.router.handle(), 0, ZMQ_POLLIN, 0};
    EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(100)), 0)
        << "a refused peer got through";
}

std::vector<std::string> frames_of(const wire::Envelope& e) { return wire::encode(e); }

TEST(AgentIdentity, ANodeIdOtherThanTheKeysIsRefused) {
    coord::AgentIdentity identity;
    wire::Register reg;
    reg.node_id = "rollout-0";
    reg.role = "rollout";
    const auto frames = frames_of(wire::make_envelope(reg, 1));
    EXPECT_TRUE(identity.check("rollout-0", frames).ok());
    const Status s = identity.check("rollout-1", frames);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
    EXPECT_NE(s.message().find("rollout-0"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("rollout-1"), std::string::npos) << s.message();
    wire::Heartbeat hb;
    hb.node_id = "trainer-0";
    EXPECT_FALSE(identity.check("rollout-1", frames_of(wire::make_envelope(hb, 2))).ok());
    // Messages that name no node are bound to the registered connection instead.
    wire::LogLines logs;
    logs.job = "job-000001";
    EXPECT_TRUE(identity.check("rollout-1", frames_of(wire::make_envelope(logs, 3))).ok());
    EXPECT_EQ(identity.refused(), 2u);
}

class RecordingLink final : public coord::AgentLink {
public:
    Status send(const std::string&, const wire::Envelope& e) override {
        sent.push_back(e);
        return Status();
    }
    std::vector<wire::Envelope> sent;
};

TEST(TrajectoryCurve, TheTrainerAcceptsExactlyItsJobsRolloutKeys) {
    const std::string root = generate_curve_keys()->secret_z85;
    const Json placement = {{"actors",
                             {{"job-000004/trainer-0", {{"node", "t"}}},
                              {"job-000004/rollout-0", {{"node", "a"}}},
                              {"job-000004/rollout-1", {{"node", "b"}}}}}};
    RecordingLink inner;
    coord::TrajectoryKeyStamper stamper(inner, root);
    auto start = [&](const std::string& actor) {
        wire::StartActor m;
        m.actor = actor;
        m.job = "job-000004";
        m.attempt = 1;
        m.placement = placement;
        EXPECT_TRUE(stamper.send("n", wire::make_envelope(m, 1)).ok());
        return inner.sent.back().body["placement"]["trajectory_curve"];
    };
    const Json trainer = start("job-000004/trainer-0");
    const Json r0 = start("job-000004/rollout-0");
    const Json r1 = start("job-000004/rollout-1");
    wire::StopActor stop{"job-000004/rollout-1", "test"};
    ASSERT_TRUE(stamper.send("n", wire::make_envelope(stop, 2)).ok());
    EXPECT_FALSE(inner.sent.back().body.contains("placement"));

    const auto server = *curve_keys_from_secret(trainer["secret_key"]);
    EXPECT_EQ(r0["server_key"], server.public_z85);
    EXPECT_EQ(r1["server_key"], server.public_z85);
    const Json peers = trainer["peers"];
    ASSERT_EQ(peers.size(), 2u);
    EXPECT_EQ(peers[curve_keys_from_secret(r0["secret_key"])->public_z85], "job-000004/rollout-0");
    EXPECT_EQ(peers[curve_keys_from_secret(r1["secret_key"])->public_z85], "job-000004/rollout-1");
    // Another job's rollout of the same index has another key.
    auto other = trajectory_curve_for(root, "job-000005/rollout-0", placement);
    ASSERT_TRUE(other.ok());
    EXPECT_NE((*other)["secret_key"], r0["secret_key"]);

    // Live: the rollout's PUSH gets through; a stranger's PUSH is refused and counted.
    if (!curve_available()) GTEST_SKIP() << "this libzmq has no CURVE";
    zmq::context_t ctx(1);
    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    auto zap = secure_trajectory_server(ctx, pull, {{"trajectory_curve", trainer}});
    ASSERT_TRUE(zap.ok()) << zap.status().message();
    ASSERT_TRUE(*zap);
    pull.bind("tcp://127.0.0.1:*");
    const std::string endpoint = pull.get(zmq::sockopt::last_endpoint);
    zmq::context_t cctx(1);
    zmq::socket_t stranger(cctx, zmq::socket_type::push);
    stranger.set(zmq::sockopt::linger, 0);
    Json forged = r1;
    forged["secret_key"] = generate_curve_keys()->secret_z85;
    ASSERT_TRUE(secure_trajectory_client(stranger, {{"trajectory_curve", forged}}).ok());
    stranger.connect(endpoint);
    stranger.send(zmq::str_buffer("forged"), zmq::send_flags::dontwait);
    zmq::socket_t rollout(cctx, zmq::socket_type::push);
    rollout.set(zmq::sockopt::linger, 0);
    ASSERT_TRUE(secure_trajectory_client(rollout, {{"trajectory_curve", r0}}).ok());
    rollout.connect(endpoint);
    rollout.send(zmq::str_buffer("batch"), zmq::send_flags::none);
    zmq::pollitem_t item{pull.handle(), 0, ZMQ_POLLIN, 0};
    ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(3000)), 1);
    zmq::message_t msg;
    ASSERT_TRUE(pull.recv(msg));
    EXPECT_EQ(msg.to_string(), "batch");
    EXPECT_TRUE(
        wait_for([&] { return (*zap)->failed_handshakes() >= 1; }, std::chrono::seconds(5)));
    EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(100)), 0) << "the forged batch arrived";
    // No "trajectory_curve": the sockets stay plain.
    zmq::socket_t plain(ctx, zmq::socket_type::pull);
    auto none = secure_trajectory_server(ctx, plain, Json::object());
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(*none);
}

}  // namespace
}  // namespace tandem::net
