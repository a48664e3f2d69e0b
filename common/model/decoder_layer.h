#pragma once

// The parts of one decoder layer that differ between the supported architectures (config.h):
// the q/k/v projections with optional biases, per-head q/k RMSNorm (Qwen3) and RoPE; the output
// projection with an optional bias; the SwiGLU MLP with optional biases. Shared by the training
// transformer (forward and backward), the paged-KV inference engine and the context-parallel
// generator, so each architecture feature is written once. Pure functions over their arguments;
// thread-safe.

#include <cstdint>
#include <vector>

#include "common/model/config.h"
#include "common/model/layers.h"
#include "common/model/params.h"

namespace tandem::model {

// The config's RoPE table (rope_theta and rope_scaling) for positions [0, max_seq_len).
template <typename T>
RopeTable<T> make_rope_table(const ModelConfig& config);

// What qkv_forward saves for qkv_backward when the config has qk_norm (else unused), plus its
// backward scratch. Plain value; reused across calls.
template <typename T>
struct QkNormActs {
    std::vector<T> q_raw, k_raw, rstd_q, rstd_k, dq_raw, dk_raw;
};

// From the normed layer input a [n, hidden]: q [n, q_dim], k [n, kv_dim], v [n, kv_dim] as
// q = rope(qnorm(a Wq^T + bq)), k = rope(knorm(a Wk^T + bk)), v = a Wv^T + bv, where the norms
// (Qwen3) are RMSNorms over each head's head_dim values and biases/norms are used when present.
template <typename T>
void qkv_forward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L,
                 const RopeTable<T>& rope, int64_t n, const int32_t* pos, const T* a, T* q, T* k,
                 T* v, QkNormActs<T>& acts);
// The backward of qkv_forward: dq, dk (gradients of the rotated q, k; overwritten as scratch) and
// dv give da [n, hidden] (overwritten) and add the parameters' gradients to G.
template <typename T>
void qkv_backward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L,
                  const typename ParamPtrs<T>::Layer& G, const RopeTable<T>& rope, int64_t n,
                  const int32_t* pos, const T* a, QkNormActs<T>& acts, T* dq, T* dk, const T* dv,
                  T* da);

// x [n, hidden] += o Wo^T + bo, with o [n, q_dim].
template <typename T>
void out_proj_forward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L, int64_t n,
                      const T* o, T* x);

// g = b Wg^T + bg, u = b Wu^T + bu, s = silu(g) * u, x [n, hidden] += s Wd^T + bd. `s` may alias
// `g` where no backward follows.
template <typename T>
void mlp_forward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L, int64_t n,
                 const T* b, T* g, T* u, T* s, T* x);

// db[out] += sum over rows of dy [n, out].
template <typename T>
void bias_backward(int64_t n, int64_t out, const T* dy, T* db);

// Storage for n elements of a reused scratch buffer: grows v when it is smaller, never shrinks it.
template <typename T>
T* grown_to(std::vector<T>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
}

}  // namespace tandem::model
