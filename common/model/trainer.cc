#include "common/model/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "common/model/grpo_batch.h"

namespace tandem::model {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TrainerOptions TrainerOptions::from_job(const config::JobSpec& job) {
    TrainerOptions o;
    o.algorithm = job.algorithm;
    o.temperature = job.rollout.sampling.temperature;
    o.micro_batch = job.trainer.micro_batch;
    o.share_prompts = job.trainer.share_prompts;
    // Tokenizer files go beside every checkpoint: from the task's tokenizer directory (text
    // tasks), else from model.init when that is a model directory (not "random" or a config.json).
    std::error_code ec;
    if (!job.task.tokenizer.empty()) {
        o.side_files_from = job.task.tokenizer;
    } else if (job.model.init != "random" && std::filesystem::is_directory(job.model.init, ec)) {
        o.side_files_from = job.model.init;
    }
    return o;
}

GrpoTrainer::GrpoTrainer(ModelWeights weights, Transformer<float> policy,
                         const TrainerOptions& options)
    : options_(options),
      weights_(std::move(weights)),
      grads_(static_cast<size_t>(weights_.elements()), 0.0f),
      policy_(std::move(policy)),
      optimizer_(
          options.algorithm.optimizer, weights_.index(),
          static_cast<int64_t>(options.algorithm.steps) * std::max(1, options.mini_batches)) {
    grpo_ = grpo_options(options);
}

Result<std::unique_ptr<GrpoTrainer>> GrpoTrainer::create(ModelWeights initial,
                                                         const TrainerOptions& options) {
    if (options.micro_batch < 1) return invalid_argument("trainer: micro_batch must be >= 1");
    TANDEM_ASSIGN_OR_RETURN(auto policy, Transformer<float>::create(initial.config()));
    std::unique_ptr<ModelWeights> reference;
    std::unique_ptr<Transformer<float>> reference_model;
    if (options.algorithm.kl_coef > 0) {
        reference = std::make_unique<ModelWeights>(initial);
        TANDEM_ASSIGN_OR_RETURN(auto rm, Transformer<float>::create(initial.config()));
        reference_model = std::make_unique<Transformer<float>>(std::move(rm));
    }
    std::unique_ptr<GrpoTrainer> t(new GrpoTrainer(std::move(initial), std::move(policy), options));
    t->reference_ = std::move(reference);
    t->reference_model_ = std::move(reference_model);
    return t;
}

Status GrpoTrainer::validate(std::span<const Trajectory> batch, TrainStats& st,
                             int64_t& total_tokens) const {
    return validate_trajectories(batch, weights_.config(), st, total_tokens);
}

void GrpoTrainer::pack(std::span<const Trajectory> batch, size_t b0, size_t b1) {
    pack_trajectories(batch, b0, b1, options_.share_prompts, packed_, completion_begin_);
}

Result<TrainStats> GrpoTrainer::supervised_step(std::span<const Trajectory> batch) {
    TrainStats st;
    int64_t total_tokens = 0;
    TANDEM_RETURN_IF_ERROR(validate(batch, st, total_tokens));
    const float w = -1.0f / static_cast<float>(total_tokens);
    std::fill(grads_.begin(), grads_.end(), 0.0f);
    for (size_t b0 = 0; b0 < batch.size(); b0 += static_cast<size_t>(options_.micro_batch)) {
        const size_t b1 = std::min(batch.size(), b0 + static_cast<size_t>(options_.micro_batch));
        pack(batch, b0, b1);
        const size_t n = static_cast<size_t>(packed_.num_tokens());
        logp_.resize(n);
        entropy_.resize(n);
        weight_.assign(n, 0.0f);
        auto t0 = std::chrono::steady_clock::now();
        TANDEM_RETURN_IF_ERROR(policy_.forward(weights_.data(), packed_, grpo_.temperature,
                                               logp_.data(), entropy_.data()));
        st.forward_s += seconds_since(t0);
        for (size_t i = b0; i < b1; ++i) {
            const int64_t base = completion_begin_[i - b0];
            for (size_t j = 0; j < batch[i].completion.size(); ++j) {
                const int64_t idx = base + static_cast<int64_t>(j);
                weight_[idx] = w;
                st.loss -= logp_[idx] / static_cast<double>(total_tokens);
                st.entropy += entropy_[idx] / static_cast<double>(total_tokens);
            }
        }
        t0 = std::chrono::steady_clock::now();
        TANDEM_RETURN_IF_ERROR(policy_.backward(weights_.data(), weight_.data(), grads_.data()));
        st.backward_s += seconds_since(t0);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const AdamW::StepResult r = optimizer_.step(weights_.data(), grads_.data());
    st.optimizer_s = seconds_since(t0);
    st.grad_norm = r.grad_norm;
    st.lr = r.lr;
    st.updates = 1;
    st.step = ++steps_;
    return st;
}

Result<TrainStats> GrpoTrainer::step(std::span<const Trajectory> batch) {
    TrainStats st;
    int64_t total_tokens = 0;
    TANDEM_RETURN_IF_ERROR(validate(batch, st, total_tokens));
    const std::vector<double> adv =
        trajectory_advantages(batch, options_.scale_advantages_by_std, st);
    GrpoTokenCounts counts;
    const size_t mb = static_cast<size_t>(std::max(1, options_.mini_batches));
    // Truncated importance sampling with several updates: the later mini-batches' log-probs
    // before the first update (the first mini-batch recomputes them before its update anyway).
    OldLogprobs old;
    if (grpo_.tis_cap > 0 && mb > 1) {
        const auto t0 = std::chrono::steady_clock::now();
        const size_t micro = static_cast<size_t>(options_.micro_batch);
        for (size_t b0 = batch.size() / mb; b0 < batch.size(); b0 += micro) {
            const size_t b1 = std::min(batch.size(), b0 + micro);
            pack(batch, b0, b1);
            logp_.resize(static_cast<size_t>(packed_.num_tokens()));
            TANDEM_RETURN_IF_ERROR(policy_.forward(weights_.data(), packed_, grpo_.temperature,
                                                   logp_.data(), nullptr));
            keep_old_logprobs(batch, b0, b1, completion_begin_, logp_.data(), old);
        }
        st.forward_s += seconds_since(t0);
    }
    for (size_t m = 0; m < mb; ++m) {
        const size_t m0 = batch.size() * m / mb, m1 = batch.size() * (m + 1) / mb;
        if (m0 == m1) continue;
        int64_t mb_tokens = 0;
        for (size_t i = m0; i < m1; ++i)
            mb_tokens += static_cast<int64_t>(batch[i].completion.size());
        std::fill(grads_.begin(), grads_.end(), 0.0f);
        for (size_t b0 = m0; b0 < m1; b0 += static_cast<size_t>(options_.micro_batch)) {
            const size_t b1 = std::min(m1, b0 + static_cast<size_t>(options_.micro_batch));
            pack(batch, b0, b1);
            const size_t n = static_cast<size_t>(packed_.num_tokens());
            logp_.resize(n);
            entropy_.resize(n);
            weight_.assign(n, 0.0f);
            auto t0 = std::chrono::steady_clock::now();
            TANDEM_RETURN_IF_ERROR(policy_.forward(weights_.data(), packed_, grpo_.temperature,
                                                   logp_.data(), entropy_.data()));
            if (reference_model_) {
                ref_logp_.resize(n);
                TANDEM_RETURN_IF_ERROR(reference_model_->forward(
                    reference_->data(), packed_, grpo_.temperature, ref_logp_.data(), nullptr));
            }
            st.forward_s += seconds_since(t0);
            score_grpo_tokens(batch, b0, b1, completion_begin_, logp_.data(),
                              reference_model_ ? ref_logp_.data() : nullptr, entropy_.data(), old,
                              adv, grpo_, mb_tokens, total_tokens, weight_.data(), st, counts);
            t0 = std::chrono::steady_clock::now();
            TANDEM_RETURN_IF_ERROR(
                policy_.backward(weights_.data(), weight_.data(), grads_.data()));
            st.backward_s += seconds_since(t0);
        }
        const auto t0 = std::chrono::steady_clock::now();
        const AdamW::StepResult r = optimizer_.step(weights_.data(), grads_.data());
        st.optimizer_s += seconds_since(t0);
        st.grad_norm += r.grad_norm / static_cast<double>(mb);
        st.lr = r.lr;
        ++st.updates;
    }
    st.step = ++steps_;
    finish_grpo_stats(batch.size(), counts, st);
    return st;
}

Result<std::string> GrpoTrainer::save_checkpoint(const std::string& root, const TrainerState& state,
                                                 const Vocabulary* vocab) const {
    return model::save_checkpoint(root, state, weights_, vocab, optimizer_,
                                  options_.side_files_from);
}

Result<TrainerState> GrpoTrainer::restore(const std::string& path) {
    TANDEM_ASSIGN_OR_RETURN(LoadedCheckpoint ck, load_checkpoint(path));
    if (!(ck.model.weights.config() == weights_.config())) {
        return invalid_argument(
            fmt::format("{}: the checkpoint's model config differs from the "
                        "job's",
                        path));
    }
    TANDEM_RETURN_IF_ERROR(weights_.assign(ck.model.weights.bytes()));
    optimizer_.exp_avg() = std::move(ck.exp_avg);
    optimizer_.exp_avg_sq() = std::move(ck.exp_avg_sq);
    optimizer_.set_steps_taken(ck.optimizer_steps);
    steps_ = ck.state.step;
    return ck.state;
}

}  // namespace tandem::model
