#pragma once

// Attention launchers: scaled dot-product attention forward (CPU fp32, CUDA fp32/fp16/bf16) and
// backward (CPU fp32). No CUDA header is needed to call them: streams travel as `void*`.
//
// Conventions shared by every entry point:
//   q  [tq, hq, d]   row-major, contiguous; row t of head h starts at q + (t * hq + h) * d
//   k  [tk, hkv, d]  hq % hkv == 0; query head h reads key/value head h / (hq / hkv)
//   v  [tk, hkv, d]  (MHA: hkv == hq, GQA: 1 < hkv < hq, MQA: hkv == 1)
//   o  [tq, hq, d]   fp32 always, whatever the input dtype
//   lse [hq, tq]     fp32, natural log of the softmax denominator: lse = log sum_j exp(s_ij),
//                    s_ij = scale * <q_i, k_j>. Head h's row starts at lse + h * lse_stride.
// A query row that sees no key (every key masked, or tk == 0) has lse = -inf and o = 0.
// Causal masking uses global positions: query row i sits at q_pos(i), key row j at k_pos(j), and
// key j is visible to query i iff k_pos(j) <= q_pos(i). Positions form one run (q_pos(i) =
// q_pos0 + i) or two runs, as a zigzag ring shard holds: rows from q_split on sit at
// q_pos1 + (i - q_split). Likewise for keys. Positions never decrease along the rows.

#include <cstdint>
#include <limits>

#include "common/status.h"

namespace tandem::kernels {

enum class DType { kF32, kF16, kBF16 };

const char* dtype_name(DType dtype);
size_t dtype_bytes(DType dtype);

inline constexpr int64_t kNoSplit = std::numeric_limits<int64_t>::max();

struct AttentionParams {
    int64_t tq = 0;      // query rows
    int64_t tk = 0;      // key/value rows
    int hq = 0;          // query heads
    int hkv = 0;         // key/value heads; hq % hkv == 0
    int d = 0;           // head dimension (1..256)
    float scale = 0.0f;  // softmax scale; use default_softmax_scale(d) for 1/sqrt(d)
    bool causal = false;
    int64_t q_pos0 = 0;  // global position of query row 0 (causal only)
    int64_t k_pos0 = 0;  // global position of key row 0 (causal only)
    // Optional second run (causal only): query rows >= q_split sit at q_pos1 + (i - q_split);
    // key rows >= k_split at k_pos1 + (j - k_split). kNoSplit: a single run.
    int64_t q_split = kNoSplit;
    int64_t q_pos1 = 0;
    int64_t k_split = kNoSplit;
    int64_t k_pos1 = 0;
    // Distance in floats between consecutive heads of lse; 0 means tq (a dense [hq, tq] array).
    int64_t lse_stride = 0;
    // false: o and lse are outputs only. true: o and lse already hold the normalised result of
    // these queries against other keys (lse = -inf, o = 0 for "none yet"); the keys of this call
    // are merged into them, exactly as merge_attention would, without a separate pass.
    bool accumulate = false;
};

float default_softmax_scale(int d);

// Global position of query row i / key row j (see the conventions above).
inline int64_t query_position(const AttentionParams& p, int64_t i) {
    return i < p.q_split ? p.q_pos0 + i : p.q_pos1 + (i - p.q_split);
}
inline int64_t key_position(const AttentionParams& p, int64_t j) {
    return j < p.k_split ? p.k_pos0 + j : p.k_pos1 + (j - p.k_split);
}
// Number of keys visible at position `pos` (causal): a prefix, since positions never decrease.
int64_t keys_visible_at(const AttentionParams& p, int64_t pos);
// Number of query rows at positions before `pos` (they see no key at position >= pos).
int64_t queries_before(const AttentionParams& p, int64_t pos);

// Checks shapes and values of `p` (positive dims, hq % hkv, d <= 256, finite positive scale,
// positions that never decrease).
Status validate(const AttentionParams& p);

// Multiply-add count of the forward pass (4 * d per attended (query, key, head) entry), counting
// causal masking exactly. Used by benchmarks to report FLOP/s.
double attention_forward_flops(const AttentionParams& p);
// Number of (query, key) entries one query head attends, causal masking counted exactly.
int64_t attended_entries(const AttentionParams& p);

// Blockwise online-softmax forward on the CPU, fp32 in and out, single-threaded, deterministic
// (bitwise identical output for identical input on the same machine). Picks the widest vector
// unit the CPU has (AVX-512, AVX2+FMA, or SSE2). Thread-safe: calls share no state.
Status attention_forward_cpu(const AttentionParams& p, const float* q, const float* k,
                             const float* v, float* o, float* lse);

// Blockwise backward on the CPU from the forward's o and lse and the output gradient do
// [tq, hq, d]. Writes dq [tq, hq, d], dk and dv [tk, hkv, d], all fp32. When `accumulate_grads`
// is true the gradients are added to what dq, dk and dv hold (ring backward uses this); otherwise
// they are overwritten. `p.accumulate` must be false. Thread-safe: calls share no state.
Status attention_backward_cpu(const AttentionParams& p, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* dout,
                              float* dq, float* dk, float* dv, bool accumulate_grads = false);

// Flash-style forward on the current CUDA device, enqueued on `stream` (a cudaStream_t; nullptr
// is the legacy default stream). q, k and v are device pointers of `dtype`; o and lse are device
// fp32. Accumulation is fp32. Returns unavailable when this build has no CUDA. Asynchronous: the
// result is ready when the stream reaches this point; launch errors are returned immediately.
Status attention_forward_cuda(const AttentionParams& p, DType dtype, const void* q, const void* k,
                              const void* v, float* o, float* lse, void* stream);

}  // namespace tandem::kernels
