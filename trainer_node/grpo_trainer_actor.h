#pragma once

#include "common/runtime/job_runtime.h"

namespace tandem::trainer {

// The trainer actor of a `kind: grpo` job: builds the policy (random or from a Hugging Face
// directory, or resumes a checkpoint), publishes it as the job's next version, then for every step
// takes one batch of trajectories within the staleness bound from its PULL socket, takes a GRPO
// step, publishes the next version (numbered by the coordinator's version table) and reports the
// step's metrics, all through the actor runtime (TrainerLoop).
Status run_grpo_trainer(runtime::JobRuntime& runtime);

// Whether a trainer on cuda keeps device copies of its published slots for CUDA IPC
// (weights::PublisherOptions::device_slots, `slots` x the model's bytes of device memory): only
// when the placement puts a rollout actor with a GPU on the trainer's host, the one case where a
// reader can open them.
bool gpu_rollout_on_trainer_host(const nlohmann::json& placement, std::string_view trainer);

}  // namespace tandem::trainer
