#pragma once

// Internal to kernels/cuda: the tiled tensor-core attention backward that attention_backward.cu
// dispatches to (see attention_backward.h). Callers have validated p and the pointers and checked
// attention_backward_tiled_unsupported.

#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda::detail {

Status attention_backward_tiled(const Stream& s, const AttentionParams& p, const void* q,
                                const void* k, const void* v, const float* o, const float* lse,
                                const float* dout, float* dq, float* dk, float* dv,
                                bool accumulate_grads);

}  // namespace tandem::kernels::cuda::detail
