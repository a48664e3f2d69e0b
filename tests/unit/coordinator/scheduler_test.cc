// place(): gang placement (all or none), pack and spread, replicas of one role on distinct nodes,
// colocate, dead and avoided nodes,
// resource accounting, and pending reasons a person can act on.
#include "coordinator/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace tandem::coord {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

NodeCapacity node(const std::string& id, ActorRole role, double cpus = 4, int64_t memory_mb = 8192,
                  int64_t gpus = 0) {
    NodeCapacity n;
    n.id = id;
    n.role = role;
    n.free_cpus = cpus;
    n.free_memory_mb = memory_mb;
    n.free_gpus = gpus;
    return n;
}
NodeCapacity trainer_node(const std::string& id, double cpus = 4, int64_t mem = 8192,
                          int64_t gpus = 0) {
    return node(id, ActorRole::kTrainer, cpus, mem, gpus);
}
NodeCapacity rollout_node(const std::string& id, double cpus = 4, int64_t mem = 8192,
                          int64_t gpus = 0) {
    return node(id, ActorRole::kRollout, cpus, mem, gpus);
}

ActorDemand demand(ActorRole role, uint32_t index, config::ActorResources r = {}) {
    ActorDemand d;
    d.actor.job = JobId(1);
    d.actor.role = role;
    d.actor.index = index;
    d.resources = r;
    return d;
}

// A job with `trainers` trainer and `rollouts` rollout actors, each needing `r`.
PlacementRequest job(int trainers, int rollouts, config::ActorResources r = {},
                     config::PlacementStrategy strategy = config::PlacementStrategy::kPack,
                     bool colocate = false) {
    PlacementRequest req;
    for (int i = 0; i < trainers; ++i) req.actors.push_back(demand(ActorRole::kTrainer, i, r));
    for (int i = 0; i < rollouts; ++i) req.actors.push_back(demand(ActorRole::kRollout, i, r));
    req.placement.strategy = strategy;
    req.placement.colocate = colocate;
    return req;
}

const config::ActorResources kOneGpu{1.0, 512, 1};

TEST(Scheduler, PlacesEveryActorOnANodeOfItsRole) {
    auto p = place(job(1, 2), {trainer_node("t0"), rollout_node("r0")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->size(), 3u);
    EXPECT_EQ(p->at("job-000001/trainer-0"), "t0");
    EXPECT_EQ(p->at("job-000001/rollout-0"), "r0");
    EXPECT_EQ(p->at("job-000001/rollout-1"), "r0");
}

TEST(Scheduler, GangIsAllOrNoneWhenTheLastActorDoesNotFit) {
    // Two of three rollout actors would fit; none is placed.
    auto p =
        place(job(1, 3, kOneGpu), {trainer_node("t0", 4, 8192, 1), rollout_node("r0", 4, 8192, 1),
                                   rollout_node("r1", 4, 8192, 1)});
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
    EXPECT_EQ(p.status().message(),
              "needs 3 rollout actors with 1 gpu, 1 cpu, 512 MiB each; the 2 rollout nodes can "
              "take 2 (r0: 0 free gpus; r1: 0 free gpus)");
}

TEST(Scheduler, GangFailsWhenTrainerDoesNotFitEvenIfRolloutsDo) {
    auto p = place(job(2, 1), {trainer_node("t0", 1), rollout_node("r0")});
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(),
                HasSubstr("needs 2 trainer actors with 1 cpu, 512 MiB each; the 1 trainer node "
                          "can take 1 (t0: 0 free cpus)"));
}

TEST(Scheduler, PackSpreadsReplicasOfOneRoleWhileNodesHaveRoom) {
    // The two rollout replicas once went both to r0 while r1 had room: losing r0 then cost the
    // job both. Replicas of one role go to distinct nodes with either strategy.
    for (auto strategy : {config::PlacementStrategy::kPack, config::PlacementStrategy::kSpread}) {
        auto p = place(job(1, 2, {}, strategy),
                       {trainer_node("t0"), rollout_node("r0"), rollout_node("r1")});
        ASSERT_TRUE(p.ok()) << p.status().to_string();
        EXPECT_EQ(p->at("job-000001/rollout-0"), "r0");
        EXPECT_EQ(p->at("job-000001/rollout-1"), "r1") << config::enum_name(strategy);
    }
}

TEST(Scheduler, PackStacksReplicasOnlyWhenEveryNodeHoldsOne) {
    auto p = place(job(0, 4), {rollout_node("r0"), rollout_node("r1"), rollout_node("r2")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    std::map<std::string, int> per_node;
    for (const auto& [actor, n] : *p) per_node[n] += 1;
    EXPECT_EQ(per_node.size(), 3u);
    EXPECT_EQ(p->at("job-000001/rollout-3"), "r0");  // then pack's order: the lowest id
}

TEST(Scheduler, ReplicasSpreadAroundTheJobsActorsAlreadyPlaced) {
    // Placing a restarted or pending replica: the node without one of the job's rollouts wins,
    // even though pack would otherwise prefer the busier node the job uses.
    PlacementRequest req = job(0, 0);
    req.actors.push_back(demand(ActorRole::kRollout, 1));
    req.fixed["job-000001/trainer-0"] = "t0";
    req.fixed["job-000001/rollout-0"] = "r0";
    NodeCapacity r0 = rollout_node("r0", 3);
    r0.actors = 1;
    auto p = place(req, {trainer_node("t0"), r0, rollout_node("r1")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-1"), "r1");
}

TEST(Scheduler, ReplicasShareANodeWhenTheOthersAreFull) {
    auto p = place(job(0, 2, {2.0, 512, 0}), {rollout_node("r0", 4), rollout_node("r1", 1)});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "r0");
    EXPECT_EQ(p->at("job-000001/rollout-1"), "r0");
}

TEST(Scheduler, SpreadPutsAJobsActorsOnDifferentNodes) {
    auto p = place(job(0, 3, {}, config::PlacementStrategy::kSpread),
                   {rollout_node("r0"), rollout_node("r1"), rollout_node("r2")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    std::set<std::string> used;
    for (const auto& [actor, n] : *p) used.insert(n);
    EXPECT_EQ(used, (std::set<std::string>{"r0", "r1", "r2"}));
}

TEST(Scheduler, SpreadDoublesUpOnlyWhenEveryNodeIsUsed) {
    auto p = place(job(0, 3, {}, config::PlacementStrategy::kSpread),
                   {rollout_node("r0"), rollout_node("r1")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    int on_r0 = 0;
    for (const auto& [actor, n] : *p) on_r0 += n == "r0";
    EXPECT_TRUE(on_r0 == 1 || on_r0 == 2);
    EXPECT_NE(p->at("job-000001/rollout-0"), p->at("job-000001/rollout-1"));
}

TEST(Scheduler, PackPrefersTheBusiestNodeSpreadTheEmptiest) {
    NodeCapacity busy = rollout_node("busy", 3);
    busy.actors = 1;  // another job's actor
    const std::vector<NodeCapacity> nodes = {rollout_node("idle"), busy};
    auto packed = place(job(0, 1), nodes);
    ASSERT_TRUE(packed.ok());
    EXPECT_EQ(packed->at("job-000001/rollout-0"), "busy");
    auto spread = place(job(0, 1, {}, config::PlacementStrategy::kSpread), nodes);
    ASSERT_TRUE(spread.ok());
    EXPECT_EQ(spread->at("job-000001/rollout-0"), "idle");
}

TEST(Scheduler, PackMovesToTheNextNodeWhenTheFirstIsFull) {
    // One replica each, then the third: r0 is full, so r1 takes it.
    auto p = place(job(0, 3, {2.0, 512, 0}), {rollout_node("r0", 2), rollout_node("r1", 4)});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "r0");
    EXPECT_EQ(p->at("job-000001/rollout-1"), "r1");
    EXPECT_EQ(p->at("job-000001/rollout-2"), "r1");
}

TEST(Scheduler, ColocatePutsRolloutsOnTheTrainersNodes) {
    const std::vector<NodeCapacity> nodes = {trainer_node("t0", 8), trainer_node("t1", 8),
                                             rollout_node("r0", 8)};
    auto apart = place(job(1, 2), nodes);
    ASSERT_TRUE(apart.ok());
    EXPECT_EQ(apart->at("job-000001/rollout-0"), "r0");

    auto together = place(job(1, 2, {}, config::PlacementStrategy::kPack, true), nodes);
    ASSERT_TRUE(together.ok()) << together.status().to_string();
    const std::string trainer = together->at("job-000001/trainer-0");
    EXPECT_EQ(together->at("job-000001/rollout-0"), trainer);
    EXPECT_EQ(together->at("job-000001/rollout-1"), trainer);
}

TEST(Scheduler, ColocateOrdersTrainersFirstWhateverTheRequestOrder) {
    PlacementRequest req;
    req.actors = {demand(ActorRole::kRollout, 0), demand(ActorRole::kTrainer, 0)};
    req.placement.colocate = true;
    auto p = place(req, {trainer_node("t0"), rollout_node("r0")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "t0");
}

TEST(Scheduler, ColocateFollowsATrainerAlreadyPlaced) {
    // A restarted rollout actor of a colocated job goes where the job's trainer runs.
    PlacementRequest req = job(0, 1, {}, config::PlacementStrategy::kPack, true);
    req.fixed = {{"job-000001/trainer-0", "t1"}};
    auto p = place(req, {trainer_node("t0"), trainer_node("t1"), rollout_node("r0")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "t1");
}

TEST(Scheduler, ColocateRefusesWhenTheTrainersNodesAreFull) {
    auto p = place(job(1, 2, {2.0, 512, 0}, config::PlacementStrategy::kPack, true),
                   {trainer_node("t0", 4), rollout_node("r0", 64)});
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().message(),
              "needs 2 rollout actors with 2 cpus, 512 MiB each on the trainer's nodes "
              "(colocate); they can take 1 (t0: 0 free cpus)");
}

TEST(Scheduler, DeadNodesAreSkipped) {
    NodeCapacity dead = rollout_node("r0", 64);
    dead.alive = false;
    auto p = place(job(0, 1), {dead, rollout_node("r1")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "r1");

    auto none = place(job(0, 1), {dead});
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.status().message(), HasSubstr("(r0 dead)"));
}

TEST(Scheduler, AvoidedNodesAreSkipped) {
    PlacementRequest req = job(0, 1);
    req.avoid = {"r0"};
    auto p = place(req, {rollout_node("r0"), rollout_node("r1")});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "r1");

    auto none = place(req, {rollout_node("r0")});
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.status().message(), HasSubstr("r0: avoided after a failure"));
}

TEST(Scheduler, CpusAreAccountedAcrossTheJobsActors) {
    EXPECT_TRUE(place(job(0, 2, {1.0, 1, 0}), {rollout_node("r0", 2)}).ok());
    auto p = place(job(0, 3, {1.0, 1, 0}), {rollout_node("r0", 2)});
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(), HasSubstr("r0: 0 free cpus"));
}

TEST(Scheduler, FractionalCpusAddUpExactly) {
    // 10 x 0.1 cpu on 1 cpu: floating-point sums must not refuse the tenth.
    EXPECT_TRUE(place(job(0, 10, {0.1, 1, 0}), {rollout_node("r0", 1.0)}).ok());
    EXPECT_FALSE(place(job(0, 11, {0.1, 1, 0}), {rollout_node("r0", 1.0)}).ok());
}

TEST(Scheduler, MemoryIsAccounted) {
    EXPECT_TRUE(place(job(0, 2, {0.0, 512, 0}), {rollout_node("r0", 8, 1024)}).ok());
    auto p = place(job(0, 3, {0.0, 512, 0}), {rollout_node("r0", 8, 1024)});
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(), HasSubstr("r0: 0 MiB free"));
    EXPECT_THAT(p.status().message(), Not(HasSubstr("free cpus")));
}

TEST(Scheduler, GpusAreAccounted) {
    EXPECT_TRUE(place(job(0, 2, {0.0, 0, 2}), {rollout_node("r0", 8, 1024, 4)}).ok());
    auto p = place(job(0, 3, {0.0, 0, 2}), {rollout_node("r0", 8, 1024, 4)});
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(), HasSubstr("needs 3 rollout actors with 2 gpus, 0 cpus"));
    EXPECT_THAT(p.status().message(), HasSubstr("r0: 0 free gpus"));
}

TEST(Scheduler, CapacityAlreadyTakenByOtherJobsCounts) {
    NodeCapacity r0 = rollout_node("r0", 4, 8192, 1);
    r0.free_gpus = 0;  // another job holds its gpu
    auto p = place(job(0, 1, kOneGpu), {r0, rollout_node("r1", 4, 8192, 1)});
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->at("job-000001/rollout-0"), "r1");
}

TEST(Scheduler, PendingReasonNamesRoleCountsAndWhatEachNodeLacks) {
    NodeCapacity r1 = rollout_node("r1", 0.5, 256, 0);
    NodeCapacity r2 = rollout_node("r2");
    r2.alive = false;
    auto p = place(job(1, 2, kOneGpu),
                   {trainer_node("t0", 4, 8192, 1), rollout_node("r0", 4, 8192, 1), r1, r2});
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().message(),
              "needs 2 rollout actors with 1 gpu, 1 cpu, 512 MiB each; the 3 rollout nodes can "
              "take 1 (r0: 0 free gpus; r1: 0 free gpus, 0.5 free cpus, 256 MiB free; r2 dead)");
}

TEST(Scheduler, PendingReasonForOneActorIsSingular) {
    auto p = place(job(0, 1, kOneGpu), {rollout_node("r0")});
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(),
                HasSubstr("needs 1 rollout actor with 1 gpu, 1 cpu, 512 MiB each; the 1 rollout "
                          "node can take 0 (r0: 0 free gpus)"));
}

TEST(Scheduler, PendingReasonSaysWhenARoleHasNoNodes) {
    auto p = place(job(1, 2), {trainer_node("t0")});
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().message(),
              "needs 2 rollout actors with 1 cpu, 512 MiB each; the cluster has no rollout nodes");
}

TEST(Scheduler, NoNodesAtAllRefusesWithoutPlacingAnything) {
    auto p = place(job(1, 1), {});
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(), HasSubstr("the cluster has no trainer nodes"));
}

}  // namespace
}  // namespace tandem::coord
