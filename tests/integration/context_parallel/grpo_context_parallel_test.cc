// The long-context job on a real local cluster: every rollout context is longer than
// rollout.max_tokens_per_device, so the rollout actor generates with ring prefill and sharded
// decode over rollout.context_parallel ranks while the trainer trains on what it sends; and a job
// whose contexts cannot fit the ring fails with an error that names both fields.
#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

const std::string kJob = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/copy-long-context.yaml";

TEST(GrpoContextParallel, ShardedRolloutsTrainAndOversizedContextsFailNamingTheFields) {
    LocalCluster c("grpo_cp", 1);
    ASSERT_EQ(c.up().code, 0);

    auto sub =
        c.cli("job submit -f " + kJob + " algorithm.steps=8 algorithm.warm_start_steps=0 --follow");
    EXPECT_EQ(sub.code, 0) << sub.out;
    auto s = c.cli("job summary copy-long-context --output json");
    auto j = nlohmann::json::parse(s.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << s.out;
    EXPECT_EQ(j["steps"], 8);
    EXPECT_EQ(j["versions_published"], 9);

    // 2 x 30 positions cannot hold a 34-token prompt plus 33 new tokens.
    auto bad = c.cli("job submit -f " + kJob +
                     " name=copy-long-bad rollout.max_tokens_per_device=30 algorithm.steps=2 "
                     "algorithm.warm_start_steps=0 --follow");
    EXPECT_NE(bad.code, 0) << bad.out;
    EXPECT_EQ(c.job_state("copy-long-bad"), "FAILED");
    auto ev = c.cli("job events copy-long-bad");
    EXPECT_NE(ev.out.find("rollout.context_parallel (2)"), std::string::npos) << ev.out;
    EXPECT_NE(ev.out.find("rollout.max_tokens_per_device (30)"), std::string::npos) << ev.out;
}

}  // namespace
}  // namespace tandem::testing
