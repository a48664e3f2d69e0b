#pragma once

// GRPO: group-normalised advantages and the clipped-ratio policy loss with an optional KL
// penalty to a reference policy.

#include <cstdint>
#include <span>
#include <vector>

#include "common/config/job_spec.h"

namespace tandem::model {

// A_i = (r_i - mean(group)) / (std(group) + eps), population std over the trajectories that
// share groups[i]; 0 for every member of a group whose rewards are all equal (or of size 1).
// With scale_by_std false the advantage is only centred: r_i - mean(group) ("Dr. GRPO").
std::vector<double> group_advantages(std::span<const double> rewards,
                                     std::span<const uint64_t> groups, double eps = 1e-6,
                                     bool scale_by_std = true);

struct GrpoOptions {
    double clip_eps = 0.2;
    // Dual clip (Ye et al. 2020): with A < 0 the policy term is at least dual_clip * A, so a
    // token whose ratio exceeds dual_clip gets no gradient. Without it -min(ratio A, clip A)
    // grows with the ratio for A < 0: behaviour log-probs from a different sampler (a quantized
    // KV cache, stale weights) can put ratios of e^5..e^9 on single tokens, whose gradient then
    // outweighs the batch. 0: off. On-policy ratios stay near 1 and never reach it.
    double dual_clip = 3.0;
    // Truncated importance sampling (Yao et al. 2025, veRL's tis_imp_ratio_cap): with cap > 0
    // the policy term is weighted by w = min(exp(old_logp - behaviour_logp), tis_cap), a constant
    // (no gradient through it), and the PPO ratio is exp(logp - old_logp), old_logp being the
    // trainer's log-prob before the step's first update. 0: off, the ratio is exp(logp -
    // behaviour_logp) and there is no weight (bit-identical to the loss before the option).
    double tis_cap = 0.0;
    double kl_coef = 0.0;      // weight of the k3 estimator of KL(policy || reference)
    double temperature = 1.0;  // log-probs are taken at this temperature on both sides

    static GrpoOptions from_spec(const config::AlgorithmSpec& algo,
                                 const config::SamplingSpec& sampling);
};

// One completion token's share of the loss. With tis_cap 0, ratio = exp(logp - behaviour_logp)
// and w = 1; with tis_cap > 0, ratio = exp(logp - old_logp) and w = min(exp(old_logp -
// behaviour_logp), tis_cap):
//   loss = -w * min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + kl_coef * k3,
//          with the min at least dual_clip * A when A < 0 (dual clip),
//   k3   = exp(ref - logp) - (ref - logp) - 1,
// scaled by `scale` (1 / tokens in the batch: token-mean aggregation). `weight` is dloss/dlogp,
// the per-token weight the model's backward takes. old_logp is the trainer's log-prob of the
// token before the step's first update (logp itself for the first update); ignored with
// tis_cap 0.
struct TokenLoss {
    double loss = 0;
    double weight = 0;
    double ratio = 1;
    double kl = 0;
    double tis_weight = 1;       // w (1 with tis_cap 0)
    bool tis_truncated = false;  // w was cut to tis_cap
    bool clipped = false;        // the clipped branch was taken (no policy gradient)
};
TokenLoss grpo_token_loss(double logp, double behaviour_logp, double ref_logp, double advantage,
                          const GrpoOptions& options, double scale);
TokenLoss grpo_token_loss(double logp, double old_logp, double behaviour_logp, double ref_logp,
                          double advantage, const GrpoOptions& options, double scale);

}  // namespace tandem::model
