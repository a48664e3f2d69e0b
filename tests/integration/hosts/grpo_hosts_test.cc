// A GRPO job across a cluster in a box started with `tandem up` over ssh: the trainer on one host,
// rollouts on three others, every host on two networks with the weights plane named on the second
// (interfaces.weights: eth1, so UCX_NET_DEVICES=eth1 over UCX TCP). Mid-job, every Tandem process
// on one rollout host is killed: the job finishes on the remaining hosts. The trainer host's eth1
// byte counter shows the weights went through the named interface.
#include <gtest/gtest.h>

#include <map>

#include "tests/integration/hosts/box_cluster.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

int64_t trainer_step(const BoxCluster& c, const std::string& job) {
    const auto j = c.get("/api/v1/jobs/" + job);
    if (!j.is_object()) return -1;
    for (const auto& a : j.value("actors", Json::array())) {
        if (a.value("actor", "").find("/trainer-") == std::string::npos) continue;
        const Json p = a.value("progress", Json::object());
        if (p.is_object() && p.contains("step")) return p["step"].get<int64_t>();
    }
    return -1;
}

TEST(GrpoAcrossHosts, WeightsUseTheNamedInterfaceAndTheJobSurvivesALostHost) {
    auto box = ClusterInABox::create({.hosts = 4, .networks = 2});
    if (!box.ok()) GTEST_SKIP() << box.status().message();
    const auto& b = **box;
    const std::string weights_on_eth1 = ", interfaces: {weights: eth1}";
    BoxCluster c(b, "grpo-hosts",
                 {{"trainer-0", "trainer", 0, "", weights_on_eth1},
                  {"rollout-1", "rollout", 1, "", weights_on_eth1},
                  {"rollout-2", "rollout", 2, "", weights_on_eth1},
                  {"rollout-3", "rollout", 3, "", weights_on_eth1}});
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const uint64_t eth0_before = b.interface_bytes(0, 0), eth1_before = b.interface_bytes(0, 1);

    const int kSteps = 40;
    auto sub = c.cli(fmt::format(
        "job submit -f {}/configs/jobs/grpo-reverse.yaml algorithm.warm_start_steps=0 "
        "algorithm.steps={} algorithm.prompts_per_step=8 algorithm.group_size=4 "
        "model.hidden_size=64 model.num_layers=2 max_actor_restarts=2 async.max_staleness=1 "
        "placement.strategy=spread",
        TANDEM_SOURCE_DIR, kSteps));
    ASSERT_EQ(sub.code, 0) << sub.out;
    const std::string job = "job-000001";
    ASSERT_TRUE(wait_until([&] { return trainer_step(c, job) >= 5; }, 60s))
        << c.get("/api/v1/jobs/" + job).dump(2) << c.cli("job logs " + job).out;

    // The host of the first rollout actor loses every Tandem process (agent and actor).
    std::string victim, victim_actor;
    const Json running = c.get("/api/v1/jobs/" + job);
    for (const auto& a : running["actors"]) {
        const std::string name = a.value("actor", "");
        if (victim.empty() && name.find("/rollout-") != std::string::npos) {
            victim = a.value("node", "");
            victim_actor = name;
        }
    }
    ASSERT_FALSE(victim.empty()) << running.dump(2);
    const int victim_host = victim.back() - '0';
    const int64_t killed_at = trainer_step(c, job);
    b.kill_processes(victim_host);
    ASSERT_TRUE(wait_until(
        [&] { return c.get("/api/v1/jobs/" + job).value("state", "") == "SUCCEEDED"; }, 90s))
        << c.get("/api/v1/jobs/" + job).dump(2) << c.cli("job events " + job).out;
    EXPECT_LT(killed_at, kSteps) << "the job ended before the kill";
    const Json done = c.get("/api/v1/jobs/" + job);
    for (const auto& a : done["actors"]) {
        if (a.value("actor", "") == victim_actor) {
            EXPECT_NE(a.value("node", ""), victim);
        }
    }

    // Weights left the trainer host through eth1: nothing else uses that network, and eth0 (control
    // and trajectories) carried far less. A version of this policy is about 370 KB.
    const uint64_t eth1 = b.interface_bytes(0, 1) - eth1_before;
    const uint64_t eth0 = b.interface_bytes(0, 0) - eth0_before;
    EXPECT_GT(eth1, uint64_t{kSteps} * 370'000) << "eth1 " << eth1 << " B, eth0 " << eth0 << " B";
    EXPECT_GT(eth1, 10 * eth0) << "eth1 " << eth1 << " B, eth0 " << eth0 << " B";
}

}  // namespace
}  // namespace tandem::testing
