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
