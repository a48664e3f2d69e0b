#include "common/rl/trajectory_gate.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::rl {

Status TrajectoryGate::published(int64_t version) {
    if (version < 0) return invalid_argument(fmt::format("version {} is negative", version));
    if (!published_.empty() && version <= published_.back()) {
        return invalid_argument(
            fmt::format("version {} does not rise above the last published version {}", version,
                        published_.back()));
    }
    published_.push_back(version);
    return Status();
}

bool TrajectoryGate::known(int64_t version) const {
    return std::binary_search(published_.begin(), published_.end(), version);
}

int64_t TrajectoryGate::staleness(int64_t version) const {
    auto it = std::lower_bound(published_.begin(), published_.end(), version);
    if (it == published_.end() || *it != version) return -1;
    return static_cast<int64_t>(published_.end() - it) - 1;
}

TrajectoryGate::Verdict TrajectoryGate::check(int64_t version, const wire::Fence& fence) {
    if (fence_.valid() && fence != fence_) {
        ++rejected_fenced_;
        return Verdict::kFenced;
    }
    const int64_t s = staleness(version);
    if (s < 0) {
        ++rejected_unknown_;
        return Verdict::kUnknownVersion;
    }
    if (s > max_staleness_) {
        ++dropped_stale_;
        return Verdict::kStale;
    }
    ++accepted_;
    return Verdict::kAccept;
}

}  // namespace tandem::rl
