// The pull's buffer claim (common/weights/reader_pull.h) over a reader's two-slot lease table and a
// fake clock: claimed, waiting (a drain in progress, relay leases on the spare buffer) or refused
// with the reason (a fetch already filling it, both buffers in use, a retired buffer).

#include "common/weights/reader_pull.h"

#include <gtest/gtest.h>

#include "tests/fakes/fake_clock.h"

namespace tandem::weights {
namespace {

using std::chrono::milliseconds;

class PullClaimTest : public ::testing::Test {
protected:
    PullClaim claim(bool draining = false, std::optional<uint32_t> dead = std::nullopt) {
        return claim_pull_buffer(table_, draining, dead, clock_.now());
    }
    testing::FakeClock clock_;
    LeaseTable table_{clock_, 2, milliseconds(1000)};
};

TEST_F(PullClaimTest, ClaimsAFreeBufferThenRefusesASecondFetchWhileItFills) {
    const PullClaim first = claim();
    ASSERT_EQ(first.outcome, PullClaim::Outcome::kClaimed);
    const PullClaim second = claim();
    EXPECT_EQ(second.outcome, PullClaim::Outcome::kRefused);
    EXPECT_NE(second.why.message().find("already filling"), std::string::npos);
    table_.mark_published(first.slot, 1);
    const PullClaim next = claim();
    ASSERT_EQ(next.outcome, PullClaim::Outcome::kClaimed);
    EXPECT_NE(next.slot, first.slot);
}

TEST_F(PullClaimTest, WaitsWhileAFailedFetchDrainsWithoutTouchingTheTable) {
    const PullClaim waiting = claim(/*draining=*/true);
    EXPECT_EQ(waiting.outcome, PullClaim::Outcome::kWait);
    EXPECT_EQ(waiting.retry_at, clock_.now() + milliseconds(1));
    EXPECT_EQ(claim().outcome, PullClaim::Outcome::kClaimed);  // nothing was claimed meanwhile
}

TEST_F(PullClaimTest, WaitsForRelayLeasesOnTheOldestBufferAtMostOneTtl) {
    for (Version v : {1, 2}) {
        const PullClaim c = claim();
        ASSERT_EQ(c.outcome, PullClaim::Outcome::kClaimed);
        table_.mark_published(c.slot, v);
    }
    ASSERT_TRUE(table_.acquire(1, "downstream").ok());  // a relay reader still reads version 1
    ASSERT_TRUE(table_.acquire(2, "downstream").ok());
    const PullClaim waiting = claim();
    ASSERT_EQ(waiting.outcome, PullClaim::Outcome::kWait);
    EXPECT_LE(waiting.retry_at, clock_.now() + milliseconds(1000));
    clock_.advance(milliseconds(1001));  // the leases run out
    EXPECT_EQ(claim().outcome, PullClaim::Outcome::kClaimed);
}

TEST_F(PullClaimTest, RefusesWhenBothBuffersAreInUseOrTheSpareWasRetired) {
    const PullClaim a = claim();
    ASSERT_EQ(a.outcome, PullClaim::Outcome::kClaimed);
    table_.mark_published(a.slot, 1);
    const PullClaim b = claim(false, /*dead=*/1 - a.slot);
    EXPECT_EQ(b.outcome, PullClaim::Outcome::kRefused);
    EXPECT_NE(b.why.message().find("was retired"), std::string::npos) << b.why.message();
    // The retired buffer's claim was given back: pinning both makes the next claim impossible.
    table_.pin(a.slot);
    const PullClaim c = claim();
    ASSERT_EQ(c.outcome, PullClaim::Outcome::kClaimed);
    table_.mark_published(c.slot, 2);
    table_.pin(c.slot);
    const PullClaim d = claim();
    EXPECT_EQ(d.outcome, PullClaim::Outcome::kRefused);
    EXPECT_NE(d.why.message().find("both reader buffers"), std::string::npos) << d.why.message();
}

}  // namespace
}  // namespace tandem::weights
