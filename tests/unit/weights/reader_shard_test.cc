// One shard's read as a state machine (reader_shard.h): each operation kind's route, events out
// of their state refused, failure from every state, and the phase and stall clocks.

#include "common/weights/reader_shard.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/fakes/fake_clock.h"

namespace tandem::weights {
namespace {

using std::chrono::milliseconds;
using tandem::testing::FakeClock;

// Sends `m` the event that belongs to its state (internal_error once finished).
Status step_once(ShardMachine& m, Clock::TimePoint now) {
    switch (m.state()) {
        case ShardState::kClaim:
            return m.claimed(now);
        case ShardState::kConnect:
            return m.connected(now);
        case ShardState::kHello:
            return m.hello_answered(now);
        case ShardState::kAcquire:
            return m.leased(now);
        case ShardState::kMeta:
            return m.meta_checked(now);
        case ShardState::kChunks:
            return m.chunks_verified(now);
        case ShardState::kHeaderAfter:
            return m.header_rechecked(now);
        case ShardState::kDone:
        case ShardState::kFailed:
            break;
    }
    return internal_error("finished");
}

// Drives `m` along its route until it is in `target`.
void drive_to(ShardMachine& m, ShardState target, const FakeClock& clock) {
    while (m.state() != target) {
        Status moved = step_once(m, clock.now());
        ASSERT_TRUE(moved.ok()) << "reaching " << shard_state_name(target) << ": "
                                << moved.to_string();
    }
}

// Every state a machine of `route` passes through, in order.
std::vector<ShardState> route_states(ShardRoute route) {
    FakeClock clock;
    ShardMachine m(route);
    std::vector<ShardState> seen{m.state()};
    while (step_once(m, clock.now()).ok()) seen.push_back(m.state());
    return seen;
}

TEST(ShardMachine, PullPassesEveryStateFromTheClaimToDone) {
    FakeClock clock;
    ShardMachine m(ShardRoute::kPull);
    EXPECT_EQ(m.state(), ShardState::kClaim);
    const std::vector<ShardState> order = {
        ShardState::kConnect, ShardState::kHello,       ShardState::kAcquire, ShardState::kMeta,
        ShardState::kChunks,  ShardState::kHeaderAfter, ShardState::kDone};
    for (ShardState next : order) {
        EXPECT_FALSE(m.finished());
        drive_to(m, next, clock);
        EXPECT_EQ(m.state(), next);
    }
    EXPECT_TRUE(m.finished());
    EXPECT_EQ(m.failed_in(), ShardState::kDone);
}

TEST(ShardMachine, PartialReadsSkipTheClaimAndMapsAreDoneOnceLeased) {
    FakeClock clock;
    ShardMachine partial(ShardRoute::kPartial);
    EXPECT_EQ(partial.state(), ShardState::kConnect);
    drive_to(partial, ShardState::kAcquire, clock);
    ASSERT_TRUE(partial.leased(clock.now()).ok());
    EXPECT_EQ(partial.state(), ShardState::kMeta);

    ShardMachine map(ShardRoute::kMap);
    EXPECT_EQ(map.state(), ShardState::kConnect);
    drive_to(map, ShardState::kAcquire, clock);
    ASSERT_TRUE(map.leased(clock.now()).ok());
    EXPECT_EQ(map.state(), ShardState::kDone);
    EXPECT_TRUE(map.finished());
    // The slot is used in place: no meta, chunk or header events for a map.
    EXPECT_FALSE(map.meta_checked(clock.now()).ok());
}

TEST(ShardMachine, AnEventOutsideItsStateIsRefusedAndChangesNothing) {
    FakeClock clock;
    ShardMachine m(ShardRoute::kPull);
    drive_to(m, ShardState::kHello, clock);
    const auto entered = m.entered();
    clock.advance(milliseconds(5));
    Status wrong = m.leased(clock.now());  // the lease before the hello answered
    EXPECT_EQ(wrong.code(), StatusCode::kInternal);
    EXPECT_NE(wrong.message().find("leased"), std::string::npos) << wrong.message();
    EXPECT_NE(wrong.message().find("hello"), std::string::npos) << wrong.message();
    EXPECT_NE(wrong.message().find("acquire"), std::string::npos) << wrong.message();
    EXPECT_EQ(m.state(), ShardState::kHello);
    EXPECT_EQ(m.entered(), entered);
    // A pull is claimed once; a later claim is refused.
    EXPECT_FALSE(m.claimed(clock.now()).ok());
    EXPECT_TRUE(m.hello_answered(clock.now()).ok());
}

TEST(ShardMachine, FailingFromAnyUnfinishedStateIsFinalAndRemembersWhere) {
    const std::vector<ShardState> states = {
        ShardState::kClaim, ShardState::kConnect, ShardState::kHello,      ShardState::kAcquire,
        ShardState::kMeta,  ShardState::kChunks,  ShardState::kHeaderAfter};
    for (ShardState at : states) {
        SCOPED_TRACE(std::string(shard_state_name(at)));
        FakeClock clock;
        ShardMachine m(ShardRoute::kPull);
        drive_to(m, at, clock);
        EXPECT_TRUE(m.failed(clock.now()));
        EXPECT_EQ(m.state(), ShardState::kFailed);
        EXPECT_EQ(m.failed_in(), at);
        EXPECT_TRUE(m.finished());
        EXPECT_FALSE(m.failed(clock.now()));  // once
        // No event moves a failed read on.
        EXPECT_FALSE(m.claimed(clock.now()).ok());
        EXPECT_FALSE(m.connected(clock.now()).ok());
        EXPECT_FALSE(m.hello_answered(clock.now()).ok());
        EXPECT_FALSE(m.leased(clock.now()).ok());
        EXPECT_FALSE(m.meta_checked(clock.now()).ok());
        EXPECT_FALSE(m.chunks_verified(clock.now()).ok());
        EXPECT_FALSE(m.header_rechecked(clock.now()).ok());
        EXPECT_EQ(m.state(), ShardState::kFailed);
        EXPECT_FALSE(m.phase_overdue(clock.now() + std::chrono::hours(1), milliseconds(1)));
    }
    // A finished read does not fail afterwards (another shard's failure fails the operation).
    FakeClock clock;
    ShardMachine done(ShardRoute::kPartial);
    drive_to(done, ShardState::kDone, clock);
    EXPECT_FALSE(done.failed(clock.now()));
    EXPECT_EQ(done.state(), ShardState::kDone);
}

TEST(ShardMachine, HeaderAndManifestReadsAreOverdueAtTheLimitFromTheirPhasesStart) {
    const milliseconds limit(5000);
    FakeClock clock;
    ShardMachine m(ShardRoute::kPull);
    EXPECT_FALSE(m.phase_overdue(clock.now() + std::chrono::hours(1), limit));  // claims wait
    drive_to(m, ShardState::kAcquire, clock);
    clock.advance(milliseconds(700));  // time spent before the lease does not count
    ASSERT_TRUE(m.leased(clock.now()).ok());
    clock.advance(limit - milliseconds(1));
    EXPECT_FALSE(m.phase_overdue(clock.now(), limit));
    clock.advance(milliseconds(1));
    EXPECT_TRUE(m.phase_overdue(clock.now(), limit));

    ASSERT_TRUE(m.meta_checked(clock.now()).ok());
    clock.advance(limit * 3);
    EXPECT_FALSE(m.phase_overdue(clock.now(), limit));  // chunk reads are judged by stalled()
    ASSERT_TRUE(m.chunks_verified(clock.now()).ok());
    clock.advance(limit - milliseconds(1));
    EXPECT_FALSE(m.phase_overdue(clock.now(), limit));
    clock.advance(milliseconds(1));
    EXPECT_TRUE(m.phase_overdue(clock.now(), limit));
}

TEST(ShardMachine, ChunkReadsStallOnlyWhileWaitingWithNoDataForTheLimit) {
    const milliseconds limit(5000);
    FakeClock clock;
    ShardMachine m(ShardRoute::kPartial);
    drive_to(m, ShardState::kMeta, clock);
    clock.advance(limit * 2);
    EXPECT_FALSE(m.stalled(clock.now(), limit, true));  // not reading chunks yet
    m.progress(clock.now());                            // ignored outside kChunks
    ASSERT_TRUE(m.meta_checked(clock.now()).ok());      // the stall clock starts here
    clock.advance(limit - milliseconds(1));
    EXPECT_FALSE(m.stalled(clock.now(), limit, true));
    m.progress(clock.now());  // a piece landed
    clock.advance(limit - milliseconds(1));
    EXPECT_FALSE(m.stalled(clock.now(), limit, true));
    clock.advance(milliseconds(1));
    EXPECT_TRUE(m.stalled(clock.now(), limit, true));
    EXPECT_FALSE(m.stalled(clock.now(), limit, false));  // nothing in flight: nothing to wait for
    ASSERT_TRUE(m.chunks_verified(clock.now()).ok());
    EXPECT_FALSE(m.stalled(clock.now() + limit * 10, limit, true));
}

TEST(ShardMachine, RoutesListTheirStatesInOrder) {
    EXPECT_EQ(route_states(ShardRoute::kPull).size(), 8u);  // kClaim ... kDone
    EXPECT_EQ(route_states(ShardRoute::kPartial).size(), 7u);
    EXPECT_EQ(route_states(ShardRoute::kMap),
              (std::vector<ShardState>{ShardState::kConnect, ShardState::kHello,
                                       ShardState::kAcquire, ShardState::kDone}));
}

}  // namespace
}  // namespace tandem::weights
