#pragma once

// User actors: a job's `trainer.command` / `rollout.command` (config::UserCommandSpec) run by the
// node agent instead of the built-in actor binary. Same scheduling, restarts, logs and exit
// reports as a built-in actor; what differs is only how the process is started. The environment
// it gets (documented in docs/python.md, "User actors"):
//   TANDEM_ACTOR_CONTEXT  the actor context file (tandem.runtime() reads it)
//   TANDEM_JOB, TANDEM_ACTOR, TANDEM_ATTEMPT, TANDEM_NODE, TANDEM_RUN_DIR
//   PYTHONPATH            the build tree's python/ folder first, when the node binaries run from a
//                         build tree that has the SDK (so `import tandem` works)
//   PYTHONUNBUFFERED=1    so print() lines reach the job's log as they are written
//   CUDA_VISIBLE_DEVICES  when the coordinator assigned GPUs
// then the job file's `env` over them.

#include <optional>
#include <string>

#include "common/agent/actor_context.h"
#include "common/agent/actor_process.h"
#include "common/config/job_spec.h"

namespace tandem::agent {

// The user command of the role of `ctx.actor` in `ctx.spec`, or nullopt for a built-in actor.
std::optional<config::UserCommandSpec> user_command(const ActorContext& ctx);

// How to start the user actor `user` of `ctx` whose context file is `ctx_path`; `bin_dir` is where
// the node binaries live.
ActorProcess::Command user_actor_command(const config::UserCommandSpec& user,
                                         const ActorContext& ctx, const std::string& ctx_path,
                                         const std::string& bin_dir);

}  // namespace tandem::agent
