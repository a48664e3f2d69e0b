#pragma once

#include "common/agent/actor_context.h"

namespace tandem::rollout {

// The rollout actor of a `kind: grpo` job. Finds the trainer's trajectory socket and the newest
// weight version through the coordinator, then for batch k: makes sure it holds a version no older
// than k - max_staleness (fetching newer versions in the background while it generates on the one
// it has, and waiting only when the bound requires), samples group_size completions for its share
// of the step's prompts (prompt KV blocks shared within a group), scores them and pushes them with
// their version. With more rollouts than rollout.relay_fanout it reads versions through the
// coordinator's relay tree (docs/weights.md). Runs until the coordinator stops it. Returns the
// process exit code.
int run_grpo_rollout(const agent::ActorContext& ctx, agent::ActorChannel& channel);

}  // namespace tandem::rollout
