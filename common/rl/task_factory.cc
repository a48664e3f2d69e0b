#include "common/rl/task_factory.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "common/model/hf_model.h"
#include "common/model/job_setup.h"
#include "common/model/tasks.h"

namespace tandem::rl {
namespace {

// model.init names a config.json file: random weights of that shape.
bool init_is_config_file(const config::JobSpec& job) {
    return job.model.init != "random" && std::filesystem::is_regular_file(job.model.init);
}

// --- built-in and jsonl tasks ------------------------------------------------------------------

class BuiltinScorer final : public TaskScorer {
public:
    explicit BuiltinScorer(const model::Task& task) : task_(task) {}
    Result<std::vector<double>> score(std::span<const TextExample> examples,
                                      std::span<model::Completion> completions) override {
        std::vector<double> rewards;
        rewards.reserve(completions.size());
        for (const model::Completion& c : completions) {
            const TextExample& ex = examples[static_cast<size_t>(c.prompt)];
            rewards.push_back(task_.score({ex.prompt, ex.answer}, task_.vocab().decode(c.tokens)));
        }
        return rewards;
    }

private:
    const model::Task& task_;
};

class BuiltinJobTask final : public JobTask {
public:
    explicit BuiltinJobTask(std::unique_ptr<model::Task> task) : task_(std::move(task)) {}
    TextExample example(uint64_t index) const override {
        model::Example ex = task_->example(index);
        return {"", std::move(ex.prompt), std::move(ex.answer)};
    }
    Result<std::vector<int32_t>> prompt_tokens(const TextExample& ex) const override {
        return task_->prompt_tokens({ex.prompt, ex.answer});
    }
    Result<std::vector<int32_t>> answer_tokens(const TextExample& ex) const override {
        TANDEM_ASSIGN_OR_RETURN(auto ids, task_->vocab().encode(ex.answer));
        ids.push_back(model::Vocabulary::kEos);
        return ids;
    }
    int max_prompt_tokens() const override { return task_->max_prompt_tokens(); }
    int vocab_size() const override { return task_->vocab().size(); }
    int32_t eos_token() const override { return model::Vocabulary::kEos; }
    std::vector<int32_t> stop_tokens() const override { return {model::Vocabulary::kEos}; }
    const model::Vocabulary* vocab() const override { return &task_->vocab(); }
    Result<std::unique_ptr<TaskScorer>> make_scorer() const override {
        return std::unique_ptr<TaskScorer>(new BuiltinScorer(*task_));
    }
    const model::Task& task() const { return *task_; }

private:
    std::unique_ptr<model::Task> task_;
};

// --- text tasks --------------------------------------------------------------------------------

class TextTaskScorer final : public TaskScorer {
public:
    TextTaskScorer(const TextTask& task, std::unique_ptr<TextScorer> scorer)
        : task_(task), scorer_(std::move(scorer)) {}
    Result<std::vector<double>> score(std::span<const TextExample> examples,
                                      std::span<model::Completion> completions) override {
        std::vector<std::string> texts;
        texts.reserve(completions.size());
        for (model::Completion& c : completions) {
            StopChecker stop(task_.stop(), task_.tokenizer());
            size_t keep = c.tokens.size();
            for (size_t i = 0; i < c.tokens.size(); ++i) {
                if (stop.push(c.tokens[i]) != StopReason::kNone) {
                    keep = i + 1;
                    break;
                }
            }
            c.tokens.resize(keep);
            c.logprobs.resize(std::min(c.logprobs.size(), keep));
            texts.push_back(task_.completion_text(c.tokens));
        }
        std::vector<ScoredSample> samples;
        samples.reserve(completions.size());
        for (size_t i = 0; i < completions.size(); ++i) {
            samples.push_back({&examples[static_cast<size_t>(completions[i].prompt)], texts[i]});
        }
        return scorer_->score(samples);
    }

private:
    const TextTask& task_;
    std::unique_ptr<TextScorer> scorer_;
};

class TextJobTask final : public JobTask {
public:
    TextJobTask(std::unique_ptr<TextTask> task, int32_t eos) : task_(std::move(task)), eos_(eos) {}
    TextExample example(uint64_t index) const override { return task_->example(index); }
    Result<std::vector<int32_t>> prompt_tokens(const TextExample& ex) const override {
        return task_->prompt_tokens(ex);
    }
    Result<std::vector<int32_t>> answer_tokens(const TextExample& ex) const override {
        TANDEM_ASSIGN_OR_RETURN(auto ids, task_->tokenizer().encode(ex.answer));
        ids.push_back(eos_);
        return ids;
    }
    int max_prompt_tokens() const override { return task_->max_prompt_tokens(); }
    int vocab_size() const override { return task_->tokenizer().vocab_size(); }
    int32_t eos_token() const override { return eos_; }
    std::vector<int32_t> stop_tokens() const override { return task_->stop().eos_ids; }
    const model::Vocabulary* vocab() const override { return nullptr; }
    Result<std::unique_ptr<TaskScorer>> make_scorer() const override {
        TANDEM_ASSIGN_OR_RETURN(auto scorer, TextScorer::create(*task_));
        return std::unique_ptr<TaskScorer>(new TextTaskScorer(*task_, std::move(scorer)));
    }

private:
    std::unique_ptr<TextTask> task_;
    int32_t eos_;
};

Result<std::unique_ptr<JobTask>> make_text_task(const config::JobSpec& job) {
    TANDEM_ASSIGN_OR_RETURN(auto tok, load_task_tokenizer(job));
    std::vector<int32_t> model_eos;
    if (job.model.init != "random") {
        TANDEM_ASSIGN_OR_RETURN(model_eos, model::model_eos_ids(job.model.init));
    }
    TANDEM_ASSIGN_OR_RETURN(auto task,
                            TextTask::load(job.task, job.rollout.sampling, tok, model_eos));
    // Generation stops at every stop id (stop_tokens()); the answers of a warm start end with the
    // tokenizer's eos, else the first stop id. The scorer also cuts completions at stop strings.
    const auto& stop_ids = task->stop().eos_ids;
    const std::optional<int32_t> eos = tok->eos_id() ? tok->eos_id()
                                       : stop_ids.empty()
                                           ? std::nullopt
                                           : std::optional<int32_t>(stop_ids.front());
    if (!eos) {
        return invalid_argument(fmt::format(
            "task.tokenizer: {} has no eos_token and model.init no eos_token_id: a text task "
            "needs an end-of-sequence id",
            tok->describe()));
    }
    return std::unique_ptr<JobTask>(new TextJobTask(std::move(task), *eos));
}

}  // namespace

Result<std::unique_ptr<JobTask>> make_job_task(const config::JobSpec& job) {
    if (job.task.name == config::TaskName::kText) return make_text_task(job);
    TANDEM_ASSIGN_OR_RETURN(auto task, model::make_task(job.task));
    return std::unique_ptr<JobTask>(new BuiltinJobTask(std::move(task)));
}

Result<model::HfConfig> policy_config(const config::JobSpec& job, const JobTask& task) {
    if (job.model.init == "random") {
        TANDEM_ASSIGN_OR_RETURN(model::ModelConfig cfg,
                                model::ModelConfig::from_spec(job.model, task.vocab_size()));
        return model::HfConfig{cfg, std::nullopt};
    }
    if (init_is_config_file(job)) return model::read_hf_config(job.model.init);
    return model::read_hf_config(job.model.init + "/config.json");
}

Result<model::ModelWeights> initial_policy(const config::JobSpec& job, const JobTask& task) {
    if (job.model.init == "random" || init_is_config_file(job)) {
        TANDEM_ASSIGN_OR_RETURN(model::HfConfig cfg, policy_config(job, task));
        TANDEM_RETURN_IF_ERROR(check_policy_fits(job, cfg, task));
        return model::ModelWeights::random(cfg.model, job.model.seed);
    }
    TANDEM_ASSIGN_OR_RETURN(model::Pretrained p, model::load_pretrained(job.model.init));
    TANDEM_RETURN_IF_ERROR(check_policy_fits(job, {p.weights.config(), p.vocab}, task));
    return std::move(p.weights);
}

Status check_policy_fits(const config::JobSpec& job, const model::HfConfig& policy,
                         const JobTask& task) {
    if (const auto* builtin = dynamic_cast<const BuiltinJobTask*>(&task)) {
        return model::check_model_fits(job, policy.model, policy.vocab, builtin->task());
    }
    const model::ModelConfig& m = policy.model;
    if (m.vocab_size < task.vocab_size()) {
        return invalid_argument(
            fmt::format("model.init {}: vocab_size {} is smaller than the tokenizer's {} ids",
                        job.model.init, m.vocab_size, task.vocab_size()));
    }
    const int need = task.max_prompt_tokens() + job.rollout.sampling.max_new_tokens;
    if (need > m.max_seq_len) {
        return invalid_argument(fmt::format(
            "model.init {}: max_position_embeddings ({}) is shorter than the task's longest "
            "prompt ({} tokens) plus rollout.sampling.max_new_tokens ({})",
            job.model.init, m.max_seq_len, task.max_prompt_tokens(),
            job.rollout.sampling.max_new_tokens));
    }
    return Status();
}

}  // namespace tandem::rl
