#pragma once

// TrajectoryGate: which trajectories a GRPO trainer may learn from. A trajectory is accepted only
// if it was generated under this trainer's fence (job attempt + trainer epoch, assigned by the
// coordinator's version table: a restarted trainer has a higher one, and whatever its predecessor
// published is not its own), with a version this trainer published itself, at most max_staleness
// published versions behind the current one. Everything else is turned away and counted: another
// fence (fenced), a version never published by this trainer (unknown), one published but too old
// (stale). Staleness counts published versions, not numbers: the table may skip numbers.
// Owned by the trainer loop; not thread-safe.

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "common/wire/runtime_messages.h"

namespace tandem::rl {

class TrajectoryGate {
public:
    enum class Verdict { kAccept, kStale, kUnknownVersion, kFenced };

    // `fence`: this trainer's; trajectories of any other are refused (an invalid fence accepts
    // every fence: a gate without fencing).
    explicit TrajectoryGate(int64_t max_staleness, wire::Fence fence = {})
        : max_staleness_(max_staleness), fence_(fence) {}

    void set_fence(wire::Fence fence) { fence_ = fence; }
    const wire::Fence& fence() const { return fence_; }

    // Records a version this trainer published; it becomes the current one. Versions must rise;
    // anything else is invalid_argument.
    [[nodiscard]] Status published(int64_t version);
    // The newest published version, or -1 before the first.
    int64_t current() const { return published_.empty() ? -1 : published_.back(); }
    // The first version this trainer published, or -1 before it.
    int64_t first() const { return published_.empty() ? -1 : published_.front(); }
    bool known(int64_t version) const;
    // Published versions from `version` to the current one (0: it is current); -1 if unknown.
    int64_t staleness(int64_t version) const;

    // Decides on one trajectory of `version` generated under `fence` and counts the refusals.
    Verdict check(int64_t version, const wire::Fence& fence);
    // Without a fence (a trajectory batch that carries none): version checks only.
    Verdict check(int64_t version) { return check(version, fence_); }

    int64_t accepted() const { return accepted_; }
    int64_t dropped_stale() const { return dropped_stale_; }
    int64_t rejected_unknown() const { return rejected_unknown_; }
    int64_t rejected_fenced() const { return rejected_fenced_; }

private:
    int64_t max_staleness_;
    wire::Fence fence_;
    std::vector<int64_t> published_;  // ascending
    int64_t accepted_ = 0;
    int64_t dropped_stale_ = 0;
    int64_t rejected_unknown_ = 0;
    int64_t rejected_fenced_ = 0;
};

}  // namespace tandem::rl
