#pragma once

// What a failed fetch does with the UCX requests it still has in flight. UCX 1.13 cannot cancel
// one-sided gets or rendezvous receives (ucp_request_cancel does nothing for them), so they may
// still write into the memory they target after the fetch gave up: the reader's staging buffer,
// a partial read's scratch memory, its header and manifest copies. That memory is not reused,
// verified or freed until every such request has completed. The steps, bounded in time:
//   1. wait: progress the worker until the count of outstanding requests is zero (`wait`);
//   2. force: close the fetch's endpoints with UCP_EP_CLOSE_FLAG_FORCE, so that UCX completes
//      what was outstanding on them with an error status, and progress again (`force_wait`);
//   3. retire: still not done, the memory is given up for good (never reused or freed while the
//      process lives) and the reader carries on with fresh memory; this is logged as an error.

#include <chrono>
#include <cstddef>

#include "common/clock.h"

namespace tandem::weights {

enum class DrainStep {
    kDone,        // nothing in flight: the memory may be reused
    kWait,        // requests in flight; progress and ask again
    kForceClose,  // the wait ran out: force-close the endpoints now (returned once)
    kRetire,      // even the forced close did not complete them: retire the memory
};

class DrainTracker {
public:
    DrainTracker() = default;
    DrainTracker(Clock::TimePoint started, std::chrono::milliseconds wait,
                 std::chrono::milliseconds force_wait)
        : deadline_(started + wait), force_wait_(force_wait) {}

    // The next step given how many requests are still in flight at `now`.
    DrainStep next(size_t outstanding, Clock::TimePoint now) {
        if (outstanding == 0) return DrainStep::kDone;
        if (now < deadline_) return DrainStep::kWait;
        if (!forced_) {
            forced_ = true;
            deadline_ = now + force_wait_;
            return DrainStep::kForceClose;
        }
        return DrainStep::kRetire;
    }
    bool forced() const { return forced_; }

private:
    Clock::TimePoint deadline_{};
    std::chrono::milliseconds force_wait_{0};
    bool forced_ = false;
};

}  // namespace tandem::weights
