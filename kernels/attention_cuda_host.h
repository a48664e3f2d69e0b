#pragma once

// Host-memory conveniences around attention_forward_cuda for tools and benchmarks: they stage
// fp32 host arrays on the current CUDA device (converted to `dtype`), run the kernel and copy the
// results back, or time it. Both return unavailable when this build has no CUDA or no device.

#include <string>

#include "common/status.h"
#include "kernels/attention.h"

namespace tandem::kernels {

// q, k, v: fp32 host arrays in the layouts of kernels/attention.h; o, lse: fp32 host outputs.
// Synchronous. p.accumulate must be false.
Status attention_forward_cuda_from_host(const AttentionParams& p, DType dtype, const float* q,
                                        const float* k, const float* v, float* o, float* lse);

struct CudaTiming {
    double seconds_per_call = 0.0;  // mean over the timed calls (CUDA events)
    int calls = 0;
    std::string device;
};

// Times attention_forward_cuda on random device inputs of `p`'s shape: `warmup` untimed calls,
// then `calls` timed ones on one stream.
Result<CudaTiming> time_attention_cuda(const AttentionParams& p, DType dtype, int warmup,
                                       int calls);

}  // namespace tandem::kernels
