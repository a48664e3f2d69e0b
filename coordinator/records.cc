#include "coordinator/records.h"

#include <fmt/format.h>

namespace tandem::coord {

std::string_view job_state_name(JobState s) {
    switch (s) {
        case JobState::kPending:
            return "PENDING";
        case JobState::kRunning:
            return "RUNNING";
        case JobState::kSucceeded:
            return "SUCCEEDED";
        case JobState::kFailed:
            return "FAILED";
        case JobState::kCancelled:
            return "CANCELLED";
    }
    return "?";
}

Result<JobState> parse_job_state(std::string_view s) {
    for (auto st : {JobState::kPending, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                    JobState::kCancelled}) {
        if (job_state_name(st) == s) return st;
    }
    return invalid_argument(fmt::format("unknown job state '{}'", s));
}

std::string_view node_state_name(NodeState s) { return s == NodeState::kAlive ? "alive" : "dead"; }

std::string_view version_state_name(VersionState s) {
    switch (s) {
        case VersionState::kAvailable:
            return "available";
        case VersionState::kRetired:
            return "retired";
        case VersionState::kUnavailable:
            return "unavailable";
    }
    return "?";
}

Result<VersionState> parse_version_state(std::string_view s) {
    for (auto st : {VersionState::kAvailable, VersionState::kRetired, VersionState::kUnavailable}) {
        if (version_state_name(st) == s) return st;
    }
    return invalid_argument(fmt::format("unknown version state '{}'", s));
}

}  // namespace tandem::coord
