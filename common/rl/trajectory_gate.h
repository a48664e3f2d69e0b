#pragma once

// TrajectoryGate: which trajectories a GRPO trainer may learn from. A trajectory is accepted only
// if its weight version is one this trainer published itself (in this run of the actor: a
// restarted trainer does not know its predecessor's versions, which may hold other weights under
// the same number) and it is at most max_staleness versions behind the trainer's current one.
// Everything else is turned away and counted: versions never published (unknown) apart from
// published ones that are too old (stale). Owned by the trainer loop; not thread-safe.

#include <cstdint>

#include "common/status.h"

namespace tandem::rl {

class TrajectoryGate {
public:
    enum class Verdict { kAccept, kStale, kUnknownVersion };

    explicit TrajectoryGate(int64_t max_staleness) : max_staleness_(max_staleness) {}

    // Records a version this trainer published; it becomes the current one. A trainer publishes
    // consecutive versions from its first one; anything else is invalid_argument.
    [[nodiscard]] Status published(int64_t version);
    // The newest published version, or -1 before the first.
    int64_t current() const { return current_; }
    // The first version this trainer published, or -1 before it.
    int64_t first() const { return first_; }
    bool known(int64_t version) const {
        return first_ >= 0 && version >= first_ && version <= current_;
    }

    // Decides on one trajectory of `version` and counts the refusals.
    Verdict check(int64_t version);

    int64_t accepted() const { return accepted_; }
    int64_t dropped_stale() const { return dropped_stale_; }
    int64_t rejected_unknown() const { return rejected_unknown_; }

private:
    int64_t max_staleness_;
    int64_t first_ = -1;
    int64_t current_ = -1;
    int64_t accepted_ = 0;
    int64_t dropped_stale_ = 0;
    int64_t rejected_unknown_ = 0;
};

}  // namespace tandem::rl
