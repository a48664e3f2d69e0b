// TrainerLoop against the fake runtime: one version per step numbered by the table, the gate
// (staleness, other fences), a fenced-off trainer, a lost rollout's share, a resumed trainer.
#include <gtest/gtest.h>

#include <deque>
#include <tuple>

#include "tests/fakes/fake_runtime.h"
#include "trainer_node/trainer_loop.h"

namespace tandem::trainer {
namespace {

using testing::FakeRuntime;

constexpr int kPrompts = 4, kGroup = 2;

class FakeLearner final : public Learner {
public:
    Result<model::TrainStats> train(std::vector<model::Trajectory>& batch) override {
        batches.push_back(batch.size());
        for (const auto& t : batch) trained_versions.push_back(t.version);
        return model::TrainStats{};
    }
    Status publish(const runtime::VersionInfo& info) override {
        published.push_back(info);
        return Status();
    }
    Status finished(const StepReport& r) override {
        reports.push_back(r);
        return Status();
    }
    std::vector<size_t> batches;
    std::vector<int64_t> trained_versions;
    std::vector<runtime::VersionInfo> published;
    std::vector<StepReport> reports;
};

// Hands out queued batches; when empty, asks `refill` (the rollouts) once per call.
class FakeInbox final : public TrajectoryInbox {
public:
    Result<std::optional<rl::TrajectoryBatch>> next(Clock::TimePoint) override {
        if (queue.empty() && refill) refill();
        if (++calls > 10000) return internal_error("the loop never had enough trajectories");
        if (queue.empty()) return std::optional<rl::TrajectoryBatch>();
        auto b = std::move(queue.front());
        queue.pop_front();
        return std::optional<rl::TrajectoryBatch>(std::move(b));
    }
    std::deque<rl::TrajectoryBatch> queue;
    std::function<void()> refill;
    int calls = 0;
};

// `prompts` groups of trajectories of `version` under `fence` from rollout `rollout`.
rl::TrajectoryBatch batch_of(int64_t version, runtime::Fence fence, int prompts, int rollout = 0) {
    rl::TrajectoryBatch b;
    b.rollout = rollout;
    b.version = version;
    b.fence = fence;
    for (int p = 0; p < prompts * kGroup; ++p) {
        model::Trajectory t;
        t.version = version;
        t.group = static_cast<uint64_t>(p / kGroup);
        b.trajectories.push_back(t);
    }
    return b;
}

ActorId trainer_id() { return {JobId(1), ActorRole::kTrainer, 0}; }
ActorId rollout_id(uint32_t i) { return {JobId(1), ActorRole::kRollout, i}; }

TrainerLoopOptions options(int64_t steps, int replicas = 1, int64_t staleness = 0) {
    TrainerLoopOptions o;
    o.steps = steps;
    o.prompts_per_step = kPrompts;
    o.group_size = kGroup;
    o.replicas = replicas;
    o.max_staleness = staleness;
    o.poll = std::chrono::milliseconds(1);
    return o;
}

struct Rig {
    explicit Rig(TrainerLoopOptions o, int64_t attempt = 1)
        : rt({}, trainer_id(), attempt), loop(rt, learner, inbox, o) {
        for (uint32_t r = 0; r < static_cast<uint32_t>(o.replicas); ++r)
            rt.set_peer(rollout_id(r), 1, "running");
    }
    // Rollouts that answer every step on the trainer's current version.
    void on_policy_rollouts() {
        inbox.refill = [this] {
            inbox.queue.push_back(batch_of(static_cast<int64_t>(loop.current().version),
                                           loop.current().fence, kPrompts));
        };
    }
    FakeRuntime rt;
    FakeLearner learner;
    FakeInbox inbox;
    TrainerLoop loop;
};

TEST(TrainerLoop, PublishesOneVersionPerStepNumberedByTheTableWithItsFence) {
    Rig rig(options(3), /*attempt=*/2);
    rig.rt.set_next_version(40);  // the table's numbering, not the step's
    rig.on_policy_rollouts();
    ASSERT_TRUE(rig.loop.run().ok());
    ASSERT_EQ(rig.learner.published.size(), 4u);  // the starting weights and one per step
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(rig.learner.published[i].version, 40 + i);
        EXPECT_EQ(rig.learner.published[i].step, static_cast<int64_t>(i));
        EXPECT_EQ(rig.learner.published[i].data_cursor, i * kPrompts);
        EXPECT_EQ(rig.learner.published[i].fence, (runtime::Fence{1, 2}));
    }
    EXPECT_EQ(rig.learner.batches, (std::vector<size_t>{8, 8, 8}));
    EXPECT_EQ(rig.learner.reports.back().step, 3);
    EXPECT_EQ(rig.loop.gate().fence(), (runtime::Fence{1, 2}));
}

TEST(TrainerLoop, DropsTrajectoriesPastTheStalenessBound) {
    Rig rig(options(3, 1, /*staleness=*/1));
    ASSERT_TRUE(rig.loop.start().ok());
    rig.on_policy_rollouts();
    ASSERT_TRUE(*rig.loop.step());
    ASSERT_TRUE(*rig.loop.step());  // versions 0, 1, 2 published; 2 is current
    const runtime::Fence f = rig.loop.current().fence;
    rig.inbox.queue.push_back(batch_of(0, f, kPrompts));  // two behind: dropped
    rig.inbox.queue.push_back(batch_of(1, f, kPrompts));  // one behind: within the bound
    ASSERT_TRUE(rig.loop.step().ok());
    EXPECT_EQ(rig.loop.gate().dropped_stale(), kPrompts * kGroup);
    EXPECT_EQ(rig.learner.trained_versions.back(), 1);
    EXPECT_EQ(rig.learner.reports.back().rollout_stats["staleness_mean"], 1.0);
}

TEST(TrainerLoop, RefusesTrajectoriesOfAnotherFence) {
    Rig rig(options(1));
    ASSERT_TRUE(rig.loop.start().ok());
    // A previous trainer run's rollouts: same version number, older fence.
    rig.inbox.queue.push_back(batch_of(0, runtime::Fence{1, 0}, kPrompts));
    rig.on_policy_rollouts();
    ASSERT_TRUE(rig.loop.step().ok());
    EXPECT_EQ(rig.loop.gate().rejected_fenced(), kPrompts * kGroup);
    EXPECT_EQ(rig.learner.batches, (std::vector<size_t>{8}));
    bool logged = false;
    for (const auto& l : rig.rt.logs())
        logged = logged || l.find("is not this trainer") != std::string::npos;
    EXPECT_TRUE(logged);
}

TEST(TrainerLoop, FencedOffTrainerStopsWithUnavailable) {
    Rig rig(options(5));
    ASSERT_TRUE(rig.loop.start().ok());
    rig.on_policy_rollouts();
    ASSERT_TRUE(*rig.loop.step());
    rig.rt.fence_off();  // a newer trainer attempt took over
    auto r = rig.loop.step();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(r.status().message().find("fenced off"), std::string::npos) << r.status().message();
    EXPECT_EQ(rig.learner.published.size(), 2u);  // nothing published under the lost fence
}

TEST(TrainerLoop, LostRolloutStepTakesTheLiveShareAndTheCursorStillMoves) {
    Rig rig(options(2, /*replicas=*/2));
    ASSERT_TRUE(rig.loop.start().ok());
    rig.rt.set_peer(rollout_id(1), 1, "failed");
    // Rollout 0 owns prompts 0 and 2 of every step (2 of 4).
    rig.inbox.refill = [&] {
        rig.inbox.queue.push_back(batch_of(static_cast<int64_t>(rig.loop.current().version),
                                           rig.loop.current().fence, kPrompts / 2));
    };
    ASSERT_TRUE(*rig.loop.step());
    EXPECT_EQ(rig.learner.batches, (std::vector<size_t>{4}));
    EXPECT_EQ(rig.learner.reports.back().rollout_stats["live_rollouts"], 1);
    EXPECT_EQ(rig.loop.current().data_cursor, uint64_t{kPrompts});
    EXPECT_EQ(rig.loop.live_share(rig.rt.view()), size_t{4});
    rig.rt.set_peer(rollout_id(1), 2, "running");  // restarted: full steps again
    EXPECT_EQ(rig.loop.live_share(rig.rt.view()), size_t{8});
}

TEST(TrainerLoop, KvStatsOfTheStepAreSummedOverRolloutsAndTheirBatches) {
    Rig rig(options(1, /*replicas=*/2));
    ASSERT_TRUE(rig.loop.start().ok());
    const auto v = static_cast<int64_t>(rig.loop.current().version);
    const auto f = rig.loop.current().fence;
    // Rollout 0 sends its share in two batches (its bytes: the larger peak), rollout 1 in one.
    for (auto [rollout, bytes, hits, ratio] :
         {std::tuple{0, 1000, 3, 0.3}, std::tuple{0, 1500, 4, 0.25}, std::tuple{1, 700, 5, 0.5}}) {
        rl::TrajectoryBatch b = batch_of(v, f, 1, rollout);
        b.kv = {bytes, 2000, 200, hits, 1, 0, 2, 10.0, ratio};
        rig.inbox.queue.push_back(b);
    }
    rig.inbox.queue.push_back(batch_of(v, f, 1, 1));  // a batch without KV figures
    ASSERT_TRUE(rig.loop.step().ok());
    ASSERT_EQ(rig.learner.reports.size(), 1u);
    const Json kv = rig.learner.reports.back().rollout_stats["kv"];
    EXPECT_EQ(kv["bytes_in_use"], 1500 + 700);
    EXPECT_EQ(kv["budget_bytes"], 2 * 2000);
    EXPECT_EQ(kv["prefix_bytes"], 2 * 200);
    EXPECT_EQ(kv["prefix_hits"], 3 + 4 + 5);
    EXPECT_EQ(kv["admission_waits"], 3);
    EXPECT_EQ(kv["compressed_blocks"], 6);
    EXPECT_EQ(kv["compression"], 0.5);
    EXPECT_EQ(kv["bytes_per_token"], 10.0);
}

TEST(TrainerLoop, ResumedTrainerContinuesFromItsCheckpointStepCursorAndVersion) {
    TrainerLoopOptions o = options(12);
    o.start_step = 10;
    o.start_cursor = 10 * kPrompts;
    o.first_version = 25;  // the checkpoint's version
    Rig rig(o, /*attempt=*/3);
    rig.on_policy_rollouts();
    ASSERT_TRUE(rig.loop.run().ok());
    ASSERT_EQ(rig.learner.published.size(), 3u);
    EXPECT_EQ(rig.learner.published[0].version, 25u);
    EXPECT_EQ(rig.learner.published[0].step, 10);
    EXPECT_EQ(rig.learner.published[2].data_cursor, uint64_t{12 * kPrompts});
}

TEST(TrainerLoop, CancelledJobEndsTheStepWithoutError) {
    Rig rig(options(5));
    ASSERT_TRUE(rig.loop.start().ok());
    rig.inbox.refill = [&] { rig.rt.cancel(); };  // no trajectories; the job is cancelled
    auto r = rig.loop.step();
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_FALSE(*r);
}

}  // namespace
}  // namespace tandem::trainer
