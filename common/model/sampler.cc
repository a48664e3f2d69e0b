#include "common/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace tandem::model {

double Rng::normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

SamplingOptions SamplingOptions::from_spec(const config::SamplingSpec& spec, uint64_t seed) {
    SamplingOptions o;
    o.temperature = spec.temperature;
    o.top_p = spec.top_p;
    o.top_k = spec.top_k;
    o.max_new_tokens = spec.max_new_tokens;
    o.seed = seed;
    return o;
}

SampledToken Sampler::sample(const float* logits, int vocab, const SamplingOptions& o, Rng& rng) {
    // Behaviour log-prob: float log-softmax, the same arithmetic as token_logprob_forward<float>.
    const float it = static_cast<float>(1.0 / o.logprob_temperature());
    float m = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < vocab; ++j) m = std::max(m, logits[j] * it);
    float sum = 0;
    for (int j = 0; j < vocab; ++j) sum += std::exp(logits[j] * it - m);
    const float log_sum = std::log(sum);
    auto logprob = [&](int32_t t) { return logits[t] * it - m - log_sum; };

    if (o.temperature <= 0.0) {
        const int32_t best =
            static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
        return {best, logprob(best)};
    }
    probs_.resize(static_cast<size_t>(vocab));
    double total = 0;
    for (int j = 0; j < vocab; ++j) {
        probs_[j] = std::exp(static_cast<double>(logits[j] * it - m));
        total += probs_[j];
    }
    const bool truncate = (o.top_k > 0 && o.top_k < vocab) || o.top_p < 1.0;
    double u = rng.uniform();
    if (!truncate) {
        double target = u * total, acc = 0;
        for (int j = 0; j < vocab; ++j) {
            acc += probs_[j];
            if (target < acc) return {j, logprob(j)};
        }
        return {vocab - 1, logprob(vocab - 1)};
    }
    order_.resize(static_cast<size_t>(vocab));
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int32_t a, int32_t b) { return probs_[a] > probs_[b]; });
    int keep = vocab;
    if (o.top_k > 0 && o.top_k < keep) keep = o.top_k;
    if (o.top_p < 1.0) {
        double acc = 0;
        for (int i = 0; i < keep; ++i) {
            acc += probs_[order_[i]] / total;
            if (acc >= o.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double kept = 0;
    for (int i = 0; i < keep; ++i) kept += probs_[order_[i]];
    double target = u * kept, acc = 0;
    for (int i = 0; i < keep; ++i) {
        acc += probs_[order_[i]];
        if (target < acc) return {order_[i], logprob(order_[i])};
    }
    return {order_[keep - 1], logprob(order_[keep - 1])};
}

}  // namespace tandem::model
