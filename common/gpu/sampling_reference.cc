#include "common/gpu/sampling_reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "common/model/rng.h"
#include "kernels/cuda/philox.h"

namespace tandem::gpu {

namespace {

uint32_t key_of(float z) {
    uint32_t b;
    std::memcpy(&b, &z, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct Row {
    float it = 1, m = 0, total = 0, log_sum = 0;
    std::vector<float> z, p;
};

Row prepare(const float* logits, int vocab, const model::SamplingOptions& o) {
    Row r;
    r.it = static_cast<float>(1.0 / o.logprob_temperature());
    r.z.resize(static_cast<size_t>(vocab));
    r.p.resize(static_cast<size_t>(vocab));
    r.m = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < vocab; ++j) {
        r.z[j] = logits[j] * r.it;
        r.m = std::max(r.m, r.z[j]);
    }
    for (int j = 0; j < vocab; ++j) {
        r.p[j] = std::exp(r.z[j] - r.m);
        r.total += r.p[j];
    }
    r.log_sum = std::log(r.total);
    return r;
}

// The smallest key kept (see kernels/cuda/sampling.h).
uint32_t threshold(const Row& r, int vocab, const model::SamplingOptions& o) {
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return key_of(r.z[a]) > key_of(r.z[b]); });
    uint32_t t = 0;
    if (o.top_k > 0 && o.top_k < vocab) t = key_of(r.z[order[o.top_k - 1]]);
    if (o.top_p < 1.0) {
        double acc = 0;
        for (const int32_t j : order) {
            acc += static_cast<double>(r.p[j]) / r.total;
            if (acc >= o.top_p) {
                t = std::max(t, key_of(r.z[j]));
                break;
            }
        }
    }
    return t;
}

int32_t greedy(const float* logits, int vocab) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

}  // namespace

std::vector<int32_t> kept_tokens(const float* logits, int vocab, const model::SamplingOptions& o) {
    if (o.temperature <= 0.0) return {greedy(logits, vocab)};
    const Row r = prepare(logits, vocab, o);
    const uint32_t t = threshold(r, vocab, o);
    std::vector<int32_t> kept;
    for (int j = 0; j < vocab; ++j) {
        if (key_of(r.z[j]) >= t) kept.push_back(j);
    }
    return kept;
}

model::SampledToken sample_reference(const float* logits, int vocab,
                                     const model::SamplingOptions& o, uint64_t stream,
                                     int32_t step) {
    const Row r = prepare(logits, vocab, o);
    auto logprob = [&](int32_t j) { return r.z[j] - r.m - r.log_sum; };
    if (o.temperature <= 0.0) {
        const int32_t j = greedy(logits, vocab);
        return {j, logprob(j)};
    }
    const uint32_t t = threshold(r, vocab, o);
    double kept = 0;
    for (int j = 0; j < vocab; ++j) {
        if (key_of(r.z[j]) >= t) kept += r.p[j];
    }
    const double u = kernels::cuda::philox_uniform(o.seed, stream, static_cast<uint32_t>(step));
    const double target = u * kept;
    double acc = 0;
    int32_t last = 0;
    for (int j = 0; j < vocab; ++j) {
        if (key_of(r.z[j]) < t) continue;
        last = j;
        acc += r.p[j];
        if (target < acc) return {j, logprob(j)};
    }
    return {last, logprob(last)};
}

ChiSquare chi_square_against_kept(const float* logits, int vocab, const model::SamplingOptions& o,
                                  const std::vector<int64_t>& counts) {
    static constexpr double kCritical[] = {0,     10.83, 13.82, 16.27, 18.47, 20.52,
                                           22.46, 24.32, 26.12, 27.88, 29.59, 31.26};
    const std::vector<int32_t> kept = kept_tokens(logits, vocab, o);
    std::vector<double> p(static_cast<size_t>(vocab), 0.0);
    double total = 0;
    int64_t draws = 0;
    for (const int64_t c : counts) draws += c;
    for (const int32_t j : kept) total += p[j] = std::exp(logits[j] / o.logprob_temperature());
    ChiSquare r;
    for (int j = 0; j < vocab && j < std::ssize(counts); ++j) {
        if (p[j] == 0) {
            r.outside += counts[j];
            continue;
        }
        const double e = static_cast<double>(draws) * p[j] / total;
        r.value += (static_cast<double>(counts[j]) - e) * (static_cast<double>(counts[j]) - e) / e;
    }
    r.dof = static_cast<int>(kept.size()) - 1;
    r.critical = r.dof >= 1 && r.dof <= 11 ? kCritical[r.dof] : 0.0;
    return r;
}

uint64_t sample_stream(uint64_t seed, int64_t prompt, int sample) {
    return model::mix_seed(seed, static_cast<uint64_t>(prompt), static_cast<uint64_t>(sample));
}

}  // namespace tandem::gpu
