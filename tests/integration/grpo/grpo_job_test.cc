// The main job end to end on a real local cluster: the trainer publishes a version per step, the
// rollout nodes read it by version over UCX, and the policy learns the reverse task from random
// weights, in synchronous and in asynchronous mode.
#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

struct Figures {
    double first_reward = -1, last5_reward = -1;
    int64_t versions = 0, steps = 0;
    double max_staleness_seen = 0;
    // Truncated importance sampling (algorithm.tis_cap, default 2), over the train rows.
    int64_t tis_rows = 0, train_rows = 0;
    double tis_weight_min = 1e9, tis_weight_max = -1e9, tis_truncated_max = -1;
};

Figures run_job(LocalCluster& c, const std::string& overrides) {
    const std::string job_file = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/grpo-reverse.yaml";
    // From random weights: no warm start, so the gain is RL's alone.
    auto sub =
        c.cli("job submit -f " + job_file +
              " algorithm.warm_start_steps=0 algorithm.steps=60 algorithm.optimizer.lr=3e-3 " +
              overrides + " --follow");
    EXPECT_EQ(sub.code, 0) << sub.out;
    auto s = c.cli("job summary grpo-reverse --output json");
    auto j = nlohmann::json::parse(s.out, nullptr, false);
    Figures f;
    if (!j.is_object()) {
        ADD_FAILURE() << s.out;
        return f;
    }
    f.first_reward = j["reward_first"];
    f.last5_reward = j["reward_last5_mean"];
    f.versions = j["versions_published"];
    f.steps = j["steps"];
    auto m = c.get("/api/v1/jobs/grpo-reverse/metrics?limit=10000");
    for (const auto& row : m["metrics"]) {
        f.max_staleness_seen =
            std::max(f.max_staleness_seen, row["values"].value("weights/staleness_mean", 0.0));
        const auto& v = row["values"];
        if (!v.contains("train/policy_loss")) continue;
        ++f.train_rows;
        if (!v.contains("train/tis_weight_mean") || !v.contains("train/tis_truncated_fraction")) {
            continue;
        }
        ++f.tis_rows;
        const double w = v["train/tis_weight_mean"], tr = v["train/tis_truncated_fraction"];
        f.tis_weight_min = std::min(f.tis_weight_min, w);
        f.tis_weight_max = std::max(f.tis_weight_max, w);
        f.tis_truncated_max = std::max(f.tis_truncated_max, tr);
    }
    return f;
}

TEST(GrpoJob, SyncAndAsyncRunsLearnAboveTheRandomPolicy) {
    LocalCluster c("grpo");
    ASSERT_EQ(c.up().code, 0);

    const Figures sync = run_job(c, "async.max_staleness=0");
    EXPECT_EQ(sync.steps, 60);
    EXPECT_EQ(sync.versions, 61);             // version 0 plus one per step
    EXPECT_EQ(sync.max_staleness_seen, 0.0);  // strictly on-policy
    // Every step logs its importance weights; on-policy with an f32 cache the sampler is the
    // trainer, so the weights are 1 up to float rounding and none is truncated.
    EXPECT_GT(sync.train_rows, 0);
    EXPECT_EQ(sync.tis_rows, sync.train_rows);
    EXPECT_NEAR(sync.tis_weight_min, 1.0, 1e-3);
    EXPECT_NEAR(sync.tis_weight_max, 1.0, 1e-3);
    EXPECT_EQ(sync.tis_truncated_max, 0.0);
    // The random policy scores about 1/10 per position; learning must clearly beat it.
    EXPECT_GT(sync.last5_reward, 1.5 * sync.first_reward)
        << sync.first_reward << " -> " << sync.last5_reward;

    const Figures async = run_job(c, "async.max_staleness=2");
    EXPECT_EQ(async.steps, 60);
    EXPECT_LE(async.max_staleness_seen, 2.0);
    // Stale rollouts: the weight corrects for the older sampler, within (0, cap].
    EXPECT_EQ(async.tis_rows, async.train_rows);
    EXPECT_GT(async.tis_weight_min, 0.0);
    EXPECT_LE(async.tis_weight_max, 2.0);
    EXPECT_LE(async.tis_truncated_max, 1.0);
    EXPECT_GT(async.last5_reward, 1.5 * async.first_reward)
        << async.first_reward << " -> " << async.last5_reward;

    // Every version is in the coordinator's table with its descriptor.
    auto versions = c.get("/api/v1/jobs/grpo-reverse/versions");
    ASSERT_EQ(versions["versions"].size(), 61u);
    const auto& d = versions["versions"][60]["descriptor"];
    EXPECT_TRUE(d.contains("layout_fingerprint")) << d.dump();
    EXPECT_EQ(d["shards"].size(), 1u);
}

}  // namespace
}  // namespace tandem::testing
