#pragma once

// GRPO in one process, synchronously: generate a batch with the current weights, score it,
// take one optimizer step, repeat. No cluster, no weight plane: the reference for what the
// trainer and rollout actors do across processes, used by tests and bench/grpo.

#include <cstdint>
#include <functional>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/trainer.h"
#include "common/status.h"

namespace tandem::model {

struct LocalStep {
    int64_t step = 0;  // 1-based
    TrainStats train;
    double reward_mean = 0;  // of the rollouts used for this step
    int64_t generated_tokens = 0;
    double rollout_s = 0, train_s = 0, step_s = 0;
};

struct LocalLoopOptions {
    int steps = 0;  // 0: job.algorithm.steps
    std::function<void(const LocalStep&)> on_step;
};

// Runs job.algorithm.steps (or options.steps) steps of the job's task, model and algorithm.
// The random policy's reward is the first step's reward_mean.
Result<std::vector<LocalStep>> run_local_grpo(const config::JobSpec& job,
                                              const LocalLoopOptions& options = {});

}  // namespace tandem::model
