#pragma once

// Token sampling from logits: temperature, top-k, top-p (nucleus), seeded.

#include <cstdint>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/rng.h"

namespace tandem::model {

struct SamplingOptions {
    double temperature = 1.0;  // 0: greedy
    double top_p = 1.0;        // keep the smallest set of tokens whose probability reaches top_p
    int top_k = 0;             // keep the k most likely tokens; 0: off
    int max_new_tokens = 12;
    uint64_t seed = 0;

    static SamplingOptions from_spec(const config::SamplingSpec& spec, uint64_t seed);
    // The temperature log-probs are reported at: `temperature`, or 1 for greedy decoding.
    double logprob_temperature() const { return temperature > 0.0 ? temperature : 1.0; }
};

struct SampledToken {
    int32_t token = 0;
    // log softmax(logits / logprob_temperature())[token]: the behaviour log-prob. It is taken
    // over the whole vocabulary (top-k/top-p truncation is not included), which is exactly what
    // the trainer recomputes.
    float logprob = 0.0f;
};

// Owns scratch buffers; one per thread.
class Sampler {
public:
    SampledToken sample(const float* logits, int vocab, const SamplingOptions& options, Rng& rng);

private:
    std::vector<double> probs_;
    std::vector<int32_t> order_;
};

}  // namespace tandem::model
