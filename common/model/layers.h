#pragma once

// The decoder's building blocks, each with forward and backward, on packed rows (row-major,
// one token per row). Instantiated for float (the real path: OpenBLAS sgemm, kernels/ attention)
// and double (the reference path for gradient checks: dgemm and a direct attention).
// All functions are pure over their arguments and thread-safe.

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/attention.h"

namespace tandem::model {

// Threads OpenBLAS may use for one product (process-wide). Actors sharing a small machine call
// set_blas_threads(1); the model's matrices are small enough that one thread is near the best.
void set_blas_threads(int threads);

// C[m,n] = alpha * op(A) op(B) + beta * C, row-major, through cblas_{s,d}gemm.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// y[n, out] (+)= x[n, in] W^T with W [out, in].
template <typename T>
void linear_forward(int64_t n, int64_t in, int64_t out, const T* x, const T* w, T* y,
                    bool accumulate = false);
// dx[n, in] (+)= dy W (skipped when dx is null); dw[out, in] += dy^T x.
template <typename T>
void linear_backward(int64_t n, int64_t in, int64_t out, const T* x, const T* w, const T* dy, T* dx,
                     bool accumulate_dx, T* dw);

// y = x * rstd * w per row, rstd = 1 / sqrt(mean(x^2) + eps). rstd [n] is saved for backward.
template <typename T>
void rmsnorm_forward(int64_t n, int64_t h, const T* x, const T* w, double eps, T* y, T* rstd);
// dx (+)= d/dx, dw += d/dw of sum(dy * y).
template <typename T>
void rmsnorm_backward(int64_t n, int64_t h, const T* x, const T* w, const T* rstd, const T* dy,
                      T* dx, bool accumulate_dx, T* dw);

// Rotary position tables for the Hugging Face "rotate_half" convention: within each head of
// dimension d, element i < d/2 pairs with element i + d/2 and turns by pos * inv_freq[i]
// (theta^(-2i/d) unscaled). Angles, cosines and sines are computed in double.
// Immutable after construction; safe to share between threads.
template <typename T>
class RopeTable {
public:
    RopeTable() = default;
    RopeTable(int max_positions, int head_dim, double theta);
    // Explicit inverse frequencies (head_dim / 2 of them), e.g. after RoPE scaling.
    RopeTable(int max_positions, int head_dim, const std::vector<double>& inv_freq);
    int max_positions() const { return max_positions_; }
    int head_dim() const { return head_dim_; }
    const T* cos(int pos) const { return cos_.data() + static_cast<size_t>(pos) * half_; }
    const T* sin(int pos) const { return sin_.data() + static_cast<size_t>(pos) * half_; }

private:
    int max_positions_ = 0, head_dim_ = 0, half_ = 0;
    std::vector<T> cos_, sin_;
};

// Rotates rows x[n, heads, d] in place by their positions (pos[n], each < max_positions).
// `inverse` turns the other way: it is the backward of the forward rotation.
template <typename T>
void rope_apply(int64_t n, int heads, const int32_t* pos, const RopeTable<T>& table, T* x,
                bool inverse);

// s = silu(g) * u elementwise over `count` values.
template <typename T>
void swiglu_forward(int64_t count, const T* g, const T* u, T* s);
template <typename T>
void swiglu_backward(int64_t count, const T* g, const T* u, const T* ds, T* dg, T* du);

// Per row of logits [n, vocab]: z = logits * inv_temp, logp[i] = z[target[i]] - logsumexp(z);
// entropy[i] (when not null) = -sum softmax(z) log softmax(z).
template <typename T>
void token_logprob_forward(int64_t n, int64_t vocab, const T* logits, const int32_t* target,
                           double inv_temp, T* logp, T* entropy);
// dlogits[i] = weight[i] * inv_temp * (onehot(target[i]) - softmax(z_i)): the gradient of
// sum_i weight[i] * logp[i]. Overwrites dlogits.
template <typename T>
void token_logprob_backward(int64_t n, int64_t vocab, const T* logits, const int32_t* target,
                            double inv_temp, const T* weight, T* dlogits);

// Attention of one contiguous block of queries against one contiguous block of keys, with the
// shapes and conventions of kernels/attention.h. float runs the kernels' CPU implementation;
// double runs a direct O(tq * tk) reference written for the gradient checks.
template <typename T>
Status attention_forward(const kernels::AttentionParams& p, const T* q, const T* k, const T* v,
                         T* o, T* lse);
template <typename T>
Status attention_backward(const kernels::AttentionParams& p, const T* q, const T* k, const T* v,
                          const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv);

}  // namespace tandem::model
