#pragma once

// GRPO in one process, synchronously: generate a batch with the current weights, score it,
// take one optimizer step, repeat. No cluster, no weight plane: the reference for what the
// trainer and rollout actors do across processes, used by tests and bench/grpo. Any task kind
// (rl::JobTask: the built-in generators, jsonl, and text tasks with a real tokenizer).

#include <cstdint>
#include <functional>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/trainer.h"
#include "common/rl/task_factory.h"
#include "common/status.h"

namespace tandem::rl {

// What the local loop (and every actor of a job) derives from the job file alone: the task and
// the version-0 policy (make_job_task, initial_policy, and the context-length check).
struct JobSetup {
    std::unique_ptr<JobTask> task;
    model::ModelWeights initial;
};
Result<JobSetup> make_job_setup(const config::JobSpec& job);

struct LocalStep {
    int64_t step = 0;  // 1-based
    model::TrainStats train;
    double reward_mean = 0;  // of the rollouts used for this step
    int64_t generated_tokens = 0;
    double rollout_s = 0, train_s = 0, step_s = 0;
};

struct LocalLoopOptions {
    int steps = 0;  // 0: job.algorithm.steps (GRPO steps, after any warm start)
    // Supervised warm start: this many steps of answer log-likelihood on prompts_per_step x
    // group_size task examples (learning rate supervised_lr, 0: the job's), before GRPO. The
    // warm-started policy is GRPO's version 0 and its KL reference. Reported through
    // on_supervised_step with LocalStep::step = -remaining (..., -2, -1).
    int supervised_steps = 0;
    double supervised_lr = 0.0;
    std::function<void(const LocalStep&)> on_step;
    std::function<void(const LocalStep&)> on_supervised_step;
};

// Runs job.algorithm.steps (or options.steps) GRPO steps of the job's task, model and
// algorithm. Without a warm start, the first step's reward_mean is the random policy's.
Result<std::vector<LocalStep>> run_local_grpo(const config::JobSpec& job,
                                              const LocalLoopOptions& options = {});

}  // namespace tandem::rl
