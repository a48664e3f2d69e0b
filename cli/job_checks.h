#pragma once

// The one validation path a job file takes before it reaches a cluster, shared by
// `tandem config check` and `tandem job submit`: the file decoded with its overrides, and for a
// grpo job its task loaded as the actors load it (a JSONL dataset read in full) and its longest
// context checked against the limits the actors check when they start (check_model_fits,
// check_context_length). Nothing is submitted or allocated. Functions only; no state.

#include <string>
#include <vector>

#include "common/config/job_spec.h"
#include "common/config/loader.h"
#include "common/status.h"

namespace tandem::cli {

struct CheckedJob {
    config::JobSpec spec;
    // A grpo job's longest context next to its limits, one line; empty for other kinds.
    std::string limits;
};

// On failure the status carries every error, one per line, each naming the file (or the
// override); its code is invalid_argument, or not_found when the file cannot be read.
Result<CheckedJob> check_job_file(const std::string& file,
                                  const std::vector<config::Override>& overrides);

}  // namespace tandem::cli
