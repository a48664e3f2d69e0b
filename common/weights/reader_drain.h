#pragma once

// Internal to the reader: the drain of one failed operation, apart from what the operation holds
// (drain.h says why and the bounds). A read that fails, is given up for a newer version, or is
// cut short because the reader stops may still have UCX requests writing into its memory; the
// operation, and its buffer or scratch memory, stay out of use until the drain ends. The drain
// sees the operation only through DrainTarget (how many requests are still in flight; force-close
// its connections) and says what happened at each step, which the reader logs and counts in
// DrainStats (count_drain). Owned by the reader's loop thread; not thread-safe.

#include <chrono>
#include <cstddef>

#include "common/clock.h"
#include "common/weights/drain.h"
#include "common/weights/reader.h"

namespace tandem::weights {

// What a draining operation offers its drain.
class DrainTarget {
public:
    virtual ~DrainTarget() = default;
    // Requests UCX has not completed that write into the operation's memory.
    virtual size_t outstanding() = 0;
    // Force-closes the operation's connections still open (UCX then completes what was in flight
    // on them with an error); returns how many it closed.
    virtual size_t force_close() = 0;
};

struct DrainEvent {
    enum class Kind {
        kStarted,      // the operation failed with `outstanding` requests in flight
        kWaiting,      // still in flight; ask again after progressing the worker
        kForceClosed,  // the wait ran out: `closed` connections force-closed (once)
        kDrained,      // nothing in flight: the memory may be reused (`forced`: after a close)
        kRetire,       // not even the forced close completed them: retire the memory for good
    };
    Kind kind = Kind::kWaiting;
    size_t outstanding = 0;
    size_t closed = 0;
    bool forced = false;
};

class OperationDrain {
public:
    OperationDrain() = default;
    // Begins a drain at `now` when `target` has requests in flight: kStarted, and active() until
    // it ends; kDrained (nothing to drain) otherwise.
    DrainEvent start(DrainTarget& target, Clock::TimePoint now, std::chrono::milliseconds wait,
                     std::chrono::milliseconds force_wait);
    // One step at `now`; after kDrained or kRetire the drain is over (active() false).
    DrainEvent step(DrainTarget& target, Clock::TimePoint now);
    bool active() const { return active_; }

private:
    DrainTracker tracker_;
    bool active_ = false;
};

// Adds `event` to the reader's drain counters.
void count_drain(DrainStats& stats, const DrainEvent& event);

}  // namespace tandem::weights
