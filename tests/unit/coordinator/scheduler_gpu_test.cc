#include <gtest/gtest.h>

#include "coordinator/scheduler.h"

namespace tandem::coord {
namespace {

TEST(AssignGpus, TakesTheLowestFreeSlotsAndNeverOnesInUse) {
    auto a = assign_gpus("rollout-0", 4, {}, 2);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, (std::vector<int>{0, 1}));
    auto b = assign_gpus("rollout-0", 4, {0, 1}, 1);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*b, (std::vector<int>{2}));
    auto c = assign_gpus("rollout-0", 4, {0, 2}, 2);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(*c, (std::vector<int>{1, 3}));
}

TEST(AssignGpus, TooFewFreeNamesTheNode) {
    auto a = assign_gpus("rollout-0", 2, {1}, 2);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().message(), "node rollout-0 has 1 of its 2 gpus free; 2 needed");
}

}  // namespace
}  // namespace tandem::coord

#include "coordinator/node_registry.h"

namespace tandem::coord {
namespace {

TEST(AgentVersion, SameMajorMinorJoinsOthersAreRefusedByName) {
    EXPECT_TRUE(check_agent_version("r0", "0.1.3", "0.1.0").ok());
    EXPECT_TRUE(check_agent_version("r0", "dev", "0.1.0").ok());  // development builds
    const Status s = check_agent_version("r0", "0.2.0", "0.1.0");
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
    EXPECT_EQ(s.message(),
              "node r0: agent version 0.2.0 does not match coordinator version 0.1.0 (same "
              "major.minor needed): install the same Tandem on every host");
}

}  // namespace
}  // namespace tandem::coord
