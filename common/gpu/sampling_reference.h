#pragma once

// The device sampler's semantics (kernels/cuda/sampling.h) on the host, in plain C++: the kept
// set (top-k / top-p threshold), the Philox draw and the inverse CDF in vocabulary order. The
// unit tests check it against model::Sampler (same kept set, same distribution); the GPU tests
// check the kernel against it.

#include <cstdint>
#include <vector>

#include "common/model/sampler.h"

namespace tandem::gpu {

// Tokens the sampler may return for this row (ascending ids); every token when greedy is off and
// there is no truncation; the first largest logit when greedy.
std::vector<int32_t> kept_tokens(const float* logits, int vocab, const model::SamplingOptions& o);

// The token the device picks for (o.seed, stream, step) and its log-prob, as sample_tokens does
// (its float sums may differ in the last bits, which moves the pick only when u lands on a
// boundary).
model::SampledToken sample_reference(const float* logits, int vocab,
                                     const model::SamplingOptions& o, uint64_t stream,
                                     int32_t step);

// Pearson's chi-square of token counts drawn from one row against softmax(logits / T) renormalised
// over kept_tokens(), with the 0.1% critical value for its degrees of freedom (kept - 1, at most
// 11: rows of up to 12 kept tokens) and the draws that fell outside the kept set.
struct ChiSquare {
    double value = 0;
    int dof = 0;
    double critical = 0;
    int64_t outside = 0;
};
ChiSquare chi_square_against_kept(const float* logits, int vocab, const model::SamplingOptions& o,
                                  const std::vector<int64_t>& counts);

// The random stream of sample g of prompt p (prompt index counted over the whole generate call):
// the same mixing as model::GroupGenerator's per-sample Rng seeds.
uint64_t sample_stream(uint64_t seed, int64_t prompt, int sample);

}  // namespace tandem::gpu
