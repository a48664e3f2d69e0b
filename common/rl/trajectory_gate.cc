#include "common/rl/trajectory_gate.h"

#include <fmt/format.h>

namespace tandem::rl {

Status TrajectoryGate::published(int64_t version) {
    if (first_ < 0) {
        if (version < 0) return invalid_argument(fmt::format("version {} is negative", version));
        first_ = current_ = version;
        return Status();
    }
    if (version != current_ + 1) {
        return invalid_argument(fmt::format(
            "version {} does not follow the last published version {}", version, current_));
    }
    current_ = version;
    return Status();
}

TrajectoryGate::Verdict TrajectoryGate::check(int64_t version) {
    if (!known(version)) {
        ++rejected_unknown_;
        return Verdict::kUnknownVersion;
    }
    if (current_ - version > max_staleness_) {
        ++dropped_stale_;
        return Verdict::kStale;
    }
    ++accepted_;
    return Verdict::kAccept;
}

}  // namespace tandem::rl
