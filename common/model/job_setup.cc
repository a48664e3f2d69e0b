#include "common/model/job_setup.h"

#include <fmt/format.h>

namespace tandem::model {

Result<JobSetup> make_job_setup(const config::JobSpec& job) {
    if (job.task.name == config::TaskName::kText) {
        return invalid_argument(fmt::format(
            "job {}: task.name text needs its tokenizer: model::make_job_setup covers the "
            "built-in and jsonl tasks; use rl::make_job_setup (common/rl/local_loop.h), which "
            "covers every task kind",
            job.name));
    }
    JobSetup s;
    TANDEM_ASSIGN_OR_RETURN(s.task, make_task(job.task));
    const Vocabulary& vocab = s.task->vocab();
    if (job.model.init == "random") {
        TANDEM_ASSIGN_OR_RETURN(ModelConfig cfg, ModelConfig::from_spec(job.model, vocab.size()));
        TANDEM_RETURN_IF_ERROR(check_model_fits(job, cfg, std::nullopt, *s.task));
        TANDEM_ASSIGN_OR_RETURN(s.initial, ModelWeights::random(cfg, job.model.seed));
    } else {
        TANDEM_ASSIGN_OR_RETURN(Pretrained p, load_pretrained(job.model.init));
        TANDEM_RETURN_IF_ERROR(check_model_fits(job, p.weights.config(), p.vocab, *s.task));
        s.initial = std::move(p.weights);
    }
    TANDEM_RETURN_IF_ERROR(check_context_length(job, s.task->max_prompt_tokens()));
    return s;
}

Status check_model_fits(const config::JobSpec& job, const ModelConfig& model,
                        const std::optional<Vocabulary>& model_vocab, const Task& task) {
    const Vocabulary& vocab = task.vocab();
    if (model_vocab && !(*model_vocab == vocab)) {
        return invalid_argument(
            fmt::format("model.init {}: its vocabulary \"{}\" is not the task's \"{}\"",
                        job.model.init, model_vocab->charset(), vocab.charset()));
    }
    if (model.vocab_size != vocab.size()) {
        return invalid_argument(fmt::format("model.init {}: vocab_size {} but the task has {}",
                                            job.model.init, model.vocab_size, vocab.size()));
    }
    const int need = task.max_prompt_tokens() + job.rollout.sampling.max_new_tokens;
    if (need > model.max_seq_len) {
        return invalid_argument(fmt::format(
            "model.max_seq_len ({}) is shorter than the task's longest prompt ({} tokens) plus "
            "rollout.sampling.max_new_tokens ({})",
            model.max_seq_len, task.max_prompt_tokens(), job.rollout.sampling.max_new_tokens));
    }
    return Status();
}

Status check_context_length(const config::JobSpec& job, int max_prompt_tokens) {
    const auto& r = job.rollout;
    const int64_t need = static_cast<int64_t>(max_prompt_tokens) + r.sampling.max_new_tokens;
    const int64_t room = static_cast<int64_t>(r.context_parallel) * r.max_tokens_per_device;
    if (need > room) {
        return invalid_argument(fmt::format(
            "job {}: the longest context ({} prompt tokens + rollout.sampling.max_new_tokens {} = "
            "{}) does not fit rollout.context_parallel ({}) x rollout.max_tokens_per_device ({}) "
            "= {}",
            job.name, max_prompt_tokens, r.sampling.max_new_tokens, need, r.context_parallel,
            r.max_tokens_per_device, room));
    }
    return Status();
}

}  // namespace tandem::model
