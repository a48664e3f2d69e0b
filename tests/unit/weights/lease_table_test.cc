#include "common/weights/lease_table.h"

#include <gtest/gtest.h>

#include "tests/fakes/fake_clock.h"

namespace tandem::weights {
namespace {

using std::chrono::milliseconds;

class LeaseTableTest : public ::testing::Test {
protected:
    // Publishes `version` into whatever slot claim_for_write picks; the claim must succeed.
    uint32_t publish(Version version) {
        auto claim = table_.claim_for_write();
        EXPECT_TRUE(claim.ok()) << claim.status().to_string();
        EXPECT_TRUE(claim->slot.has_value());
        table_.mark_published(*claim->slot, version);
        return *claim->slot;
    }

    testing::FakeClock clock_;
    LeaseTable table_{clock_, 3, milliseconds(1000)};
};

TEST_F(LeaseTableTest, FreeSlotsAreUsedFirst) {
    EXPECT_EQ(publish(0), 0u);
    EXPECT_EQ(publish(1), 1u);
    EXPECT_EQ(publish(2), 2u);
    EXPECT_EQ(table_.newest(), Version{2});
    EXPECT_EQ(table_.slot_of(1), 1u);
}

TEST_F(LeaseTableTest, OneWriterAtATime) {
    auto first = table_.claim_for_write();
    ASSERT_TRUE(first.ok());
    auto second = table_.claim_for_write();
    EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
    table_.abort_write(*first->slot);
    EXPECT_TRUE(table_.claim_for_write().ok());
}

TEST_F(LeaseTableTest, ReclaimsTheOldestSlotWithoutALiveLease) {
    publish(10);  // slot 0
    publish(11);  // slot 1
    publish(12);  // slot 2
    auto lease = table_.acquire(10, "reader-a");
    ASSERT_TRUE(lease.ok());
    auto claim = table_.claim_for_write();
    ASSERT_TRUE(claim.ok());
    ASSERT_TRUE(claim->slot.has_value());
    EXPECT_EQ(*claim->slot, 1u);  // version 10 is leased, 11 is the oldest free of leases
    EXPECT_EQ(claim->evicted, Version{11});
    table_.mark_published(*claim->slot, 13);
    EXPECT_EQ(table_.acquire(11, "reader-b").status().code(), StatusCode::kNotFound);

    // Once the lease is released, version 10 is the oldest and goes next.
    table_.release(lease->id);
    auto next = table_.claim_for_write();
    ASSERT_TRUE(next.ok() && next->slot);
    EXPECT_EQ(*next->slot, 0u);
    EXPECT_EQ(next->evicted, Version{10});
}

TEST_F(LeaseTableTest, ExpiredLeaseDoesNotBlockReclaim) {
    publish(0);
    publish(1);
    publish(2);
    ASSERT_TRUE(table_.acquire(0, "dead-reader").ok());
    ASSERT_TRUE(table_.acquire(1, "dead-reader").ok());
    ASSERT_TRUE(table_.acquire(2, "dead-reader").ok());
    auto blocked = table_.claim_for_write();
    ASSERT_TRUE(blocked.ok());
    EXPECT_FALSE(blocked->slot.has_value());
    EXPECT_EQ(blocked->retry_at, clock_.now() + milliseconds(1000));
    clock_.advance(milliseconds(1000));
    auto claim = table_.claim_for_write();
    ASSERT_TRUE(claim.ok());
    ASSERT_TRUE(claim->slot.has_value());
    EXPECT_EQ(*claim->slot, 0u);
    EXPECT_EQ(table_.live_leases(), 0u);
}

TEST_F(LeaseTableTest, RenewedLeaseKeepsItsSlot) {
    publish(0);
    publish(1);
    publish(2);
    auto lease = table_.acquire(0, "reader");
    ASSERT_TRUE(lease.ok());
    clock_.advance(milliseconds(900));
    auto renewed = table_.renew(lease->id);
    ASSERT_TRUE(renewed.ok());
    EXPECT_EQ(renewed->expires_at, clock_.now() + milliseconds(1000));
    clock_.advance(milliseconds(900));
    EXPECT_EQ(table_.status(0).live_leases, 1u);
    auto claim = table_.claim_for_write();
    ASSERT_TRUE(claim.ok() && claim->slot);
    EXPECT_EQ(*claim->slot, 1u);
}

TEST_F(LeaseTableTest, ExpiredLeaseCannotBeRenewed) {
    publish(0);
    auto lease = table_.acquire(0, "reader");
    ASSERT_TRUE(lease.ok());
    clock_.advance(milliseconds(1001));
    EXPECT_EQ(table_.renew(lease->id).status().code(), StatusCode::kNotFound);
}

// A live reader that keeps renewing cannot hold the writer up for more than one TTL: the drained
// slot refuses renewals and new leases, so its last lease runs out.
TEST_F(LeaseTableTest, DrainingBoundsTheWaitToOneTtl) {
    publish(0);
    publish(1);
    publish(2);
    auto a = table_.acquire(0, "a");
    auto b = table_.acquire(1, "b");
    auto c = table_.acquire(2, "c");
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    clock_.advance(milliseconds(400));
    ASSERT_TRUE(table_.renew(a->id).ok());  // a now expires at t=1400
    auto blocked = table_.claim_for_write();
    ASSERT_TRUE(blocked.ok());
    ASSERT_FALSE(blocked->slot.has_value());
    const auto deadline = blocked->retry_at;
    EXPECT_LE(deadline, clock_.now() + milliseconds(1000));
    EXPECT_TRUE(table_.status(0).draining);
    EXPECT_EQ(table_.renew(a->id).status().code(), StatusCode::kUnavailable);
    EXPECT_EQ(table_.acquire(0, "late").status().code(), StatusCode::kUnavailable);
    ASSERT_TRUE(table_.renew(b->id).ok());  // other slots renew normally
    ASSERT_TRUE(table_.renew(c->id).ok());

    clock_.advance(deadline - clock_.now());
    auto claim = table_.claim_for_write();
    ASSERT_TRUE(claim.ok());
    ASSERT_TRUE(claim->slot.has_value());
    EXPECT_EQ(*claim->slot, 0u);
    EXPECT_EQ(claim->evicted, Version{0});
}

TEST_F(LeaseTableTest, NextExpiryIsTheEarliestLease) {
    publish(0);
    EXPECT_FALSE(table_.next_expiry().has_value());
    ASSERT_TRUE(table_.acquire(0, "a").ok());
    clock_.advance(milliseconds(10));
    ASSERT_TRUE(table_.acquire(0, "b").ok());
    EXPECT_EQ(table_.next_expiry(), clock_.now() - milliseconds(10) + milliseconds(1000));
    clock_.advance(milliseconds(995));
    EXPECT_EQ(table_.expire(), 1u);
    EXPECT_EQ(table_.live_leases(), 1u);
}

}  // namespace
}  // namespace tandem::weights
