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

TEST(AssignGpus, SharingActorsFillOneGpuBeforeTheNext) {
    // Two actors sharing 2 ways: the second goes where the first is.
    auto a = assign_gpus("rollout-0", 2, std::map<int, double>{}, 1, 2);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, (std::vector<int>{0}));
    auto b = assign_gpus("rollout-0", 2, std::map<int, double>{{0, 0.5}}, 1, 2);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*b, (std::vector<int>{0}));
    // The third takes the other GPU; a full one is never given.
    auto c = assign_gpus("rollout-0", 2, std::map<int, double>{{0, 1.0}}, 1, 2);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(*c, (std::vector<int>{1}));
    // A half-used GPU is preferred over a free lower one.
    auto d = assign_gpus("rollout-0", 2, std::map<int, double>{{1, 0.5}}, 1, 2);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, (std::vector<int>{1}));
}

TEST(AssignGpus, AnExclusiveActorNeverSharesAndASharingOneNeverJoinsAnExclusiveOne) {
    auto a = assign_gpus("rollout-0", 2, std::map<int, double>{{0, 0.5}}, 1, 1);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, (std::vector<int>{1}));  // not beside the sharing actor on 0
    auto b = assign_gpus("rollout-0", 2, std::map<int, double>{{0, 0.5}, {1, 0.25}}, 1, 1);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().message(), "node rollout-0 has 0 of its 2 gpus free; 1 needed");
    auto c = assign_gpus("rollout-0", 1, std::map<int, double>{{0, 1.0}}, 1, 4);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().message(),
              "node rollout-0 has 0 of its 1 gpus with room for an actor sharing one 4 ways; 1 "
              "needed");
}

NodeCapacity gpu_node(const std::string& id, double gpus) {
    NodeCapacity n;
    n.id = id;
    n.role = ActorRole::kRollout;
    n.free_cpus = 16;
    n.free_memory_mb = 1 << 20;
    n.free_gpus = gpus;
    return n;
}

TEST(PlaceWithSharedGpus, FourActorsSharingTwoWaysFitOnTwoGpus) {
    PlacementRequest req;
    config::ActorResources r;
    r.cpus = 1;
    r.gpus = 1;
    r.actors_per_gpu = 2;
    for (uint32_t i = 0; i < 4; ++i)
        req.actors.push_back({ActorId{JobId(1), ActorRole::kRollout, i}, r});
    auto p = place(req, {gpu_node("r0", 2)});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->size(), 4u);
    // Without sharing they do not.
    for (auto& d : req.actors) d.resources.actors_per_gpu = 1;
    auto q = place(req, {gpu_node("r0", 2)});
    ASSERT_FALSE(q.ok());
    EXPECT_NE(q.status().message().find("r0: 0 free gpus"), std::string::npos)
        << q.status().message();
    // Half a GPU left takes one more sharing actor and no exclusive one.
    req.actors.resize(1);
    EXPECT_FALSE(place(req, {gpu_node("r0", 0.5)}).ok());
    req.actors[0].resources.actors_per_gpu = 2;
    EXPECT_TRUE(place(req, {gpu_node("r0", 0.5)}).ok());
}

}  // namespace
}  // namespace tandem::coord
