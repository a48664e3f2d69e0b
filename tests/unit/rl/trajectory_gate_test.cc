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

TEST(TrajectoryGate, PublishedVersionsMustFollowEachOther) {
    TrajectoryGate gate(1);
    EXPECT_FALSE(gate.published(-3).ok());
    ASSERT_TRUE(gate.published(7).ok());
    const Status skip = gate.published(9);
    EXPECT_FALSE(skip.ok());
    EXPECT_NE(skip.message().find("does not follow the last published version 7"),
              std::string::npos)
        << skip.message();
    EXPECT_FALSE(gate.published(7).ok());
    EXPECT_EQ(gate.current(), 7);
    EXPECT_EQ(gate.first(), 7);
}

TEST(ChannelAnnouncer, AnnouncementCarriesTheStepAndDataCursorOfTheVersion) {
    agent::ActorChannel channel;
    ChannelAnnouncer announcer(channel);
    announcer.describe(12, {.step = 4, .data_cursor = 128, .trainer_attempt = 1});
    weights::VersionDescriptor d;
    d.job = JobId(3);
    d.version = 12;
    ::testing::internal::CaptureStdout();
    ASSERT_TRUE(announcer.announce(d).ok());
    const std::string out = ::testing::internal::GetCapturedStdout();
    const auto line = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(line.is_object()) << out;
    EXPECT_EQ(line["type"], "version");
    EXPECT_EQ(line["version"], 12);
    const auto& desc = line["descriptor"];
    EXPECT_EQ(desc["step"], 4);
    EXPECT_EQ(desc["data_cursor"], 128);
    EXPECT_EQ(desc["trainer_attempt"], 1);
    const VersionInfo info{.step = 4, .data_cursor = 128, .trainer_attempt = 1};
    EXPECT_EQ(info.epoch(12), 8);
}

}  // namespace
}  // namespace tandem::rl
