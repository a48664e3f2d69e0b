#pragma once

// Token sampling on the device, one row of logits per sampled token: greedy, or temperature with
// top-k and top-p (nucleus), seeded by Philox (kernels/cuda/philox.h) per (stream, step), and the
// behaviour log-prob of the chosen token (log_softmax(logits / logprob temperature) over the whole
// vocabulary, as model::Sampler reports it). Never run on a GPU yet.
//
// Semantics (common/gpu/sampling_reference.h is the same on the host, for tests): z = logits / T;
// the kept set is every token whose z is >= the threshold max(z_k, z_p), z_k the k-th largest z
// (top_k > 0 and < vocab) and z_p the largest value such that the tokens at or above it hold at
// least top_p of the probability (top_p < 1): the set model::Sampler keeps, up to ties. Then
// u = philox_uniform(seed, stream, step) picks the token where the cumulative kept probability,
// in vocabulary order, passes u x (kept mass). Greedy (temperature 0): the first largest logit.
// Thresholds are found by radix selection over the float bits (256-bin histograms; the top-p mass
// in 2^-40 fixed point), so a row's result is bit-for-bit reproducible.

#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

struct DeviceSampling {
    float temperature = 1.0f;  // 0: greedy
    float top_p = 1.0f;
    int top_k = 0;
    uint64_t seed = 0;
};

// For i < n: the row logits[logit_row ? logit_row[i] : i] ([*, vocab] fp32); stream[i] (uint64)
// and step[i] (int32) select the random number. Writes token[i] and logp[i].
struct SampleRows {
    int64_t n = 0;
    int64_t vocab = 0;
    const float* logits = nullptr;
    const int32_t* logit_row = nullptr;  // may be null
    const uint64_t* stream = nullptr;
    const int32_t* step = nullptr;
    int32_t* token = nullptr;
    float* logp = nullptr;
};
Status sample_tokens(const Stream& s, const DeviceSampling& o, const SampleRows& rows);

}  // namespace tandem::kernels::cuda
