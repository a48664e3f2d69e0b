#pragma once

// The task of a GRPO job as the trainer, the rollout actors and `tandem config check` see it,
// whatever its kind: the built-in generators and `jsonl` (model::Task, character vocabulary) and
// `text` (rl::TextTask: a real tokenizer, a prompt template, a verifier or reward command, stop
// conditions). Everything here derives from the job file alone, identically in every actor.
//
//   auto task = make_job_task(job);                   // reads the dataset (and the tokenizer)
//   TextExample ex = (*task)->example(cursor);
//   auto prompt = (*task)->prompt_tokens(ex);         // model input ids
//   auto target = (*task)->answer_tokens(ex);         // answer + eos: the warm start's target
//   auto scorer = (*task)->make_scorer();             // one per rollout actor
//   auto rewards = (*scorer)->score(examples, completions);  // cuts completions at their stop
//
// The policy: model.init is "random" (model.* with the task's vocabulary size), a directory with
// config.json + safetensors, or a config.json file: random weights (model.seed) of that shape,
// for example a small Qwen3-architecture policy over the real Qwen3 tokenizer
// (configs/jobs/grpo-qwen3-tiny.yaml).

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/config.h"
#include "common/model/generate.h"
#include "common/model/model_weights.h"
#include "common/model/vocab.h"
#include "common/rl/text_task.h"
#include "common/status.h"

namespace tandem::rl {

// Scores a rollout actor's completions. Owned by one rollout actor; not thread-safe.
class TaskScorer {
public:
    virtual ~TaskScorer() = default;
    // One reward per completion, in order; completion c answers examples[c.prompt]. Each
    // completion's tokens and logprobs are first cut after the token that met a stop condition
    // (text tasks: an end-of-sequence id or a stop string), so the trainer learns from what was
    // scored. A reward command's failure is an error, never a reward of 0.
    virtual Result<std::vector<double>> score(std::span<const TextExample> examples,
                                              std::span<model::Completion> completions) = 0;
};

// Immutable after make_job_task; safe to share between threads.
class JobTask {
public:
    virtual ~JobTask() = default;
    // Example `index`: a pure function of (task seed, index). Built-in tasks leave `system` empty.
    virtual TextExample example(uint64_t index) const = 0;
    virtual Result<std::vector<int32_t>> prompt_tokens(const TextExample& ex) const = 0;
    // The answer followed by eos_token(): what the warm start's supervised steps teach.
    virtual Result<std::vector<int32_t>> answer_tokens(const TextExample& ex) const = 0;
    // The longest prompt, in tokens.
    virtual int max_prompt_tokens() const = 0;
    // Every id the task produces is below this; the policy's vocab_size must be at least this
    // (built-in tasks: exactly this).
    virtual int vocab_size() const = 0;
    // The id a supervised answer ends with (answer_tokens) and generation stops at.
    virtual int32_t eos_token() const = 0;
    // Every id generation stops at (GeneratorOptions::stop_tokens): eos_token() and, for a text
    // task, the template's end-of-turn tokens and the model's eos ids (config.json and
    // generation_config.json). Stop strings are applied when scoring.
    virtual std::vector<int32_t> stop_tokens() const = 0;
    // The character vocabulary of built-in and jsonl tasks (checkpoints record it); null for
    // text tasks.
    virtual const model::Vocabulary* vocab() const = 0;
    virtual Result<std::unique_ptr<TaskScorer>> make_scorer() const = 0;
};

// The task of a job's `task:` section. A text task's tokenizer is task.tokenizer, else model.init
// when it is a directory; the model's eos ids (model::model_eos_ids of model.init: config.json's
// eos_token_id and generation_config.json's) join its stop ids.
Result<std::unique_ptr<JobTask>> make_job_task(const config::JobSpec& job);

// The policy's config (and the vocabulary its checkpoint recorded, if any) from the job file;
// reads no weights.
Result<model::HfConfig> policy_config(const config::JobSpec& job, const JobTask& task);

// Version 0 before any warm start: random from model.seed (model.init "random" or a config.json
// file), or the weights of model.init's directory. Checked with check_policy_fits.
Result<model::ModelWeights> initial_policy(const config::JobSpec& job, const JobTask& task);

// The policy can serve the task: the built-in tasks' checks (model::check_model_fits); for a
// text task a vocab_size that holds the tokenizer's ids; max_seq_len holds the longest prompt
// plus rollout.sampling.max_new_tokens.
Status check_policy_fits(const config::JobSpec& job, const model::HfConfig& policy,
                         const JobTask& task);

}  // namespace tandem::rl
