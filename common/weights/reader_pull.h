#pragma once

// Internal to the reader: the pull's own decision, which buffer a new fetch may fill now. The
// rest of a pull runs in the shard state machine (reader_shard.h, driven by reader_fetch.cc) it
// shares with partial reads; what it fills is ReaderBuffer (reader_relay.h). Pure given the lease
// table; loop thread.

#include <cstdint>
#include <optional>

#include "common/clock.h"
#include "common/status.h"
#include "common/weights/lease_table.h"

namespace tandem::weights {

struct PullClaim {
    enum class Outcome {
        kClaimed,  // `slot` is now written by this pull
        kWait,     // ask again at `retry_at`
        kRefused,  // `why`: the fetch fails
    };
    Outcome outcome = Outcome::kWait;
    uint32_t slot = 0;
    Clock::TimePoint retry_at{};
    Status why;
};

// Claims the reader's spare buffer in `table` (its two buffers' slots) for a pull at `now`. Waits
// while a failed fetch is still draining requests that may write into a buffer (`draining`) or
// while the spare buffer's relay leases run out; refuses when another fetch fills it, when both
// buffers back views still in use, or when the claimed buffer is `dead_slot` (retired, with no
// replacement memory).
PullClaim claim_pull_buffer(LeaseTable& table, bool draining, std::optional<uint32_t> dead_slot,
                            Clock::TimePoint now);

}  // namespace tandem::weights
