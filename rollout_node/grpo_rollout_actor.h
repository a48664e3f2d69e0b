#pragma once

#include "common/runtime/job_runtime.h"

namespace tandem::rollout {

// The rollout actor of a `kind: grpo` job (RolloutLoop over the actor runtime): follows the
// trainer run of the job's fence, and for batch k makes sure it holds a version of that run no
// older than k - max_staleness steps (fetching newer versions in the background while it generates
// on the one it has, and waiting only when the bound requires), samples group_size completions for
// its share of the step's prompts, scores them and pushes them with their version and fence. With
// more rollouts than rollout.relay_fanout it reads versions through the version table's relay
// tree (docs/weights.md). Runs until the job is over or the coordinator stops it.
Status run_grpo_rollout(runtime::JobRuntime& runtime);

}  // namespace tandem::rollout
