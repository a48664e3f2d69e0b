#include "common/weights/reader_pull.h"

#include <fmt/format.h>

namespace tandem::weights {

PullClaim claim_pull_buffer(LeaseTable& table, bool draining, std::optional<uint32_t> dead_slot,
                            Clock::TimePoint now) {
    PullClaim out;
    if (draining) {
        // A failed fetch's stale requests may still write into a buffer: wait (bounded by its
        // drain) rather than hand that buffer to this fetch.
        out.retry_at = now + std::chrono::milliseconds(1);
        return out;
    }
    auto claim = table.claim_for_write();
    if (!claim.ok()) {
        out.outcome = PullClaim::Outcome::kRefused;
        out.why = unavailable("another fetch is already filling the spare buffer");
        return out;
    }
    if (claim->all_pinned) {
        out.outcome = PullClaim::Outcome::kRefused;
        out.why = unavailable(
            "both reader buffers hold versions in use (the current one and an older one a caller "
            "still holds)");
        return out;
    }
    if (!claim->slot) {
        out.retry_at = claim->retry_at;
        return out;
    }
    if (dead_slot == *claim->slot) {
        table.abort_write(*claim->slot);
        out.outcome = PullClaim::Outcome::kRefused;
        out.why = unavailable(fmt::format(
            "reader buffer {} was retired (a failed fetch's requests never completed and no "
            "replacement memory could be had)",
            *claim->slot));
        return out;
    }
    out.outcome = PullClaim::Outcome::kClaimed;
    out.slot = *claim->slot;
    return out;
}

}  // namespace tandem::weights
