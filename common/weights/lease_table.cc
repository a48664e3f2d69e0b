#include "common/weights/lease_table.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::weights {

LeaseTable::LeaseTable(const Clock& clock, uint32_t slots, std::chrono::milliseconds ttl)
    : clock_(clock), ttl_(ttl), slots_(slots) {}

size_t LeaseTable::leases_on(uint32_t slot) const {
    size_t n = 0;
    for (const auto& [id, lease] : leases_) n += lease.slot == slot ? 1 : 0;
    return n;
}

size_t LeaseTable::expire() {
    const auto now = clock_.now();
    return std::erase_if(leases_, [&](const auto& kv) { return kv.second.expires_at <= now; });
}

Result<LeaseGrant> LeaseTable::acquire(Version version, const std::string& holder) {
    expire();
    for (uint32_t s = 0; s < slots_.size(); ++s) {
        const Slot& slot = slots_[s];
        if (slot.state != SlotState::kPublished || slot.version != version) continue;
        if (slot.draining) {
            return unavailable(
                fmt::format("version {} is being reclaimed from slot {}; read a "
                            "newer version",
                            version, s));
        }
        Lease lease{s, version, holder, clock_.now() + ttl_};
        const LeaseId id = next_lease_++;
        leases_.emplace(id, lease);
        return LeaseGrant{id, s, version, lease.expires_at};
    }
    return not_found(fmt::format("version {} is not held by any slot", version));
}

Result<LeaseGrant> LeaseTable::renew(LeaseId id) {
    expire();
    auto it = leases_.find(id);
    if (it == leases_.end()) {
        return not_found(fmt::format("lease {} expired or was never granted", id));
    }
    Lease& lease = it->second;
    if (slots_[lease.slot].draining) {
        return unavailable(
            fmt::format("lease {} on version {} cannot be renewed: slot {} is "
                        "being reclaimed",
                        id, lease.version, lease.slot));
    }
    lease.expires_at = clock_.now() + ttl_;
    return LeaseGrant{id, lease.slot, lease.version, lease.expires_at};
}

void LeaseTable::release(LeaseId id) { leases_.erase(id); }

Result<SlotClaim> LeaseTable::claim_for_write() {
    expire();
    for (uint32_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].state == SlotState::kWriting) {
            return already_exists(fmt::format("slot {} is already being written", s));
        }
    }
    SlotClaim claim;
    for (uint32_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].state == SlotState::kFree && slots_[s].pins == 0) {
            slots_[s].state = SlotState::kWriting;
            claim.slot = s;
            stop_draining();
            return claim;
        }
    }
    // Every slot is published: order the unpinned ones oldest first.
    std::vector<uint32_t> order;
    for (uint32_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].pins == 0) order.push_back(s);
    }
    if (order.empty()) {
        claim.all_pinned = true;
        return claim;
    }
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
        return slots_[a].published_seq < slots_[b].published_seq;
    });
    for (uint32_t s : order) {
        if (leases_on(s) == 0) {
            claim.evicted = slots_[s].version;
            slots_[s] = Slot{SlotState::kWriting, 0, 0, false, 0};
            claim.slot = s;
            stop_draining();
            return claim;
        }
    }
    // All leased: drain the oldest (a slot already draining is the oldest one we picked before).
    uint32_t victim = order.front();
    for (uint32_t s : order) {
        if (slots_[s].draining) {
            victim = s;
            break;
        }
    }
    slots_[victim].draining = true;
    Clock::TimePoint latest = clock_.now();
    for (const auto& [id, lease] : leases_) {
        if (lease.slot == victim) latest = std::max(latest, lease.expires_at);
    }
    claim.retry_at = latest;
    return claim;
}

void LeaseTable::stop_draining() {
    for (auto& s : slots_) s.draining = false;
}

void LeaseTable::mark_published(uint32_t slot, Version version) {
    slots_[slot] =
        Slot{SlotState::kPublished, version, next_publish_seq_++, false, slots_[slot].pins};
}

void LeaseTable::abort_write(uint32_t slot) {
    if (slots_[slot].state == SlotState::kWriting) slots_[slot] = Slot{};
}

void LeaseTable::reset(uint32_t slot) {
    const uint32_t pins = slots_[slot].pins;
    slots_[slot] = Slot{};
    slots_[slot].pins = pins;
}

void LeaseTable::pin(uint32_t slot) { ++slots_[slot].pins; }

void LeaseTable::unpin(uint32_t slot) {
    if (slots_[slot].pins > 0) --slots_[slot].pins;
}

std::optional<LeaseGrant> LeaseTable::find(LeaseId id) const {
    auto it = leases_.find(id);
    if (it == leases_.end() || it->second.expires_at <= clock_.now()) return std::nullopt;
    return LeaseGrant{id, it->second.slot, it->second.version, it->second.expires_at};
}

std::optional<uint32_t> LeaseTable::slot_of(Version version) const {
    for (uint32_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].state == SlotState::kPublished && slots_[s].version == version) return s;
    }
    return std::nullopt;
}

SlotStatus LeaseTable::status(uint32_t slot) const {
    const auto now = clock_.now();
    size_t live = 0;
    for (const auto& [id, lease] : leases_) {
        live += (lease.slot == slot && lease.expires_at > now) ? 1 : 0;
    }
    return {slots_[slot].state, slots_[slot].version, slots_[slot].draining, live};
}

std::optional<Version> LeaseTable::newest() const {
    std::optional<Version> best;
    uint64_t best_seq = 0;
    for (const auto& s : slots_) {
        if (s.state == SlotState::kPublished && !s.draining && s.published_seq > best_seq) {
            best = s.version;
            best_seq = s.published_seq;
        }
    }
    return best;
}

std::optional<Clock::TimePoint> LeaseTable::next_expiry() const {
    std::optional<Clock::TimePoint> t;
    for (const auto& [id, lease] : leases_) {
        if (!t || lease.expires_at < *t) t = lease.expires_at;
    }
    return t;
}

}  // namespace tandem::weights
