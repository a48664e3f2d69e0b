#include "common/model/local_loop.h"

#include <chrono>

#include "common/model/generate.h"
#include "common/model/job_setup.h"
#include "common/model/rng.h"
#include "common/model/tasks.h"

namespace tandem::model {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Result<std::vector<LocalStep>> run_local_grpo(const config::JobSpec& job,
                                              const LocalLoopOptions& options) {
    TANDEM_ASSIGN_OR_RETURN(JobSetup setup, make_job_setup(job));
    const Task& task = *setup.task;
    ModelWeights initial = std::move(setup.initial);
    const ModelConfig cfg = initial.config();
    const int steps = options.steps > 0 ? options.steps : job.algorithm.steps;
    TaskStream stream(&task);
    const int P = job.algorithm.prompts_per_step, G = job.algorithm.group_size;
    if (options.supervised_steps > 0) {
        TrainerOptions so = TrainerOptions::from_job(job);
        so.algorithm.steps = options.supervised_steps;
        if (options.supervised_lr > 0) so.algorithm.optimizer.lr = options.supervised_lr;
        TANDEM_ASSIGN_OR_RETURN(auto warm, GrpoTrainer::create(std::move(initial), so));
        std::vector<Trajectory> answers(static_cast<size_t>(P * G));
        for (int k = options.supervised_steps; k > 0; --k) {
            const auto t0 = std::chrono::steady_clock::now();
            for (auto& t : answers) {
                const Example ex = stream.next();
                TANDEM_ASSIGN_OR_RETURN(t.prompt, task.prompt_tokens(ex));
                TANDEM_ASSIGN_OR_RETURN(t.completion, task.vocab().encode(ex.answer));
                t.completion.push_back(Vocabulary::kEos);
                t.behaviour_logprobs.assign(t.completion.size(), 0.0f);
            }
            LocalStep ls;
            ls.step = -k;
            TANDEM_ASSIGN_OR_RETURN(ls.train, warm->supervised_step(answers));
            ls.train_s = ls.step_s = seconds_since(t0);
            if (options.on_supervised_step) options.on_supervised_step(ls);
        }
        initial = warm->weights();
    }
    TANDEM_ASSIGN_OR_RETURN(auto trainer,
                            GrpoTrainer::create(std::move(initial), TrainerOptions::from_job(job)));
    TANDEM_ASSIGN_OR_RETURN(auto generator,
                            GroupGenerator::create(cfg, GeneratorOptions::from_job(job)));
    std::vector<Example> examples(static_cast<size_t>(P));
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(P));
    std::vector<Trajectory> batch;
    std::vector<LocalStep> out;
    for (int step = 1; step <= steps; ++step) {
        const auto t_step = std::chrono::steady_clock::now();
        LocalStep ls;
        ls.step = step;
        for (int p = 0; p < P; ++p) {
            examples[p] = stream.next();
            TANDEM_ASSIGN_OR_RETURN(prompts[p], task.prompt_tokens(examples[p]));
        }
        SamplingOptions so = SamplingOptions::from_spec(job.rollout.sampling,
                                                        mix_seed(job.task.seed, 0x726f6c6c, step));
        GenerateStats gs;
        TANDEM_ASSIGN_OR_RETURN(auto completions,
                                generator.generate(trainer->weights().data(), prompts, G, so, &gs));
        const uint64_t first_group = stream.cursor() - static_cast<uint64_t>(P);
        batch = score_completions(task, examples, prompts, std::move(completions), first_group,
                                  trainer->steps_taken());
        double reward_sum = 0;
        for (const auto& t : batch) reward_sum += t.reward;
        ls.reward_mean = reward_sum / static_cast<double>(batch.size());
        ls.generated_tokens = gs.generated_tokens;
        ls.rollout_s = seconds_since(t_step);
        const auto t_train = std::chrono::steady_clock::now();
        TANDEM_ASSIGN_OR_RETURN(ls.train, trainer->step(batch));
        ls.train_s = seconds_since(t_train);
        ls.step_s = seconds_since(t_step);
        if (options.on_step) options.on_step(ls);
        out.push_back(ls);
    }
    return out;
}

}  // namespace tandem::model
