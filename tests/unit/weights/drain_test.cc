// The bounded drain of a failed fetch's requests in flight (drain.h): wait, then force-close,
// then retire; never "done" while anything is outstanding.

#include "common/weights/drain.h"

#include <gtest/gtest.h>

#include "tests/fakes/fake_clock.h"

namespace tandem::weights {
namespace {

using std::chrono::milliseconds;
using tandem::testing::FakeClock;

TEST(DrainTracker, NothingInFlightIsDoneAtOnce) {
    FakeClock clock;
    DrainTracker d(clock.now(), milliseconds(100), milliseconds(50));
    EXPECT_EQ(d.next(0, clock.now()), DrainStep::kDone);
    EXPECT_FALSE(d.forced());
}

TEST(DrainTracker, WaitsWhileRequestsAreInFlightThenIsDoneWhenTheyComplete) {
    FakeClock clock;
    DrainTracker d(clock.now(), milliseconds(100), milliseconds(50));
    EXPECT_EQ(d.next(3, clock.now()), DrainStep::kWait);
    clock.advance(milliseconds(99));
    EXPECT_EQ(d.next(1, clock.now()), DrainStep::kWait);
    EXPECT_EQ(d.next(0, clock.now()), DrainStep::kDone);
    EXPECT_FALSE(d.forced());
}

TEST(DrainTracker, ForceClosesOnceWhenTheWaitRunsOutThenRetires) {
    FakeClock clock;
    DrainTracker d(clock.now(), milliseconds(100), milliseconds(50));
    clock.advance(milliseconds(100));
    EXPECT_EQ(d.next(2, clock.now()), DrainStep::kForceClose);
    EXPECT_TRUE(d.forced());
    // The forced close gets its own bound; it is not asked for twice.
    EXPECT_EQ(d.next(2, clock.now()), DrainStep::kWait);
    clock.advance(milliseconds(49));
    EXPECT_EQ(d.next(1, clock.now()), DrainStep::kWait);
    clock.advance(milliseconds(1));
    EXPECT_EQ(d.next(1, clock.now()), DrainStep::kRetire);
    // Never done while something is outstanding, however late.
    clock.advance(milliseconds(10'000));
    EXPECT_NE(d.next(1, clock.now()), DrainStep::kDone);
}

TEST(DrainTracker, ForcedCloseThatCompletesTheRequestsIsDone) {
    FakeClock clock;
    DrainTracker d(clock.now(), milliseconds(10), milliseconds(50));
    clock.advance(milliseconds(20));
    EXPECT_EQ(d.next(5, clock.now()), DrainStep::kForceClose);
    EXPECT_EQ(d.next(0, clock.now()), DrainStep::kDone);
    EXPECT_TRUE(d.forced());
}

}  // namespace
}  // namespace tandem::weights
