#include "cli/job_checks.h"

#include <cstdint>

#include <fmt/format.h>

#include "common/model/config.h"
#include "common/model/job_setup.h"
#include "common/model/tasks.h"
#include "common/rl/task_factory.h"

namespace tandem::cli {

namespace {

// What make_job_setup and the rollout actor's start reject, checked from the job file: loads the
// task (errors name the dataset file and line) and checks the longest context against both
// limits. Returns every error, each prefixed with `file`; on success sets `summary` to one line
// with the figures.
std::vector<std::string> check_grpo_limits(const config::JobSpec& job, const std::string& file,
                                           std::string& summary) {
    auto task = rl::make_job_task(job);
    if (!task.ok()) return {fmt::format("{}: task: {}", file, task.status().message())};
    const int prompt = (*task)->max_prompt_tokens();
    const auto& r = job.rollout;
    const int64_t need = static_cast<int64_t>(prompt) + r.sampling.max_new_tokens;
    std::vector<std::string> errors;
    auto policy = rl::policy_config(job, **task);
    if (!policy.ok()) {
        errors.push_back(fmt::format("{}: {}", file, policy.status().message()));
    } else if (Status s = rl::check_policy_fits(job, *policy, **task); !s.ok()) {
        errors.push_back(fmt::format("{}: {}", file, s.message()));
    }
    if (Status s = model::check_context_length(job, prompt); !s.ok()) {
        errors.push_back(fmt::format("{}: {}", file, s.message()));
    }
    // On cuda each context-parallel rank takes a GPU of the rollout's own (docs/gpu.md); the
    // actor refuses fewer when it starts.
    if (r.device == config::ComputeDevice::kCuda && r.context_parallel > r.resources.gpus) {
        errors.push_back(
            fmt::format("{}: job {}: rollout.device cuda with rollout.context_parallel {} needs "
                        "rollout.resources.gpus >= {} (one GPU per rank), got {}",
                        file, job.name, r.context_parallel, r.context_parallel, r.resources.gpus));
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
