#pragma once

// Internal to the reader: one shard's read as a state machine, apart from what the read moves.
// Every operation kind (pull, partial read, map) drives it with the same few events, and its
// route says which states the kind passes through; what a kind does at each step (claim a
// buffer, where the manifest and the chunks land, what a verified chunk does) stays with the kind
// (reader_pull.h, reader_partial.h, reader_map.cc) and the fetch loop (reader_fetch.cc). The
// machine owns the state, the legal transitions and the two clocks a read is judged by: how long
// the current phase has waited for its answer, and how long the chunk reads went without data.
//
//   kClaim --claimed--> kConnect --connected--> kHello --hello_answered--> kAcquire
//   kAcquire --leased--> kMeta (kDone for kMap) --meta_checked--> kChunks
//   kChunks --chunks_verified--> kHeaderAfter --header_rechecked--> kDone
//   any state but kDone --failed--> kFailed
//
// Pulls start in kClaim, partial reads and maps in kConnect. Owned by the reader's loop thread;
// not thread-safe. Time comes in as arguments (tests drive it with a fake clock).

#include <chrono>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"

namespace tandem::weights {

enum class ShardState {
    kClaim,        // pull: waiting for a buffer to fill
    kConnect,      // connecting to the source (publisher or relay)
    kHello,        // hello round trip (skipped on a recently greeted connection)
    kAcquire,      // lease request in flight
    kMeta,         // reading the slot header and the manifest
    kChunks,       // reading and verifying chunks
    kHeaderAfter,  // re-reading the header: was the slot rewritten during the read?
    kDone,
    kFailed,
};
std::string_view shard_state_name(ShardState state);

// The states an operation kind passes through.
enum class ShardRoute {
    kPull,     // kClaim first; every state after
    kPartial,  // from kConnect; every state after
    kMap,      // from kConnect to kAcquire, then done: the slot is used in place
};

class ShardMachine {
public:
    explicit ShardMachine(ShardRoute route);

    ShardRoute route() const { return route_; }
    ShardState state() const { return state_; }
    // kDone or kFailed: no event moves it any more.
    bool finished() const { return state_ == ShardState::kDone || state_ == ShardState::kFailed; }
    // The state a failed machine was in when it failed (its state otherwise).
    ShardState failed_in() const { return failed_in_; }
    // When the current state was entered.
    Clock::TimePoint entered() const { return entered_; }

    // The events. Each belongs to one state; in any other it changes nothing and returns
    // internal_error naming the event and both states (a bug in the caller, never the source's).
    Status claimed(Clock::TimePoint now);           // kClaim -> kConnect
    Status connected(Clock::TimePoint now);         // kConnect -> kHello
    Status hello_answered(Clock::TimePoint now);    // kHello -> kAcquire
    Status leased(Clock::TimePoint now);            // kAcquire -> kMeta (kMap: kDone)
    Status meta_checked(Clock::TimePoint now);      // kMeta -> kChunks; the stall clock starts
    Status chunks_verified(Clock::TimePoint now);   // kChunks -> kHeaderAfter
    Status header_rechecked(Clock::TimePoint now);  // kHeaderAfter -> kDone
    // From any unfinished state to kFailed; false (and nothing changes) once finished.
    bool failed(Clock::TimePoint now);

    // The current state has waited `limit` or more for its answer (the header and manifest in
    // kMeta, the header in kHeaderAfter). Never in kClaim, kChunks or a finished state: claims
    // wait for a buffer, chunk reads are judged by stalled().
    bool phase_overdue(Clock::TimePoint now, std::chrono::milliseconds limit) const;
    // Data arrived for a chunk (kChunks): the stall clock starts again.
    void progress(Clock::TimePoint now);
    // In kChunks, reads are `waiting` and no data has arrived for `limit` or more.
    bool stalled(Clock::TimePoint now, std::chrono::milliseconds limit, bool waiting) const;

private:
    Status move(ShardState from, ShardState to, Clock::TimePoint now, std::string_view event);

    ShardRoute route_;
    ShardState state_;
    ShardState failed_in_;
    Clock::TimePoint entered_{};
    Clock::TimePoint last_progress_{};
};

}  // namespace tandem::weights
