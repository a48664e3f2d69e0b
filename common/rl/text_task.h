#pragma once

// A text task (task.name: text): a JSONL dataset of {"prompt", "answer"[, "system"]} lines,
// rendered with the job's prompt template and encoded with a real tokenizer, scored by a verifier
// (exact, numeric) or by the user's reward command. Example i is a pure function of (task seed,
// i): each epoch visits every row once in a fresh seeded order, so a data cursor is all a
// checkpoint needs.
//
//   auto tok = load_task_tokenizer(job);                       // task.tokenizer or model.init
//   auto task = TextTask::load(job.task, job.rollout.sampling, *tok);
//   TextExample ex = (*task)->example(cursor++);
//   auto prompt_ids = (*task)->prompt_tokens(ex);
//   ... generate with a StopChecker over (*task)->stop() ...
//   auto scorer = TextScorer::create(**task);                  // one per rollout actor
//   auto rewards = (*scorer)->score(samples);

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/job_spec.h"
#include "common/rl/prompt_template.h"
#include "common/rl/reward_command.h"
#include "common/rl/stop_conditions.h"
#include "common/status.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem::rl {

struct TextExample {
    std::string system;  // the row's, else task.system
    std::string prompt;
    std::string answer;
};

// The tokenizer of a job's text task: task.tokenizer, else model.init when it is a directory.
Result<std::shared_ptr<const tokenizer::Tokenizer>> load_task_tokenizer(const config::JobSpec& job);

// Immutable after load; safe to share between threads.
class TextTask {
public:
    // Reads task.dataset (errors name the file and line) and encodes every prompt once to learn
    // the longest. Extra end-of-sequence ids (the model's generation_config) join the stop ids.
    static Result<std::unique_ptr<TextTask>> load(const config::TaskSpec& spec,
                                                  const config::SamplingSpec& sampling,
                                                  std::shared_ptr<const tokenizer::Tokenizer> tok,
                                                  std::span<const int32_t> extra_eos_ids = {});

    uint64_t size() const { return rows_.size(); }
    TextExample example(uint64_t index) const;
    // The template applied to the example.
    std::string render(const TextExample& ex) const;
    // The tokenizer's prefix (BOS, unless the template writes its own) + the rendered prompt,
    // special tokens in it matched as tokens.
    Result<std::vector<int32_t>> prompt_tokens(const TextExample& ex) const;
    int max_prompt_tokens() const { return max_prompt_tokens_; }

    const StopConditions& stop() const { return stop_; }
    // The text the verifier or reward command sees: decoded, cut at the stop conditions.
    std::string completion_text(std::span<const int32_t> generated) const {
        return stop_.completion_text(*tok_, generated);
    }
    // The verifier's reward (not the reward command's).
    double verify(const TextExample& ex, std::string_view completion) const;
    bool uses_reward_command() const { return !spec_.reward.command.empty(); }
    const config::RewardSpec& reward() const { return spec_.reward; }
    const tokenizer::Tokenizer& tokenizer() const { return *tok_; }

private:
    TextTask() = default;
    config::TaskSpec spec_;
    PromptTemplate template_;
    std::shared_ptr<const tokenizer::Tokenizer> tok_;
    std::vector<TextExample> rows_;
    StopConditions stop_;
    int max_prompt_tokens_ = 0;
};

// A completion to score.
struct ScoredSample {
    const TextExample* example;
    std::string_view completion;
};

// Scores completions with the task's verifier, or with the reward command (started by create,
// one process per scorer). Owned by one rollout actor; not thread-safe.
class TextScorer {
public:
    static Result<std::unique_ptr<TextScorer>> create(const TextTask& task);
    // One reward per sample, in order; a reward command's failure is an error (never a 0).
    Result<std::vector<double>> score(std::span<const ScoredSample> samples);

private:
    explicit TextScorer(const TextTask& task) : task_(task) {}
    const TextTask& task_;
    std::unique_ptr<RewardCommand> command_;
};

}  // namespace tandem::rl
