#pragma once

// What every actor of a GRPO job derives from the job file alone, identically: the task (and so
// the vocabulary), the model shape, and the version-0 policy.

#include <memory>
#include <optional>

#include "common/config/job_spec.h"
#include "common/model/model_weights.h"
#include "common/model/tasks.h"
#include "common/status.h"

namespace tandem::model {

struct JobSetup {
    std::unique_ptr<Task> task;
    ModelWeights initial;  // version 0: random from model.seed, or loaded from model.init
};

// The built-in and jsonl tasks (character vocabulary; a text task is refused, naming
// rl::make_job_setup in common/rl/local_loop.h, which covers every task kind).
// model.init "random": ModelWeights::random(config from model + task vocabulary, model.seed).
// Otherwise a directory with config.json + model.safetensors; its vocabulary (when recorded)
// must be the task's.
Result<JobSetup> make_job_setup(const config::JobSpec& job);

// The policy `model` (with the vocabulary its checkpoint recorded, if any) can serve the job's
// task: same vocabulary and vocab_size, and max_seq_len holds the task's longest prompt plus
// rollout.sampling.max_new_tokens. make_job_setup runs it; `tandem config check` runs it on the
// config alone (no weights made or read).
Status check_model_fits(const config::JobSpec& job, const ModelConfig& model,
                        const std::optional<Vocabulary>& model_vocab, const Task& task);

// The longest context the job can produce (the task's longest prompt plus
// rollout.sampling.max_new_tokens) must fit rollout.context_parallel x
// rollout.max_tokens_per_device; longer contexts than max_tokens_per_device alone are sharded.
Status check_context_length(const config::JobSpec& job, int max_prompt_tokens);

}  // namespace tandem::model
