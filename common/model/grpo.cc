#include "common/model/grpo.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace tandem::model {

std::vector<double> group_advantages(std::span<const double> rewards,
                                     std::span<const uint64_t> groups, double eps,
                                     bool scale_by_std) {
    struct Acc {
        double sum = 0, sq = 0, min = 0, max = 0;
        int64_t n = 0;
    };
    std::unordered_map<uint64_t, Acc> acc;
    for (size_t i = 0; i < rewards.size(); ++i) {
        Acc& a = acc[groups[i]];
        a.min = a.n == 0 ? rewards[i] : std::min(a.min, rewards[i]);
        a.max = a.n == 0 ? rewards[i] : std::max(a.max, rewards[i]);
        a.sum += rewards[i];
        ++a.n;
    }
    for (size_t i = 0; i < rewards.size(); ++i) {
        Acc& a = acc[groups[i]];
        const double d = rewards[i] - a.sum / static_cast<double>(a.n);
        a.sq += d * d;
    }
    std::vector<double> out(rewards.size(), 0.0);
    for (size_t i = 0; i < rewards.size(); ++i) {
        const Acc& a = acc[groups[i]];
        if (a.n < 2 || a.max == a.min) continue;
        const double mean = a.sum / static_cast<double>(a.n);
        const double std = std::sqrt(a.sq / static_cast<double>(a.n));
        out[i] = scale_by_std ? (rewards[i] - mean) / (std + eps) : rewards[i] - mean;
    }
    return out;
}

GrpoOptions GrpoOptions::from_spec(const config::AlgorithmSpec& algo,
                                   const config::SamplingSpec& sampling) {
    GrpoOptions o;
    o.clip_eps = algo.clip_eps;
    o.kl_coef = algo.kl_coef;
    o.tis_cap = algo.tis_cap;
    o.temperature = sampling.temperature > 0 ? sampling.temperature : 1.0;
    return o;
}

TokenLoss grpo_token_loss(double logp, double behaviour_logp, double ref_logp, double advantage,
                          const GrpoOptions& o, double scale) {
    return grpo_token_loss(logp, logp, behaviour_logp, ref_logp, advantage, o, scale);
}

TokenLoss grpo_token_loss(double logp, double old_logp, double behaviour_logp, double ref_logp,
                          double advantage, const GrpoOptions& o, double scale) {
    TokenLoss t;
    if (o.tis_cap > 0) {
        t.tis_weight = std::exp(old_logp - behaviour_logp);
        if (t.tis_weight > o.tis_cap) {
            t.tis_weight = o.tis_cap;
            t.tis_truncated = true;
        }
        t.ratio = std::exp(logp - old_logp);
    } else {
        t.ratio = std::exp(logp - behaviour_logp);
    }
    const double clipped_ratio = std::clamp(t.ratio, 1.0 - o.clip_eps, 1.0 + o.clip_eps);
    const double surr1 = t.ratio * advantage, surr2 = clipped_ratio * advantage;
    double dobj = 0;  // d min(surr1, surr2) / dlogp
    if (surr1 <= surr2) {
        dobj = t.ratio * advantage;
    } else {
        t.clipped = true;
    }
    double obj = std::min(surr1, surr2);
    if (advantage < 0 && o.dual_clip > 0 && obj < o.dual_clip * advantage) {
        obj = o.dual_clip * advantage;
        dobj = 0;
        t.clipped = true;
    }
    if (o.tis_cap > 0) {
        obj *= t.tis_weight;
        dobj *= t.tis_weight;
    }
    t.loss = -obj;
    t.weight = -dobj;
    if (o.kl_coef > 0) {
        const double d = ref_logp - logp;
        t.kl = std::exp(d) - d - 1.0;
        t.loss += o.kl_coef * t.kl;
        t.weight += o.kl_coef * (1.0 - std::exp(d));
    }
    t.loss *= scale;
    t.weight *= scale;
    return t;
}

}  // namespace tandem::model
