// The trainer's gate on trajectories: only versions it published itself, within the staleness
// bound of its current version; the rest is dropped (stale) or rejected (unknown) and counted.
#include <gtest/gtest.h>

#include "common/rl/grpo_protocol.h"
#include "common/rl/trajectory_gate.h"

namespace tandem::rl {
namespace {

using Verdict = TrajectoryGate::Verdict;

TEST(TrajectoryGate, DropsTrajectoriesOlderThanTheBoundAndCountsThem) {
    TrajectoryGate gate(/*max_staleness=*/2);
    for (int64_t v = 0; v <= 5; ++v) ASSERT_TRUE(gate.published(v).ok());
    EXPECT_EQ(gate.current(), 5);
    EXPECT_EQ(gate.check(5), Verdict::kAccept);  // on-policy
    EXPECT_EQ(gate.check(3), Verdict::kAccept);  // exactly at the bound
    EXPECT_EQ(gate.check(2), Verdict::kStale);   // one past it
    EXPECT_EQ(gate.check(0), Verdict::kStale);
    EXPECT_EQ(gate.accepted(), 2);
    EXPECT_EQ(gate.dropped_stale(), 2);
    EXPECT_EQ(gate.rejected_unknown(), 0);
}

TEST(TrajectoryGate, SynchronousModeTakesOnlyTheCurrentVersion) {
    TrajectoryGate gate(0);
    ASSERT_TRUE(gate.published(0).ok());
    ASSERT_TRUE(gate.published(1).ok());
    EXPECT_EQ(gate.check(1), Verdict::kAccept);
    EXPECT_EQ(gate.check(0), Verdict::kStale);
    EXPECT_EQ(gate.dropped_stale(), 1);
}

TEST(TrajectoryGate, RejectsVersionsItNeverPublished) {
    TrajectoryGate gate(4);
    EXPECT_EQ(gate.check(0), Verdict::kUnknownVersion);  // nothing published yet
    // A restarted trainer: its predecessor published up to 9; this one starts at 10.
    ASSERT_TRUE(gate.published(10).ok());
    ASSERT_TRUE(gate.published(11).ok());
    EXPECT_EQ(gate.check(9), Verdict::kUnknownVersion);   // within the bound, but not ours
    EXPECT_EQ(gate.check(12), Verdict::kUnknownVersion);  // from the future
    EXPECT_EQ(gate.check(-1), Verdict::kUnknownVersion);
    EXPECT_EQ(gate.check(10), Verdict::kAccept);
    EXPECT_EQ(gate.rejected_unknown(), 4);
    EXPECT_EQ(gate.dropped_stale(), 0);
    EXPECT_EQ(gate.accepted(), 1);
}

TEST(TrajectoryGate, PublishedVersionsMustRiseButMaySkipNumbers) {
    TrajectoryGate gate(1);
    EXPECT_FALSE(gate.published(-3).ok());
    ASSERT_TRUE(gate.published(7).ok());
    ASSERT_TRUE(gate.published(9).ok());  // the table skipped 8 (another trainer's, say)
    const Status back = gate.published(8);
    EXPECT_FALSE(back.ok());
    EXPECT_NE(back.message().find("does not rise above the last published version 9"),
              std::string::npos)
        << back.message();
    EXPECT_FALSE(gate.published(9).ok());
    EXPECT_EQ(gate.current(), 9);
    EXPECT_EQ(gate.first(), 7);
}

TEST(TrajectoryGate, StalenessCountsPublishedVersionsNotNumbers) {
    TrajectoryGate gate(/*max_staleness=*/1);
    ASSERT_TRUE(gate.published(10).ok());
    ASSERT_TRUE(gate.published(20).ok());
    ASSERT_TRUE(gate.published(21).ok());
    EXPECT_EQ(gate.staleness(21), 0);
    EXPECT_EQ(gate.staleness(20), 1);
    EXPECT_EQ(gate.staleness(10), 2);
    EXPECT_EQ(gate.staleness(15), -1);
    EXPECT_EQ(gate.check(20), Verdict::kAccept);
    EXPECT_EQ(gate.check(10), Verdict::kStale);
    EXPECT_EQ(gate.check(15), Verdict::kUnknownVersion);
}

TEST(TrajectoryGate, RefusesTrajectoriesOfAnotherFence) {
    const wire::Fence mine{1, 3};
    TrajectoryGate gate(/*max_staleness=*/4, mine);
    ASSERT_TRUE(gate.published(40).ok());
    ASSERT_TRUE(gate.published(41).ok());
    // The predecessor (epoch 2) used the same numbers for other weights: refused by fence.
    EXPECT_EQ(gate.check(41, wire::Fence{1, 2}), Verdict::kFenced);
    EXPECT_EQ(gate.check(41, wire::Fence{2, 1}), Verdict::kFenced);
    EXPECT_EQ(gate.check(41, mine), Verdict::kAccept);
    EXPECT_EQ(gate.check(40), Verdict::kAccept);  // carried: judged under the gate's own fence
    EXPECT_EQ(gate.rejected_fenced(), 2);
    EXPECT_EQ(gate.rejected_unknown(), 0);
}

TEST(TrajectoryBatch, FenceSurvivesEncoding) {
    TrajectoryBatch b;
    b.version = 5;
    b.fence = {1, 2};
    auto d = TrajectoryBatch::decode(b.encode());
    ASSERT_TRUE(d.ok()) << d.status().message();
    EXPECT_EQ(d->fence, (wire::Fence{1, 2}));
    EXPECT_EQ(d->version, 5);
}

TEST(TrajectoryBatch, KvStatsSurviveEncoding) {
    TrajectoryBatch b;
    b.kv = {1000, 4096, 300, 7, 2, 1, 5, 12.5, 0.27};
    auto d = TrajectoryBatch::decode(b.encode());
    ASSERT_TRUE(d.ok()) << d.status().message();
    EXPECT_EQ(d->kv.bytes_in_use, 1000);
    EXPECT_EQ(d->kv.budget_bytes, 4096);
    EXPECT_EQ(d->kv.prefix_bytes, 300);
    EXPECT_EQ(d->kv.prefix_hits, 7);
    EXPECT_EQ(d->kv.admission_waits, 2);
    EXPECT_EQ(d->kv.evictions, 1);
    EXPECT_EQ(d->kv.compressed_blocks, 5);
    EXPECT_EQ(d->kv.bytes_per_token, 12.5);
    EXPECT_EQ(d->kv.compression, 0.27);
}

}  // namespace
}  // namespace tandem::rl
