#pragma once

// Device log-sum-exp merge of partial attention results: the device twins of kernels/merge.h,
// for the device ring (kernels/ring/device_ring.h). Layouts as there: o [tq, hq, d] fp32,
// lse [hq, tq] fp32 natural log; a partial with lse = -inf is the identity (never NaN). The
// merged lse and the weights are computed in double, as merge.cc does. Launchers only enqueue on
// `stream`; errors name the op.

#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

// acc := acc (+) part, in place (merge_attention_into).
Status merge_attention_into(const Stream& stream, int64_t tq, int hq, int d, float* o_acc,
                            float* lse_acc, const float* o, const float* lse);

// out := slot 0 (+) ... (+) slot parts - 1 in one max-shifted pass (merge_attention), over a table
// whose slot r starts at table + r * slot_stride floats and holds [o [tq, hq, d] | lse [hq, tq]]
// (the sharded-decode table, kernels/ring/sharded_decode.h). `o` and `lse` may not alias it.
Status merge_attention_table(const Stream& stream, const float* table, int parts,
                             int64_t slot_stride, int64_t tq, int hq, int d, float* o, float* lse);

// The empty partial: o := 0 [o_elems], lse := -inf [lse_elems].
Status clear_attention_partial(const Stream& stream, float* o, int64_t o_elems, float* lse,
                               int64_t lse_elems);

// dst[i] += src[i], i < n (the device ring backward adds the dK/dV accumulator that arrived).
Status accumulate_f32(const Stream& stream, float* dst, const float* src, int64_t n);

}  // namespace tandem::kernels::cuda
