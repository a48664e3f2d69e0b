#include "cli/job_checks.h"

#include <cstdint>

#include <fmt/format.h>

#include "common/model/config.h"
#include "common/model/job_setup.h"
#include "common/model/tasks.h"

namespace tandem::cli {

namespace {

// The config (and recorded vocabulary) the job's policy will have: model.* for a random init,
// otherwise model.init's config.json. No weights are made or read.
Result<model::HfConfig> policy_config(const config::JobSpec& job, const model::Vocabulary& vocab) {
    if (job.model.init == "random") {
        TANDEM_ASSIGN_OR_RETURN(model::ModelConfig cfg,
                                model::ModelConfig::from_spec(job.model, vocab.size()));
        return model::HfConfig{cfg, std::nullopt};
    }
    return model::read_hf_config(job.model.init + "/config.json");
}

// What make_job_setup and the rollout actor's start reject, checked from the job file: loads the
// task (errors name the dataset file and line) and checks the longest context against both
// limits. Returns every error, each prefixed with `file`; on success sets `summary` to one line
// with the figures.
std::vector<std::string> check_grpo_limits(const config::JobSpec& job, const std::string& file,
                                           std::string& summary) {
    auto task = model::make_task(job.task);
    if (!task.ok()) return {fmt::format("{}: task: {}", file, task.status().message())};
    const int prompt = (*task)->max_prompt_tokens();
    const auto& r = job.rollout;
    const int64_t need = static_cast<int64_t>(prompt) + r.sampling.max_new_tokens;
    std::vector<std::string> errors;
    auto policy = policy_config(job, (*task)->vocab());
    if (!policy.ok()) {
        errors.push_back(fmt::format("{}: {}", file, policy.status().message()));
    } else if (Status s = model::check_model_fits(job, policy->model, policy->vocab, **task);
               !s.ok()) {
        errors.push_back(fmt::format("{}: {}", file, s.message()));
    }
    if (Status s = model::check_context_length(job, prompt); !s.ok()) {
        errors.push_back(fmt::format("{}: {}", file, s.message()));
    }
    if (errors.empty()) {
        summary = fmt::format(
            "longest context {} ({} prompt tokens + rollout.sampling.max_new_tokens {}); "
            "rollout.context_parallel ({}) x rollout.max_tokens_per_device ({}) = {}; "
            "model.max_seq_len {}",
            need, prompt, r.sampling.max_new_tokens, r.context_parallel, r.max_tokens_per_device,
            static_cast<int64_t>(r.context_parallel) * r.max_tokens_per_device,
            policy->model.max_seq_len);
    }
    return errors;
}

}  // namespace

Result<CheckedJob> check_job_file(const std::string& file,
                                  const std::vector<config::Override>& overrides) {
    CheckedJob out;
    TANDEM_ASSIGN_OR_RETURN(out.spec, config::load_job_file(file, overrides));
    if (out.spec.kind != config::JobKind::kGrpo) return out;
    const auto errors = check_grpo_limits(out.spec, file, out.limits);
    if (errors.empty()) return out;
    std::string text;
    for (const auto& e : errors) text += (text.empty() ? "" : "\n") + e;
    return invalid_argument(text);
}

}  // namespace tandem::cli
