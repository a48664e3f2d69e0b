#include "common/gpu/device_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "common/model/grpo_batch.h"
#include "common/model/optimizer.h"
#include "kernels/cuda/ops.h"

namespace tandem::gpu {

using kernels::cuda::DeviceBuffer;
using kernels::cuda::Stream;
namespace ops = kernels::cuda;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

DeviceTrainer::~DeviceTrainer() = default;

Result<std::unique_ptr<DeviceTrainer>> DeviceTrainer::create(const model::ModelWeights& initial,
                                                             const model::TrainerOptions& options,
                                                             kernels::cuda::DeviceAllocator& alloc,
                                                             kernels::cuda::Gemm& gemm,
                                                             const Stream& s) {
    if (options.micro_batch < 1)
        return invalid_argument("device trainer: micro_batch must be >= 1");
    std::unique_ptr<DeviceTrainer> t(new DeviceTrainer(options, alloc));
    t->grpo_ = model::grpo_options(options);
    t->total_updates_ =
        static_cast<int64_t>(options.algorithm.steps) * std::max(1, options.mini_batches);
    TANDEM_ASSIGN_OR_RETURN(t->policy_, DeviceModel::create(initial.config(), alloc, gemm, s));
    if (static_cast<int64_t>(t->policy_->index().elements) != initial.elements()) {
        return invalid_argument(
            fmt::format("device trainer: the weights hold {} values, their config's layout {}",
                        initial.elements(), t->policy_->index().elements));
    }
    TANDEM_RETURN_IF_ERROR(t->policy_->load(s, initial.data()));
    if (options.algorithm.kl_coef > 0) {
        TANDEM_ASSIGN_OR_RETURN(t->reference_,
                                DeviceModel::create(initial.config(), alloc, gemm, s));
        TANDEM_RETURN_IF_ERROR(t->reference_->load(s, initial.data()));
    }
    const model::ParamIndex& index = t->policy_->index();
    const size_t bytes = static_cast<size_t>(index.elements) * sizeof(float);
    TANDEM_ASSIGN_OR_RETURN(t->master_, alloc.allocate(bytes, "fp32 master weights"));
    TANDEM_ASSIGN_OR_RETURN(t->grads_, alloc.allocate(bytes, "fp32 gradients"));
    TANDEM_ASSIGN_OR_RETURN(t->m_, alloc.allocate(bytes, "AdamW first moments"));
    TANDEM_ASSIGN_OR_RETURN(t->v_, alloc.allocate(bytes, "AdamW second moments"));
    TANDEM_ASSIGN_OR_RETURN(t->sum_sq_, alloc.allocate(sizeof(double), "gradient sum of squares"));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, t->master_.as(), initial.data(), bytes));
    TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, t->m_.as(), bytes));
    TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, t->v_.as(), bytes));
    TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, t->grads_.as(), bytes));
    // Weight decay on the 2-D weights only (index.matrices), as model::AdamW.
    std::vector<std::pair<uint64_t, uint64_t>> decay = index.matrices;
    std::sort(decay.begin(), decay.end());
    uint64_t at = 0;
    for (const auto& [b, e] : decay) {
        if (b > at) t->plain_ranges_.emplace_back(at, b);
        at = std::max(at, e);
    }
    if (at < index.elements) t->plain_ranges_.emplace_back(at, index.elements);
    t->decay_ranges_ = std::move(decay);
    // The host buffer is pageable: the copies above are staged before they return.
    TANDEM_RETURN_IF_ERROR(s.synchronize("device trainer setup"));
    return t;
}

Result<std::pair<double, double>> DeviceTrainer::update(const Stream& s) {
    const config::OptimizerSpec& spec = options_.algorithm.optimizer;
    const int64_t elements = static_cast<int64_t>(index().elements);
    TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, sum_sq_.as(), sizeof(double)));
    TANDEM_RETURN_IF_ERROR(
        ops::sum_squares(s, elements, grads_.as<const float>(), sum_sq_.as<double>()));
    const double lr = model::learning_rate(spec, updates_, total_updates_);
    ++updates_;
    ops::AdamWStep a;
    a.lr = static_cast<float>(lr);
    a.beta1 = static_cast<float>(spec.beta1);
    a.beta2 = static_cast<float>(spec.beta2);
    a.eps = static_cast<float>(spec.eps);
    a.bias_correction1 =
        static_cast<float>(1.0 / (1.0 - std::pow(spec.beta1, static_cast<double>(updates_))));
    a.bias_correction2 =
        static_cast<float>(1.0 / (1.0 - std::pow(spec.beta2, static_cast<double>(updates_))));
    a.weight_decay = static_cast<float>(spec.weight_decay);
    a.max_grad_norm = spec.grad_clip;
    for (const bool decay : {true, false}) {
        for (const auto& [b, e] : decay ? decay_ranges_ : plain_ranges_) {
            const int64_t count = static_cast<int64_t>(e - b);
            TANDEM_RETURN_IF_ERROR(
                ops::adamw_update(s, count, master_.as<float>() + b, grads_.as<const float>() + b,
                                  m_.as<float>() + b, v_.as<float>() + b, a, decay,
                                  sum_sq_.as<const double>(), policy_->weights_bf16() + b));
        }
    }
    double sum_sq = 0;
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, &sum_sq, sum_sq_.as(), sizeof(double)));
    TANDEM_RETURN_IF_ERROR(s.synchronize("device trainer update"));
    return std::make_pair(std::sqrt(sum_sq), lr);
}

Result<model::TrainStats> DeviceTrainer::supervised_step(const Stream& s,
                                                         std::span<const model::Trajectory> batch) {
    model::TrainStats st;
    int64_t total_tokens = 0;
    TANDEM_RETURN_IF_ERROR(
        model::validate_trajectories(batch, policy_->config(), st, total_tokens));
    const float w = -1.0f / static_cast<float>(total_tokens);
    const size_t micro = static_cast<size_t>(options_.micro_batch);
    TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, grads_.as(), grads_.bytes()));
    for (size_t b0 = 0; b0 < batch.size(); b0 += micro) {
        const size_t b1 = std::min(batch.size(), b0 + micro);
        model::pack_trajectories(batch, b0, b1, options_.share_prompts, packed_, completion_begin_);
        const size_t n = static_cast<size_t>(packed_.num_tokens());
        logp_.resize(n);
        entropy_.resize(n);
        weight_.assign(n, 0.0f);
        auto t0 = std::chrono::steady_clock::now();
        TANDEM_RETURN_IF_ERROR(
            policy_->train_forward(s, packed_, grpo_.temperature, logp_.data(), entropy_.data()));
        st.forward_s += seconds_since(t0);
        for (size_t i = b0; i < b1; ++i) {
            const int64_t base = completion_begin_[i - b0];
            for (size_t j = 0; j < batch[i].completion.size(); ++j) {
                const size_t idx = static_cast<size_t>(base) + j;
                weight_[idx] = w;
                st.loss -= logp_[idx] / static_cast<double>(total_tokens);
                st.entropy += entropy_[idx] / static_cast<double>(total_tokens);
            }
        }
        t0 = std::chrono::steady_clock::now();
        TANDEM_RETURN_IF_ERROR(policy_->backward(s, weight_.data(), grads_.as<float>()));
        TANDEM_RETURN_IF_ERROR(s.synchronize("device trainer supervised backward"));
        st.backward_s += seconds_since(t0);
    }
    policy_->release_activations();
    const auto t0 = std::chrono::steady_clock::now();
    TANDEM_ASSIGN_OR_RETURN(const auto norm_lr, update(s));
    st.optimizer_s = seconds_since(t0);
    st.grad_norm = norm_lr.first;
    st.lr = norm_lr.second;
    st.updates = 1;
    st.step = ++steps_;
    return st;
}

Result<model::TrainStats> DeviceTrainer::step(const Stream& s,
                                              std::span<const model::Trajectory> batch) {
    model::TrainStats st;
    int64_t total_tokens = 0;
    TANDEM_RETURN_IF_ERROR(
        model::validate_trajectories(batch, policy_->config(), st, total_tokens));
    const std::vector<double> adv =
        model::trajectory_advantages(batch, options_.scale_advantages_by_std, st);
    model::GrpoTokenCounts counts;
    const size_t bytes = static_cast<size_t>(index().elements) * sizeof(float);
    const size_t mb = static_cast<size_t>(std::max(1, options_.mini_batches));
    const size_t micro = static_cast<size_t>(options_.micro_batch);
    // Truncated importance sampling with several updates: the later mini-batches' log-probs
    // before the first update (model::OldLogprobs).
    model::OldLogprobs old;
    if (grpo_.tis_cap > 0 && mb > 1) {
        const auto t0 = std::chrono::steady_clock::now();
        for (size_t b0 = batch.size() / mb; b0 < batch.size(); b0 += micro) {
            const size_t b1 = std::min(batch.size(), b0 + micro);
            model::pack_trajectories(batch, b0, b1, options_.share_prompts, packed_,
                                     completion_begin_);
            logp_.resize(static_cast<size_t>(packed_.num_tokens()));
            TANDEM_RETURN_IF_ERROR(
                policy_->logprobs(s, packed_, grpo_.temperature, logp_.data(), nullptr));
            model::keep_old_logprobs(batch, b0, b1, completion_begin_, logp_.data(), old);
        }
        st.forward_s += seconds_since(t0);
    }
    for (size_t m = 0; m < mb; ++m) {
        const size_t m0 = batch.size() * m / mb, m1 = batch.size() * (m + 1) / mb;
        if (m0 == m1) continue;
        int64_t mb_tokens = 0;
        for (size_t i = m0; i < m1; ++i) {
            mb_tokens += static_cast<int64_t>(batch[i].completion.size());
        }
        TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, grads_.as(), bytes));
        for (size_t b0 = m0; b0 < m1; b0 += micro) {
            const size_t b1 = std::min(m1, b0 + micro);
            model::pack_trajectories(batch, b0, b1, options_.share_prompts, packed_,
                                     completion_begin_);
            const size_t n = static_cast<size_t>(packed_.num_tokens());
            logp_.resize(n);
            entropy_.resize(n);
            weight_.assign(n, 0.0f);
            auto t0 = std::chrono::steady_clock::now();
            TANDEM_RETURN_IF_ERROR(policy_->train_forward(s, packed_, grpo_.temperature,
                                                          logp_.data(), entropy_.data()));
            if (reference_) {
                ref_logp_.resize(n);
                TANDEM_RETURN_IF_ERROR(
                    reference_->logprobs(s, packed_, grpo_.temperature, ref_logp_.data(), nullptr));
            }
            st.forward_s += seconds_since(t0);
            model::score_grpo_tokens(batch, b0, b1, completion_begin_, logp_.data(),
                                     reference_ ? ref_logp_.data() : nullptr, entropy_.data(), old,
                                     adv, grpo_, mb_tokens, total_tokens, weight_.data(), st,
                                     counts);
            t0 = std::chrono::steady_clock::now();
            TANDEM_RETURN_IF_ERROR(policy_->backward(s, weight_.data(), grads_.as<float>()));
            TANDEM_RETURN_IF_ERROR(s.synchronize("device trainer backward"));
            st.backward_s += seconds_since(t0);
        }
        policy_->release_activations();
        const auto t0 = std::chrono::steady_clock::now();
        TANDEM_ASSIGN_OR_RETURN(const auto norm_lr, update(s));
        st.optimizer_s += seconds_since(t0);
        st.grad_norm += norm_lr.first / static_cast<double>(mb);
        st.lr = norm_lr.second;
        ++st.updates;
    }
    st.step = ++steps_;
    model::finish_grpo_stats(batch.size(), counts, st);
    return st;
}

Status DeviceTrainer::download_weights(const Stream& s, float* out) const {
    if (!out) return invalid_argument("device trainer: weights into a null buffer");
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, out, master_.as(), master_.bytes()));
    return s.synchronize("device trainer weights");
}

Status DeviceTrainer::download_moments(const Stream& s, float* exp_avg, float* exp_avg_sq) const {
    if (!exp_avg || !exp_avg_sq)
        return invalid_argument("device trainer: moments into a null buffer");
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, exp_avg, m_.as(), m_.bytes()));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, exp_avg_sq, v_.as(), v_.bytes()));
    return s.synchronize("device trainer moments");
}

Status DeviceTrainer::download_gradients(const Stream& s, float* out) const {
    if (!out) return invalid_argument("device trainer: gradients into a null buffer");
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, out, grads_.as(), grads_.bytes()));
    return s.synchronize("device trainer gradients");
}

}  // namespace tandem::gpu
