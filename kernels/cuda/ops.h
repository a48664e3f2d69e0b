#pragma once

// The decoder's device operations: bf16 storage, fp32 accumulation, each enqueued on the stream
// it is given (asynchronous; launch errors are returned at once, named after the op). Row-major
// packed rows, one token per row, with the shapes and conventions of common/model/layers.h, so
// each op has a CPU twin there that the gpu tests compare it with.
//
// Dtype plan of the device model: weights bf16 (fp32 masters for training); the residual stream,
// GEMM outputs, activation gradients, logits and statistics fp32; GEMM inputs bf16 (the ops that
// feed a GEMM write bf16). All pointers are device pointers unless said otherwise.

#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

// ---- conversions ----

// out[i] = bf16(x[i]) (round to nearest even) / float(x[i]).
Status to_bf16(const Stream& s, int64_t count, const float* x, Bf16* out);
Status to_float(const Stream& s, int64_t count, const Bf16* x, float* out);
// out[i, :] = x[index[i], :] for i < rows; x and out [*, width].
Status gather_rows(const Stream& s, int64_t rows, int64_t width, const int32_t* index,
                   const Bf16* x, Bf16* out);

// ---- forward ----

// x[i, :] = float(table[tokens[i], :]), table [vocab, hidden]. Tokens must be in [0, vocab): the
// caller checks them on the host (a device kernel cannot report an error); an out-of-range token
// gives a zero row.
Status embedding_forward(const Stream& s, int64_t n, int64_t hidden, int64_t vocab,
                         const int32_t* tokens, const Bf16* table, float* x);

// y = bf16(x * rstd * w) per row of width h, rstd = 1 / sqrt(mean(x^2) + eps) (fp32, kept for
// backward when not null). Rows [n, h]; h <= 32768.
Status rmsnorm_forward(const Stream& s, int64_t n, int64_t h, const float* x, const Bf16* w,
                       float eps, Bf16* y, float* rstd);

// One attention input from its projection x [n, heads * d] (fp32, a GEMM output), per head of
// each row: add bias [heads * d] (if not null), RMSNorm over the head's d values with norm_w [d]
// (Qwen3's q/k norm, if not null; rstd [n * heads] saved when not null), rotate by RoPE in the
// rotate_half convention (if cos is not null: cos and sin [max_pos, d / 2] fp32, pos [n] int32
// each < max_pos), and write bf16 out [n, heads * d]. With norm_w, raw (if not null) receives x +
// bias in fp32 (the norm's input, which backward needs). d even, <= 256.
struct HeadPrepare {
    int64_t n = 0;
    int heads = 0;
    int d = 0;
    const Bf16* bias = nullptr;
    const Bf16* norm_w = nullptr;
    float eps = 1e-6f;
    const float* cos = nullptr;
    const float* sin = nullptr;
    const int32_t* pos = nullptr;
    float* raw = nullptr;
    float* rstd = nullptr;
};
Status head_prepare(const Stream& s, const HeadPrepare& p, const float* x, Bf16* out);

// y[r, :] += bias for each of n rows of width `width` (fp32 y, bf16 bias).
Status bias_add(const Stream& s, int64_t n, int64_t width, const Bf16* bias, float* y);

// s = bf16(silu(g) * u) elementwise over `count` values (g, u fp32 GEMM outputs).
Status swiglu_forward(const Stream& s, int64_t count, const float* g, const float* u, Bf16* out);

// Per row of logits [n, vocab] (fp32): z = logits * inv_temp, logp[i] = z[target[i]] -
// logsumexp(z); entropy[i] (if not null) = -sum softmax(z) log softmax(z). Targets must be in
// [0, vocab) (checked by the caller).
Status logprob_forward(const Stream& s, int64_t n, int64_t vocab, const float* logits,
                       const int32_t* target, float inv_temp, float* logp, float* entropy);
// out [n, vocab] = log_softmax(logits * inv_temp) per row; out may alias logits.
Status log_softmax(const Stream& s, int64_t n, int64_t vocab, const float* logits, float inv_temp,
                   float* out);

// ---- backward (fp32 gradients) ----

// dx (+)= d/dx, dw [h] += d/dw of sum(dy * y) for y = rmsnorm(x) * w, from the forward's rstd.
Status rmsnorm_backward(const Stream& s, int64_t n, int64_t h, const float* x, const Bf16* w,
                        const float* rstd, const float* dy, float* dx, bool accumulate_dx,
                        float* dw);
// Rotates x [n, heads, d] in place by pos (fp32); inverse = true is the backward of the forward
// rotation (the same as common/model's rope_apply).
Status rope_apply(const Stream& s, int64_t n, int heads, int d, const float* cos, const float* sin,
                  const int32_t* pos, float* x, bool inverse);
// db [width] += column sums of dy [n, width].
Status bias_backward(const Stream& s, int64_t n, int64_t width, const float* dy, float* db);
// dg, du from ds for s = silu(g) * u.
Status swiglu_backward(const Stream& s, int64_t count, const float* g, const float* u,
                       const float* ds, float* dg, float* du);
// dlogits = weight[i] * inv_temp * (onehot(target[i]) - softmax(z_i)) (overwritten).
Status logprob_backward(const Stream& s, int64_t n, int64_t vocab, const float* logits,
                        const int32_t* target, float inv_temp, const float* weight, float* dlogits);
// dtable [vocab, hidden] += dx rows scattered by token (atomic adds: the sum order, and so the
// last bits, vary between runs when a token repeats).
Status embedding_backward(const Stream& s, int64_t n, int64_t hidden, int64_t vocab,
                          const int32_t* tokens, const float* dx, float* dtable);

// ---- optimizer ----

// *sum_sq += sum of x[i]^2 over `count` values (fp64 accumulator in device memory: call it for
// every gradient range, after zeroing the accumulator, then pass it to adamw_update).
Status sum_squares(const Stream& s, int64_t count, const float* x, double* sum_sq);

// The scalars of one AdamW step (common/model/optimizer.cc computes the same on the CPU).
struct AdamWStep {
    float lr = 0;
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    float bias_correction1 = 1;  // 1 / (1 - beta1^t)
    float bias_correction2 = 1;  // 1 / (1 - beta2^t)
    float weight_decay = 0;      // applied as p *= 1 - lr * weight_decay when `decay`
    double max_grad_norm = 0;    // > 0: gradients are scaled by max / (norm + 1e-12) if larger
};
// One AdamW step over `count` fp32 master parameters with global-norm clipping, all on the
// device: the gradient norm is sqrt(*sum_sq) (from sum_squares over every gradient), read by the
// kernel, so no host round trip. grads are read, not modified. When p_bf16 is not null, it
// receives the updated parameters in bf16 (the compute copy).
Status adamw_update(const Stream& s, int64_t count, float* params, const float* grads, float* m,
                    float* v, const AdamWStep& step, bool decay, const double* sum_sq,
                    Bf16* p_bf16);

}  // namespace tandem::kernels::cuda
