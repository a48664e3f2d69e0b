// RolloutLoop against the fake runtime: follows the job's fence, stamps batches with version and
// fence, blocks on the staleness bound until the trainer publishes, resyncs on a restarted
// trainer, ignores an old fence's versions, retries after a failed fetch, ends the step on a failed
// swap, ends when cancelled.
#include <gtest/gtest.h>

#include "rollout_node/rollout_loop.h"
#include "tests/fakes/fake_runtime.h"

namespace tandem::rollout {
namespace {

using testing::FakeRuntime;

class FakeWeights final : public Weights {
public:
    void start_fetch(const runtime::PublishedVersion& v) override {
        fetching_ = v.info.version;
        started.push_back(v.info.version);
    }
    bool fetching() const override { return fetching_.has_value(); }
    std::optional<Status> wait_fetch(Clock::TimePoint) override {
        if (!fetching_) return std::nullopt;
        Status s = fail_next ? unavailable("publisher gone") : Status();
        if (s.ok()) fetched_ = fetching_;
        fail_next = false;
        fetching_.reset();
        return s;
    }
    Status swap() override {
        if (fail_swap) return internal_error("the device could not take version in");
        current_ = fetched_;
        return Status();
    }
    std::optional<Version> current() const override { return current_; }
    double last_fetch_s() const override { return 0.001; }

    std::vector<Version> started;
    bool fail_next = false;
    bool fail_swap = false;

private:
    std::optional<Version> fetching_, fetched_, current_;
};

class FakeGenerator final : public Generator {
public:
    Result<rl::TrajectoryBatch> generate(int64_t batch, uint64_t first_cursor) override {
        cursors.push_back(first_cursor);
        rl::TrajectoryBatch b;
        b.batch = batch;
        b.trajectories.resize(2);
        return b;
    }
    std::vector<uint64_t> cursors;
};

class FakeOutbox final : public TrajectoryOutbox {
public:
    Status connect(const std::string& endpoint) override {
        endpoints.push_back(endpoint);
        return Status();
    }
    Status send(const rl::TrajectoryBatch& b) override {
        sent.push_back(b);
        return Status();
    }
    std::vector<std::string> endpoints;
    std::vector<rl::TrajectoryBatch> sent;
};

constexpr int kPrompts = 4;
const ActorId kTrainer{JobId(1), ActorRole::kTrainer, 0};

struct Rig {
    explicit Rig(int64_t staleness)
        : rt({}, ActorId{JobId(1), ActorRole::kRollout, 0}),
          loop(rt, weights, gen, out, options(staleness)) {}
    static RolloutLoopOptions options(int64_t staleness) {
        RolloutLoopOptions o;
        o.max_staleness = staleness;
        o.prompts_per_step = kPrompts;
        o.poll = std::chrono::milliseconds(1);
        o.endpoint_timeout = std::chrono::seconds(5);
        return o;
    }
    // A trainer run of `fence` with its socket and version `v` (after `step` steps) published.
    void trainer_run(runtime::Fence fence, int64_t attempt, const std::string& endpoint, Version v,
                     int64_t step) {
        rt.set_fence(fence);
        rt.set_peer(kTrainer, attempt, "running", {{"trajectories", endpoint}});
        rt.publish(v, fence, step, static_cast<uint64_t>(step) * kPrompts);
    }
    FakeRuntime rt;
    FakeWeights weights;
    FakeGenerator gen;
    FakeOutbox out;
    RolloutLoop loop;
};

TEST(RolloutLoop, FollowsTheFenceAndStampsBatchesWithVersionAndFence) {
    Rig rig(/*staleness=*/1);
    rig.trainer_run({1, 1}, 1, "tcp://t:1", 7, 0);
    ASSERT_TRUE(*rig.loop.step());
    ASSERT_EQ(rig.out.sent.size(), 1u);
    EXPECT_EQ(rig.out.endpoints, (std::vector<std::string>{"tcp://t:1"}));
    const auto& b = rig.out.sent[0];
    EXPECT_EQ(b.batch, 0);
    EXPECT_EQ(b.version, 7);
    EXPECT_EQ(b.fence, (runtime::Fence{1, 1}));
    for (const auto& t : b.trajectories) EXPECT_EQ(t.version, 7);
    // Staleness 1: batch 1 may still use step 0's weights, without waiting.
    ASSERT_TRUE(*rig.loop.step());
    EXPECT_EQ(rig.out.sent[1].version, 7);
    EXPECT_EQ(rig.gen.cursors, (std::vector<uint64_t>{0, kPrompts}));
}

TEST(RolloutLoop, StalenessBoundWaitsOnTheViewUntilTheTrainerPublishes) {
    Rig rig(/*staleness=*/0);
    rig.trainer_run({1, 1}, 1, "tcp://t:1", 0, 0);
    ASSERT_TRUE(*rig.loop.step());  // batch 0 on version 0
    // Batch 1 needs step 1's weights: the loop waits on the view; the trainer publishes then.
    int published = 0;
    rig.rt.on_wait = [&] {
        if (published++ == 0) rig.rt.publish(1, {1, 1}, 1, kPrompts);
    };
    ASSERT_TRUE(*rig.loop.step());
    EXPECT_GE(rig.rt.waits(), 1);
    EXPECT_EQ(rig.out.sent[1].version, 1);
    EXPECT_GT(rig.out.sent[1].trainer_wait_s, 0.0);
    EXPECT_EQ(rig.weights.started, (std::vector<Version>{0, 1}));
}

TEST(RolloutLoop, RestartedTrainerMovesItToTheNewFenceSocketAndStep) {
    Rig rig(/*staleness=*/1);
    rig.trainer_run({1, 1}, 1, "tcp://t:1", 0, 0);
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(*rig.loop.step());  // batches 0 and 1 on version 0
    // The trainer restarted from its checkpoint at step 1: version 12 of fence 1.2.
    rig.trainer_run({1, 2}, 2, "tcp://t:2", 12, 1);
    ASSERT_TRUE(*rig.loop.step());
    EXPECT_EQ(rig.out.endpoints, (std::vector<std::string>{"tcp://t:1", "tcp://t:2"}));
    const auto& b = rig.out.sent.back();
    EXPECT_EQ(b.batch, 1);  // the batch counter restarts at the run's step
    EXPECT_EQ(b.version, 12);
    EXPECT_EQ(b.fence, (runtime::Fence{1, 2}));
    EXPECT_EQ(rig.gen.cursors.back(), uint64_t{kPrompts});
}

TEST(RolloutLoop, VersionsOfAnOlderFenceAreNotFetched) {
    Rig rig(/*staleness=*/0);
    rig.rt.set_fence({1, 2});
    rig.rt.set_peer(kTrainer, 2, "running", {{"trajectories", "tcp://t:2"}});
    rig.rt.publish(5, {1, 1}, 5);  // the gone trainer's last version is still the newest
    int calls = 0;
    rig.rt.on_wait = [&] {
        if (++calls == 3) rig.rt.publish(6, {1, 2}, 3);
    };
    ASSERT_TRUE(*rig.loop.step());
    EXPECT_EQ(rig.weights.started, (std::vector<Version>{6}));
    EXPECT_EQ(rig.out.sent[0].version, 6);
    EXPECT_EQ(rig.out.sent[0].batch, 3);
}

TEST(RolloutLoop, FailedFetchIsLoggedAndANewerVersionIsFetched) {
    Rig rig(/*staleness=*/0);
    rig.weights.fail_next = true;
    rig.trainer_run({1, 1}, 1, "tcp://t:1", 0, 0);
    int calls = 0;
    rig.rt.on_wait = [&] {
        if (++calls == 2) rig.rt.publish(1, {1, 1}, 1, kPrompts);
    };
    ASSERT_TRUE(*rig.loop.step());
    EXPECT_EQ(rig.weights.started, (std::vector<Version>{0, 1}));
    EXPECT_EQ(rig.out.sent[0].version, 1);
    bool logged = false;
    for (const auto& l : rig.rt.logs())
        logged = logged || l.find("fetching version 0 failed") != std::string::npos;
    EXPECT_TRUE(logged);
}

TEST(RolloutLoop, AFailedSwapEndsTheStepWithItsError) {
    Rig rig(/*staleness=*/0);
    rig.weights.fail_swap = true;  // e.g. the device could not convert the version
    rig.trainer_run({1, 1}, 1, "tcp://t:1", 0, 0);
    auto r = rig.loop.step();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("could not take version in"), std::string::npos)
        << r.status().to_string();
    EXPECT_TRUE(rig.out.sent.empty());
}

TEST(RolloutLoop, CancelledJobEndsTheLoop) {
    Rig rig(/*staleness=*/0);
    rig.trainer_run({1, 1}, 1, "tcp://t:1", 0, 0);
    ASSERT_TRUE(*rig.loop.step());
    rig.rt.cancel();
    auto r = rig.loop.step();
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(*r);
    EXPECT_TRUE(rig.loop.run().ok());
}

}  // namespace
}  // namespace tandem::rollout
