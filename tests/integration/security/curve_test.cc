// CURVE on a live local cluster forced on with security.curve: on (loopback clusters run without
// it by default): `tandem up` makes the keys (0600), the real agents register and a short GRPO
// job runs with its trajectories over CURVE, while fake agents are refused: one with a key the
// coordinator does not know, one without CURVE, and one that presents another node's id with its
// own (valid) key. The refusals are counted in /metrics.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>
#include <zmq.hpp>

#include "common/net/curve.h"
#include "common/wire/messages.h"
#include "common/wire/zmq_io.h"
#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

unsigned mode_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 0;
    return st.st_mode & 0777;
}

std::string read_line(const std::string& path) {
    std::ifstream in(path);
    std::string s;
    std::getline(in, s);
    return s;
}

// A fake node agent: a DEALER that sends one register for `node_id` and returns the first answer
// within 2 s (nullopt when none comes: the handshake was refused).
std::optional<wire::Envelope> fake_register(const std::string& endpoint, const std::string& node_id,
                                            const std::string& secret,
                                            const std::optional<net::CurveKeys>& keys,
                                            const std::string& server_key) {
    zmq::context_t ctx(1);
    zmq::socket_t d(ctx, zmq::socket_type::dealer);
    d.set(zmq::sockopt::linger, 0);
    if (keys) net::set_curve_client(d, *keys, server_key);
    d.connect(endpoint);
    wire::Register m;
    m.node_id = node_id;
    m.role = "rollout";
    m.host = "127.0.0.1";
    m.secret = secret;
    m.instance = "fake";
    m.agent_version = "0.0.0-dev";
    if (!wire::send_envelope(d, wire::make_envelope(m, 1)).ok()) return std::nullopt;
    zmq::pollitem_t item{d.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 2000ms) <= 0) return std::nullopt;
    auto frames = wire::try_recv_frames(d);
    if (!frames) return std::nullopt;
    auto e = wire::decode(*frames);
    if (!e.ok()) return std::nullopt;
    return *e;
}

double metric(const LocalCluster& c, const std::string& sample) {
    auto r = net::http_call(c.address(), "GET", "/metrics", "", c.token());
    if (!r.ok()) return -1;
    const size_t at = r->body.find(sample + " ");
    if (at == std::string::npos) return -1;
    return std::stod(r->body.substr(at + sample.size() + 1));
}

TEST(Curve, ACurveClusterRunsAJobAndRefusesForeignAgents) {
    if (!net::curve_available()) GTEST_SKIP() << "this libzmq has no CURVE";
    LocalCluster c("security_curve", 1, 1);
    std::ofstream(c.cluster_file(), std::ios::app) << "security:\n  curve: on\n";
    const CmdResult up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string keys = c.run_dir() + "/keys/";
    for (const std::string name : {"coordinator", "trainer-0", "rollout-0"}) {
        EXPECT_EQ(mode_of(keys + name + ".key"), 0600u) << name;
        EXPECT_EQ(mode_of(keys + name + ".pub"), 0644u) << name;
    }
    const std::string coord_pub = read_line(keys + "coordinator.pub");
    const std::string secret = read_line(c.run_dir() + "/cluster-secret");
    std::ifstream addr_in(c.run_dir() + "/coordinator.json");
    const auto addr = nlohmann::json::parse(addr_in, nullptr, false);
    const std::string endpoint = addr.value("agent", "");
    ASSERT_FALSE(endpoint.empty());

    // A key the coordinator does not know: the handshake fails, nothing is answered.
    const auto stranger = *net::generate_curve_keys();
    EXPECT_FALSE(fake_register(endpoint, "rollout-0", secret, stranger, coord_pub));
    // No CURVE at all (the secret would travel in clear): refused the same way.
    EXPECT_FALSE(fake_register(endpoint, "rollout-0", secret, std::nullopt, ""));
    EXPECT_TRUE(wait_until(
        [&] { return metric(c, "tandem_agent_refused_total{reason=\"handshake\"}") >= 2; }, 5s));
    // trainer-0's own key presenting rollout-0's id: permission denied, naming both.
    auto trainer_keys = net::read_curve_keys(keys + "trainer-0.key");
    ASSERT_TRUE(trainer_keys.ok()) << trainer_keys.status().message();
    auto refused = fake_register(endpoint, "rollout-0", secret, *trainer_keys, coord_pub);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->type, wire::Error::kType);
    EXPECT_EQ(refused->body.value("code", ""), "permission_denied") << refused->body.dump();
    EXPECT_NE(refused->body.value("message", "").find("trainer-0"), std::string::npos)
        << refused->body.dump();
    EXPECT_EQ(metric(c, "tandem_agent_refused_total{reason=\"node_id\"}"), 1);

    // The real agents are registered and alive, and a short job runs over CURVE.
    const CmdResult nodes = c.cli("nodes");
    EXPECT_EQ(nodes.code, 0) << nodes.out;
    EXPECT_EQ(nodes.out.find("dead"), std::string::npos) << nodes.out;
    const CmdResult job =
        c.cli("job submit -f " + std::string(TANDEM_SOURCE_DIR) +
              "/configs/jobs/grpo-reverse.yaml algorithm.warm_start_steps=0 algorithm.steps=3 "
              "algorithm.prompts_per_step=4 algorithm.group_size=2 model.hidden_size=32 "
              "model.num_layers=1 model.intermediate_size=64 --follow");
    ASSERT_EQ(job.code, 0) << job.out;
    const auto detail = c.job("job-000001");
    ASSERT_TRUE(detail.is_object());
    EXPECT_EQ(detail.value("state", ""), "SUCCEEDED") << detail.dump(2);
    const auto m = detail.value("metrics", nlohmann::json::object());
    EXPECT_EQ(m.value("trajectories/refused_total", -1), 0) << m.dump();
    // The job's keys never reach the HTTP API.
    EXPECT_EQ(detail.dump().find("trajectory_curve"), std::string::npos);
}

}  // namespace
}  // namespace tandem::testing
