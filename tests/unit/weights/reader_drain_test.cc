// The drain of one failed operation (reader_drain.h) against a stand-in operation whose requests
// complete when the test says: drained as soon as nothing is in flight, the connections
// force-closed once when the wait runs out, the memory retired when not even that completes
// them, and the reader's DrainStats counting each step; the shutdown path (progress until
// drained or retired) ends either way.

#include "common/weights/reader_drain.h"

#include <gtest/gtest.h>

#include "tests/fakes/fake_clock.h"

namespace tandem::weights {
namespace {

using DrainKind = DrainEvent::Kind;
using std::chrono::milliseconds;
using tandem::testing::FakeClock;

// A failed operation's requests in flight; force_close() completes those its connections carry
// (`complete_on_close`), as UCX does with a forced close, or none (a request UCX never ends).
struct StandInOperation final : DrainTarget {
    size_t in_flight = 0;
    size_t connections = 2;
    bool complete_on_close = true;
    int closes = 0;
    size_t outstanding() override { return in_flight; }
    size_t force_close() override {
        ++closes;
        if (complete_on_close) in_flight = 0;
        const size_t closed = connections;
        connections = 0;
        return closed;
    }
};

const milliseconds kWait(2000);
const milliseconds kForceWait(500);

// One failed operation, its drain and the reader's counters.
class DrainOfAFailedOperation : public ::testing::Test {
protected:
    // Starts the drain with `in_flight` requests (counted, as the reader counts them).
    DrainEvent start(size_t in_flight, bool complete_on_close = true) {
        op.in_flight = in_flight;
        op.complete_on_close = complete_on_close;
        const DrainEvent e = drain.start(op, clock.now(), kWait, kForceWait);
        if (e.kind == DrainKind::kStarted) count_drain(stats, e);
        return e;
    }
    // One step at the clock's time, counted.
    DrainEvent step() {
        const DrainEvent e = drain.step(op, clock.now());
        count_drain(stats, e);
        return e;
    }

    FakeClock clock;
    StandInOperation op;
    OperationDrain drain;
    DrainStats stats;
};

TEST_F(DrainOfAFailedOperation, NothingInFlightNeedsNoDrain) {
    EXPECT_EQ(start(0).kind, DrainKind::kDrained);
    EXPECT_FALSE(drain.active());
    EXPECT_EQ(op.closes, 0);
    EXPECT_EQ(stats.operations, 0u);
}

TEST_F(DrainOfAFailedOperation, RequestsThatCompleteWithinTheWaitAreDrainedWithoutAClose) {
    DrainEvent e = start(3);
    ASSERT_EQ(e.kind, DrainKind::kStarted);
    EXPECT_EQ(e.outstanding, 3u);
    EXPECT_EQ(stats.operations, 1u);
    EXPECT_EQ(stats.requests, 3u);
    EXPECT_EQ(stats.draining, 1u);
    EXPECT_TRUE(drain.active());

    clock.advance(kWait - milliseconds(1));
    op.in_flight = 1;
    e = step();
    EXPECT_EQ(e.kind, DrainKind::kWaiting);
    EXPECT_EQ(e.outstanding, 1u);
    op.in_flight = 0;
    e = step();
    EXPECT_EQ(e.kind, DrainKind::kDrained);
    EXPECT_FALSE(e.forced);
    EXPECT_FALSE(drain.active());
    EXPECT_EQ(op.closes, 0);
    EXPECT_EQ(stats.draining, 0u);
    EXPECT_EQ(stats.forced_closes, 0u);
    EXPECT_EQ(stats.retired_buffers, 0u);
}

TEST_F(DrainOfAFailedOperation, TheWaitRunningOutForceClosesOnceAndTheCloseDrainsThem) {
    start(2);
    clock.advance(kWait);
    DrainEvent e = step();
    ASSERT_EQ(e.kind, DrainKind::kForceClosed);
    EXPECT_EQ(e.outstanding, 2u);  // what was in flight when the wait ran out
    EXPECT_EQ(e.closed, 2u);
    EXPECT_TRUE(drain.active());
    EXPECT_EQ(stats.forced_closes, 2u);
    e = step();
    EXPECT_EQ(e.kind, DrainKind::kDrained);
    EXPECT_TRUE(e.forced);
    EXPECT_EQ(op.closes, 1);
    EXPECT_EQ(stats.draining, 0u);
    EXPECT_EQ(stats.retired_buffers, 0u);
}

TEST_F(DrainOfAFailedOperation, RequestsThatOutliveTheForcedCloseRetireTheMemory) {
    start(1, /*complete_on_close=*/false);
    clock.advance(kWait);
    EXPECT_EQ(step().kind, DrainKind::kForceClosed);
    clock.advance(kForceWait - milliseconds(1));
    EXPECT_EQ(step().kind, DrainKind::kWaiting);  // the close gets its own bound
    EXPECT_EQ(op.closes, 1);                      // and is not asked for twice
    clock.advance(milliseconds(1));
    const DrainEvent e = step();
    ASSERT_EQ(e.kind, DrainKind::kRetire);
    EXPECT_EQ(e.outstanding, 1u);
    EXPECT_FALSE(drain.active());
    EXPECT_EQ(stats.retired_buffers, 1u);
    EXPECT_EQ(stats.draining, 0u);
    EXPECT_EQ(stats.operations, 1u);
    // Over: asking again neither closes anything nor counts.
    EXPECT_EQ(drain.step(op, clock.now() + std::chrono::hours(1)).kind, DrainKind::kDrained);
    EXPECT_EQ(op.closes, 1);
}

// The reader stopping: its loop steps every draining operation, progressing the worker between
// steps, until each is drained or retired. Both end within the two bounds.
TEST_F(DrainOfAFailedOperation, AStoppingReadersLoopEndsWhetherTheCloseCompletesThemOrNot) {
    for (bool completes : {true, false}) {
        SCOPED_TRACE(completes ? "the close completes them" : "nothing completes them");
        const auto began = clock.now();
        stats = DrainStats{};
        op.connections = 2;
        start(4, completes);
        DrainEvent last;
        int steps = 0;
        while (drain.active()) {
            last = step();
            clock.advance(milliseconds(10));  // one round of worker progress
            ASSERT_LT(++steps, 1000) << "the drain never ended";
        }
        EXPECT_EQ(last.kind, completes ? DrainKind::kDrained : DrainKind::kRetire);
        EXPECT_LE(clock.now() - began, kWait + kForceWait + milliseconds(20));
        EXPECT_EQ(stats.draining, 0u);
        EXPECT_EQ(stats.retired_buffers, completes ? 0u : 1u);
        EXPECT_EQ(stats.forced_closes, 2u);
    }
}

}  // namespace
}  // namespace tandem::weights
