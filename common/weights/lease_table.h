#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"

namespace tandem::weights {

using LeaseId = uint64_t;

struct LeaseGrant {
    LeaseId id = 0;
    uint32_t slot = 0;
    Version version = 0;
    Clock::TimePoint expires_at{};
};

// What claim_for_write() decided.
struct SlotClaim {
    // The slot the caller now writes exclusively; empty if it must wait.
    std::optional<uint32_t> slot;
    // The version that slot held (now no longer readable from it), if any.
    std::optional<Version> evicted;
    // No slot can be reclaimed however long the caller waits: every slot is pinned or written.
    bool all_pinned = false;
    // When there is no slot: the time at which the slot being drained is free for sure (the
    // latest expiry of its leases). Never more than one TTL after the claim started draining it.
    Clock::TimePoint retry_at{};
};

enum class SlotState { kFree, kWriting, kPublished };

struct SlotStatus {
    SlotState state = SlotState::kFree;
    Version version = 0;
    bool draining = false;
    size_t live_leases = 0;
};

// Which slot holds which version and who is reading it: the bookkeeping behind a source's slots
// (a publisher's K slots, a relay's buffers). Readers take leases with a TTL and renew them; the
// writer reclaims the oldest published slot with no live lease. When every published slot is
// leased, the oldest one is drained: it takes no new leases or renewals, so it is free at most one
// TTL later even if its readers died. Time comes from the injected clock.
// Not thread-safe: the owner serialises calls (the publisher holds a mutex around it).
class LeaseTable {
public:
    LeaseTable(const Clock& clock, uint32_t slots, std::chrono::milliseconds ttl);

    std::chrono::milliseconds ttl() const { return ttl_; }
    uint32_t slot_count() const { return static_cast<uint32_t>(slots_.size()); }

    // Leases the slot that holds `version`: not_found if no slot holds it, unavailable if it is
    // being drained for reuse (the reader should move to a newer version).
    Result<LeaseGrant> acquire(Version version, const std::string& holder);
    // Extends a lease by one TTL from now: not_found if it expired or is unknown, unavailable if
    // its slot is being drained (the lease then runs out at its current expiry).
    Result<LeaseGrant> renew(LeaseId id);
    // Ends a lease; unknown ids are ignored (the lease may have expired already).
    void release(LeaseId id);

    // Writer side. Picks a slot to write: a free one, else the oldest published one with no live
    // lease, else starts draining the oldest published one and says when to retry. Fails if a
    // slot is already being written (one writer at a time).
    Result<SlotClaim> claim_for_write();
    // Closes a write: the slot now serves `version`.
    void mark_published(uint32_t slot, Version version);
    // Abandons a write: the slot becomes free.
    void abort_write(uint32_t slot);
    // Frees a slot whatever its state (its content turned out bad); its leases stay until they
    // expire or are released, and its pins stay.
    void reset(uint32_t slot);

    // Pinned slots are never reclaimed (a reader's buffer that backs a live view). Counted.
    void pin(uint32_t slot);
    void unpin(uint32_t slot);
    // The lease, if it is live.
    std::optional<LeaseGrant> find(LeaseId id) const;

    // Drops expired leases; returns how many.
    size_t expire();
    std::optional<uint32_t> slot_of(Version version) const;
    SlotStatus status(uint32_t slot) const;
    // The newest published, non-draining version, if any.
    std::optional<Version> newest() const;
    // The earliest expiry among live leases (to schedule expire()).
    std::optional<Clock::TimePoint> next_expiry() const;
    size_t live_leases() const { return leases_.size(); }

private:
    struct Slot {
        SlotState state = SlotState::kFree;
        Version version = 0;
        uint64_t published_seq = 0;  // publish order, for "oldest"
        bool draining = false;
        uint32_t pins = 0;
    };
    struct Lease {
        uint32_t slot = 0;
        Version version = 0;
        std::string holder;
        Clock::TimePoint expires_at{};
    };

    size_t leases_on(uint32_t slot) const;
    // A claim succeeded: the slot that was being drained may take leases again.
    void stop_draining();

    const Clock& clock_;
    const std::chrono::milliseconds ttl_;
    std::vector<Slot> slots_;
    std::map<LeaseId, Lease> leases_;
    LeaseId next_lease_ = 1;
    uint64_t next_publish_seq_ = 1;
};

}  // namespace tandem::weights
