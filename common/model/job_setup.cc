#include "common/model/job_setup.h"

#include <fmt/format.h>

namespace tandem::model {

Result<JobSetup> make_job_setup(const config::JobSpec& job) {
    JobSetup s;
    TANDEM_ASSIGN_OR_RETURN(s.task, make_task(job.task));
    const Vocabulary& vocab = s.task->vocab();
    if (job.model.init == "random") {
        TANDEM_ASSIGN_OR_RETURN(ModelConfig cfg, ModelConfig::from_spec(job.model, vocab.size()));
        TANDEM_ASSIGN_OR_RETURN(s.initial, ModelWeights::random(cfg, job.model.seed));
    } else {
        TANDEM_ASSIGN_OR_RETURN(Pretrained p, load_pretrained(job.model.init));
        if (p.vocab && !(*p.vocab == vocab)) {
            return invalid_argument(
                fmt::format("model.init {}: its vocabulary \"{}\" is not the task's \"{}\"",
                            job.model.init, p.vocab->charset(), vocab.charset()));
        }
        if (p.weights.config().vocab_size != vocab.size()) {
            return invalid_argument(fmt::format("model.init {}: vocab_size {} but the task has {}",
                                                job.model.init, p.weights.config().vocab_size,
                                                vocab.size()));
        }
        s.initial = std::move(p.weights);
    }
    const int need = s.task->max_prompt_tokens() + job.rollout.sampling.max_new_tokens;
    if (need > s.initial.config().max_seq_len) {
        return invalid_argument(fmt::format(
            "model.max_seq_len ({}) is shorter than the task's longest prompt ({} tokens) plus "
            "rollout.sampling.max_new_tokens ({})",
            s.initial.config().max_seq_len, s.task->max_prompt_tokens(),
            job.rollout.sampling.max_new_tokens));
    }
    return s;
}

}  // namespace tandem::model
