#pragma once

#include "common/agent/actor_context.h"

namespace tandem::trainer {

// The trainer actor of a `kind: grpo` job: builds the policy (random or from a Hugging Face
// directory, or resumes a checkpoint), publishes it as version 0, then for every step takes one
// batch of trajectories within the staleness bound from its PULL socket, takes a GRPO step,
// publishes the next version and reports the step's metrics. Returns the process exit code.
int run_grpo_trainer(const agent::ActorContext& ctx, agent::ActorChannel& channel);

}  // namespace tandem::trainer
