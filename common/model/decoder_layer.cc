#include "common/model/decoder_layer.h"

#include <cstring>

namespace tandem::model {

namespace {

template <typename T>
void add_bias(int64_t n, int64_t out, const T* bias, T* y) {
    if (!bias) return;
    for (int64_t r = 0; r < n; ++r) {
        T* row = y + r * out;
        for (int64_t j = 0; j < out; ++j) row[j] += bias[j];
    }
}

}  // namespace

template <typename T>
RopeTable<T> make_rope_table(const ModelConfig& c) {
    return RopeTable<T>(c.max_seq_len, c.head_dim(),
                        rope_inv_freq(c.head_dim(), c.rope_theta, c.rope_scaling));
}

template <typename T>
void bias_backward(int64_t n, int64_t out, const T* dy, T* db) {
    for (int64_t r = 0; r < n; ++r) {
        const T* row = dy + r * out;
        for (int64_t j = 0; j < out; ++j) db[j] += row[j];
    }
}

template <typename T>
void qkv_forward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L,
                 const RopeTable<T>& rope, int64_t n, const int32_t* pos, const T* a, T* q, T* k,
                 T* v, QkNormActs<T>& acts) {
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), d = c.head_dim();
    linear_forward<T>(n, h, qd, a, L.wq, q);
    linear_forward<T>(n, h, kvd, a, L.wk, k);
    linear_forward<T>(n, h, kvd, a, L.wv, v);
    add_bias<T>(n, qd, L.bq, q);
    add_bias<T>(n, kvd, L.bk, k);
    add_bias<T>(n, kvd, L.bv, v);
    if (L.q_norm) {
        T* qr = grown_to(acts.q_raw, n * qd);
        T* kr = grown_to(acts.k_raw, n * kvd);
        std::memcpy(qr, q, sizeof(T) * n * qd);
        std::memcpy(kr, k, sizeof(T) * n * kvd);
        rmsnorm_forward<T>(n * c.num_heads, d, qr, L.q_norm, c.rms_norm_eps, q,
                           grown_to(acts.rstd_q, n * c.num_heads));
        rmsnorm_forward<T>(n * c.num_kv_heads, d, kr, L.k_norm, c.rms_norm_eps, k,
                           grown_to(acts.rstd_k, n * c.num_kv_heads));
    }
    rope_apply<T>(n, c.num_heads, pos, rope, q, false);
    rope_apply<T>(n, c.num_kv_heads, pos, rope, k, false);
}

template <typename T>
void qkv_backward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L,
                  const typename ParamPtrs<T>::Layer& G, const RopeTable<T>& rope, int64_t n,
                  const int32_t* pos, const T* a, QkNormActs<T>& acts, T* dq, T* dk, const T* dv,
                  T* da) {
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), d = c.head_dim();
    rope_apply<T>(n, c.num_heads, pos, rope, dq, true);
    rope_apply<T>(n, c.num_kv_heads, pos, rope, dk, true);
    if (L.q_norm) {
        T* dqr = grown_to(acts.dq_raw, n * qd);
        T* dkr = grown_to(acts.dk_raw, n * kvd);
        rmsnorm_backward<T>(n * c.num_heads, d, acts.q_raw.data(), L.q_norm, acts.rstd_q.data(), dq,
                            dqr, false, G.q_norm);
        rmsnorm_backward<T>(n * c.num_kv_heads, d, acts.k_raw.data(), L.k_norm, acts.rstd_k.data(),
                            dk, dkr, false, G.k_norm);
        dq = dqr;
        dk = dkr;
    }
    if (G.bq) {
        bias_backward<T>(n, qd, dq, G.bq);
        bias_backward<T>(n, kvd, dk, G.bk);
        bias_backward<T>(n, kvd, dv, G.bv);
    }
    linear_backward<T>(n, h, qd, a, L.wq, dq, da, false, G.wq);
    linear_backward<T>(n, h, kvd, a, L.wk, dk, da, true, G.wk);
    linear_backward<T>(n, h, kvd, a, L.wv, dv, da, true, G.wv);
}

template <typename T>
void out_proj_forward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L, int64_t n,
                      const T* o, T* x) {
    linear_forward<T>(n, c.q_dim(), c.hidden_size, o, L.wo, x, true);
    add_bias<T>(n, c.hidden_size, L.bo, x);
}

template <typename T>
void mlp_forward(const ModelConfig& c, const typename ParamPtrs<const T>::Layer& L, int64_t n,
                 const T* b, T* g, T* u, T* s, T* x) {
    const int64_t h = c.hidden_size, inter = c.intermediate_size;
    linear_forward<T>(n, h, inter, b, L.wg, g);
    linear_forward<T>(n, h, inter, b, L.wu, u);
    add_bias<T>(n, inter, L.bg, g);
    add_bias<T>(n, inter, L.bu, u);
    swiglu_forward<T>(n * inter, g, u, s);
    linear_forward<T>(n, inter, h, s, L.wd, x, true);
    add_bias<T>(n, h, L.bd, x);
}

#define TANDEM_DECODER_LAYER(T)                                                                    \
    template RopeTable<T> make_rope_table<T>(const ModelConfig&);                                  \
    template void bias_backward<T>(int64_t, int64_t, const T*, T*);                                \
    template void qkv_forward<T>(const ModelConfig&, const ParamPtrs<const T>::Layer&,             \
                                 const RopeTable<T>&, int64_t, const int32_t*, const T*, T*, T*,   \
                                 T*, QkNormActs<T>&);                                              \
    template void qkv_backward<T>(const ModelConfig&, const ParamPtrs<const T>::Layer&,            \
                                  const ParamPtrs<T>::Layer&, const RopeTable<T>&, int64_t,        \
                                  const int32_t*, const T*, QkNormActs<T>&, T*, T*, const T*, T*); \
    template void out_proj_forward<T>(const ModelConfig&, const ParamPtrs<const T>::Layer&,        \
                                      int64_t, const T*, T*);                                      \
    template void mlp_forward<T>(const ModelConfig&, const ParamPtrs<const T>::Layer&, int64_t,    \
                                 const T*, T*, T*, T*, T*);

TANDEM_DECODER_LAYER(float)
TANDEM_DECODER_LAYER(double)
#undef TANDEM_DECODER_LAYER

}  // namespace tandem::model
