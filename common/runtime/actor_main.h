#pragma once

// The actor side of a node binary: connects the actor runtime to its agent and runs the job's
// actor on it: the built-in diagnostic actor, or the binary's GRPO actor.

#include <functional>

#include "common/agent/actor_context.h"
#include "common/runtime/job_runtime.h"

namespace tandem::runtime {

// Runs the actor of a `kind: grpo` job; returns its status (reported with the exit code).
using GrpoActor = std::function<Status(JobRuntime&)>;

// Returns the process exit code: 0, or 1 after reporting the failure through the runtime (and on
// stderr, which the agent reports when the runtime cannot be reached).
int actor_main(const agent::ActorContext& ctx, const GrpoActor& grpo);

// The built-in `kind: diagnostic` actor: reports progress every report_every_s for duration_s
// and succeeds, or fails after fail_after_s. Waits on the runtime's view (returns early when the
// job is cancelled).
Status run_diagnostic_actor(JobRuntime& runtime);

}  // namespace tandem::runtime
