#include "common/rl/local_loop.h"

#include <chrono>

#include "common/model/generate.h"
#include "common/model/job_setup.h"
#include "common/model/rng.h"
#include "common/model/trajectory.h"

namespace tandem::rl {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Result<JobSetup> make_job_setup(const config::JobSpec& job) {
    JobSetup s;
    TANDEM_ASSIGN_OR_RETURN(s.task, make_job_task(job));
    TANDEM_ASSIGN_OR_RETURN(s.initial, initial_policy(job, *s.task));
    TANDEM_RETURN_IF_ERROR(model::check_context_length(job, s.task->max_prompt_tokens()));
    return s;
}

Result<std::vector<LocalStep>> run_local_grpo(const config::JobSpec& job,
                                              const LocalLoopOptions& options) {
    TANDEM_ASSIGN_OR_RETURN(JobSetup setup, make_job_setup(job));
    const JobTask& task = *setup.task;
    model::ModelWeights initial = std::move(setup.initial);
    const model::ModelConfig cfg = initial.config();
    const int steps = options.steps > 0 ? options.steps : job.algorithm.steps;
    uint64_t cursor = 0;  // the next example, as the actors' batches advance through the task
    const int P = job.algorithm.prompts_per_step, G = job.algorithm.group_size;
    if (options.supervised_steps > 0) {
        model::TrainerOptions so = model::TrainerOptions::from_job(job);
        so.algorithm.steps = options.supervised_steps;
        if (options.supervised_lr > 0) so.algorithm.optimizer.lr = options.supervised_lr;
        TANDEM_ASSIGN_OR_RETURN(auto warm, model::GrpoTrainer::create(std::move(initial), so));
        std::vector<model::Trajectory> answers(static_cast<size_t>(P * G));
        for (int k = options.supervised_steps; k > 0; --k) {
            const auto t0 = std::chrono::steady_clock::now();
            for (auto& t : answers) {
                const TextExample ex = task.example(cursor++);
                TANDEM_ASSIGN_OR_RETURN(t.prompt, task.prompt_tokens(ex));
                TANDEM_ASSIGN_OR_RETURN(t.completion, task.answer_tokens(ex));
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
    TANDEM_ASSIGN_OR_RETURN(
        auto trainer,
        model::GrpoTrainer::create(std::move(initial), model::TrainerOptions::from_job(job)));
    model::GeneratorOptions go = model::GeneratorOptions::from_job(job);
    go.eos_token = task.eos_token();
    go.stop_tokens = task.stop_tokens();
    TANDEM_ASSIGN_OR_RETURN(auto generator, model::GroupGenerator::create(cfg, go));
    TANDEM_ASSIGN_OR_RETURN(auto scorer, task.make_scorer());
    std::vector<TextExample> examples(static_cast<size_t>(P));
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(P));
    std::vector<model::Trajectory> batch;
    std::vector<LocalStep> out;
    for (int step = 1; step <= steps; ++step) {
        const auto t_step = std::chrono::steady_clock::now();
        LocalStep ls;
        ls.step = step;
        const uint64_t first_group = cursor;
        for (int p = 0; p < P; ++p) {
            examples[p] = task.example(cursor++);
            TANDEM_ASSIGN_OR_RETURN(prompts[p], task.prompt_tokens(examples[p]));
        }
        model::SamplingOptions so = model::SamplingOptions::from_spec(
            job.rollout.sampling, model::mix_seed(job.task.seed, 0x726f6c6c, step));
        model::GenerateStats gs;
        TANDEM_ASSIGN_OR_RETURN(auto completions,
                                generator.generate(trainer->weights().data(), prompts, G, so, &gs));
        // The scorer cuts each completion at its stop condition before the trainer sees it.
        TANDEM_ASSIGN_OR_RETURN(auto rewards, scorer->score(examples, completions));
        batch.clear();
        double reward_sum = 0;
        for (size_t i = 0; i < completions.size(); ++i) {
            model::Completion& c = completions[i];
            model::Trajectory t;
            t.prompt = prompts[c.prompt];
            t.reward = rewards[i];
            t.completion = std::move(c.tokens);
            t.behaviour_logprobs = std::move(c.logprobs);
            t.group = first_group + static_cast<uint64_t>(c.prompt);
            t.version = trainer->steps_taken();
            reward_sum += t.reward;
            batch.push_back(std::move(t));
        }
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

}  // namespace tandem::rl
