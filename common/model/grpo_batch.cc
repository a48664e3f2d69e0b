#include "common/model/grpo_batch.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace tandem::model {

GrpoOptions grpo_options(const TrainerOptions& options) {
    GrpoOptions o;
    o.clip_eps = options.algorithm.clip_eps;
    o.kl_coef = options.algorithm.kl_coef;
    o.tis_cap = options.algorithm.tis_cap;
    o.temperature = options.temperature > 0 ? options.temperature : 1.0;
    return o;
}

Status validate_trajectories(std::span<const Trajectory> batch, const ModelConfig& c,
                             TrainStats& st, int64_t& total_tokens) {
    if (batch.empty()) return invalid_argument("trainer: empty batch");
    total_tokens = 0;
    st.reward_min = std::numeric_limits<double>::infinity();
    st.reward_max = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < batch.size(); ++i) {
        const Trajectory& t = batch[i];
        if (t.prompt.empty() || t.completion.empty() ||
            t.behaviour_logprobs.size() != t.completion.size()) {
            return invalid_argument(fmt::format(
                "trainer: trajectory {} (group {}) has {} prompt tokens, {} completion tokens "
                "and {} behaviour log-probs",
                i, t.group, t.prompt.size(), t.completion.size(), t.behaviour_logprobs.size()));
        }
        if (static_cast<int64_t>(t.prompt.size() + t.completion.size()) > c.max_seq_len) {
            return invalid_argument(fmt::format(
                "trainer: trajectory {} is longer than max_seq_len {}", i, c.max_seq_len));
        }
        total_tokens += static_cast<int64_t>(t.completion.size());
        st.reward_mean += t.reward;
        st.reward_min = std::min(st.reward_min, t.reward);
        st.reward_max = std::max(st.reward_max, t.reward);
    }
    st.reward_mean /= static_cast<double>(batch.size());
    st.sequences = static_cast<int64_t>(batch.size());
    st.tokens = total_tokens;
    st.response_length_mean = static_cast<double>(total_tokens) / static_cast<double>(batch.size());
    return Status();
}

std::vector<double> trajectory_advantages(std::span<const Trajectory> batch, bool scale_by_std,
                                          TrainStats& st) {
    std::vector<double> rewards(batch.size());
    std::vector<uint64_t> groups(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
        rewards[i] = batch[i].reward;
        groups[i] = batch[i].group;
    }
    std::vector<double> adv = group_advantages(rewards, groups, 1e-6, scale_by_std);
    for (const double a : adv) st.advantage_abs_mean += std::abs(a);
    return adv;
}

void pack_trajectories(std::span<const Trajectory> batch, size_t b0, size_t b1, bool share_prompts,
                       PackedBatch& packed, std::vector<int64_t>& completion_begin) {
    packed.clear();
    completion_begin.clear();
    int64_t prefix = PackedBatch::kNoPrefix;
    for (size_t i = b0; i < b1; ++i) {
        const Trajectory& t = batch[i];
        if (!share_prompts) {
            packed.add(t.prompt, t.completion);
            completion_begin.push_back(packed.begin.back() -
                                       static_cast<int64_t>(t.completion.size()));
            continue;
        }
        if (prefix == PackedBatch::kNoPrefix ||
            !std::ranges::equal(batch[i - 1].prompt, t.prompt)) {
            prefix = packed.add_prefix(t.prompt);
        }
        const int64_t s = packed.add_continuation(prefix, t.completion);
        completion_begin.push_back(packed.begin[s]);
    }
}

void keep_old_logprobs(std::span<const Trajectory> batch, size_t b0, size_t b1,
                       std::span<const int64_t> completion_begin, const float* logp,
                       OldLogprobs& old) {
    old.resize(batch.size());
    for (size_t i = b0; i < b1; ++i) {
        const float* first = logp + completion_begin[i - b0];
        old[i].assign(first, first + batch[i].completion.size());
    }
}

void score_grpo_tokens(std::span<const Trajectory> batch, size_t b0, size_t b1,
                       std::span<const int64_t> completion_begin, const float* logp,
                       const float* ref_logp, const float* entropy, const OldLogprobs& old,
                       std::span<const double> adv, const GrpoOptions& grpo, int64_t mb_tokens,
                       int64_t total_tokens, float* weight, TrainStats& st,
                       GrpoTokenCounts& counts) {
    const double scale = 1.0 / static_cast<double>(mb_tokens);
    for (size_t i = b0; i < b1; ++i) {
        const Trajectory& t = batch[i];
        const int64_t base = completion_begin[i - b0];
        for (size_t j = 0; j < t.completion.size(); ++j) {
            const int64_t idx = base + static_cast<int64_t>(j);
            const double lp = logp[idx];
            const double ref = ref_logp ? ref_logp[idx] : lp;
            const double old_lp = i < old.size() && !old[i].empty() ? old[i][j] : lp;
            const TokenLoss tl =
                grpo_token_loss(lp, old_lp, t.behaviour_logprobs[j], ref, adv[i], grpo, scale);
            weight[idx] = static_cast<float>(tl.weight);
            // Loss and KL are token means over the batch: mini-batch means weighted by their
            // share of the tokens.
            st.loss += tl.loss * static_cast<double>(mb_tokens) / total_tokens;
            st.kl += tl.kl;
            st.entropy += entropy[idx];
            st.ratio_mean += tl.ratio;
            st.ratio_max = std::max(st.ratio_max, tl.ratio);
            st.logprob_diff_max =
                std::max(st.logprob_diff_max, std::abs(lp - t.behaviour_logprobs[j]));
            counts.clipped += tl.clipped;
            counts.tis_truncated += tl.tis_truncated;
            counts.tis_weight_sum += tl.tis_weight;
            ++counts.evaluated;
        }
    }
}

void finish_grpo_stats(size_t trajectories, const GrpoTokenCounts& counts, TrainStats& st) {
    const double ns = static_cast<double>(trajectories);
    const double ne = static_cast<double>(std::max<int64_t>(counts.evaluated, 1));
    st.kl /= ne;
    st.entropy /= ne;
    st.ratio_mean /= ne;
    st.clip_fraction = static_cast<double>(counts.clipped) / ne;
    st.tis_weight_mean = counts.tis_weight_sum / ne;
    st.tis_truncated_fraction = static_cast<double>(counts.tis_truncated) / ne;
    st.advantage_abs_mean /= ns;
}

}  // namespace tandem::model
