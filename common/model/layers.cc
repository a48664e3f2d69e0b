#include "common/model/layers.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tandem::model {

void set_blas_threads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
                static_cast<blasint>(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
                static_cast<blasint>(ldc));
}

template <typename T>
void linear_forward(int64_t n, int64_t in, int64_t out, const T* x, const T* w, T* y,
                    bool accumulate) {
    gemm<T>(false, true, n, out, in, T(1), x, in, w, in, accumulate ? T(1) : T(0), y, out);
}

template <typename T>
void linear_backward(int64_t n, int64_t in, int64_t out, const T* x, const T* w, const T* dy, T* dx,
                     bool accumulate_dx, T* dw) {
    if (dx)
        gemm<T>(false, false, n, in, out, T(1), dy, out, w, in, accumulate_dx ? T(1) : T(0), dx,
                in);
    if (n > 0) gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dw, in);
}

template <typename T>
void rmsnorm_forward(int64_t n, int64_t h, const T* x, const T* w, double eps, T* y, T* rstd) {
    const T e = static_cast<T>(eps);
    for (int64_t i = 0; i < n; ++i) {
        const T* xr = x + i * h;
        T* yr = y + i * h;
        T ss = 0;
        for (int64_t j = 0; j < h; ++j) ss += xr[j] * xr[j];
        const T r = T(1) / std::sqrt(ss / static_cast<T>(h) + e);
        rstd[i] = r;
        for (int64_t j = 0; j < h; ++j) yr[j] = xr[j] * r * w[j];
    }
}

template <typename T>
void rmsnorm_backward(int64_t n, int64_t h, const T* x, const T* w, const T* rstd, const T* dy,
                      T* dx, bool accumulate_dx, T* dw) {
    const T inv_h = T(1) / static_cast<T>(h);
    for (int64_t i = 0; i < n; ++i) {
        const T* xr = x + i * h;
        const T* dyr = dy + i * h;
        T* dxr = dx + i * h;
        const T r = rstd[i];
        T dot = 0;  // sum_j dy_j w_j x_j
        for (int64_t j = 0; j < h; ++j) {
            dot += dyr[j] * w[j] * xr[j];
            dw[j] += dyr[j] * xr[j] * r;
        }
        const T c = dot * r * r * r * inv_h;
        if (accumulate_dx) {
            for (int64_t j = 0; j < h; ++j) dxr[j] += r * dyr[j] * w[j] - c * xr[j];
        } else {
            for (int64_t j = 0; j < h; ++j) dxr[j] = r * dyr[j] * w[j] - c * xr[j];
        }
    }
}

template <typename T>
RopeTable<T>::RopeTable(int max_positions, int head_dim, double theta)
    : RopeTable(max_positions, head_dim, [&] {
          std::vector<double> inv(static_cast<size_t>(head_dim / 2));
          for (int i = 0; i < head_dim / 2; ++i) inv[i] = std::pow(theta, -2.0 * i / head_dim);
          return inv;
      }()) {}

template <typename T>
RopeTable<T>::RopeTable(int max_positions, int head_dim, const std::vector<double>& inv_freq)
    : max_positions_(max_positions), head_dim_(head_dim), half_(head_dim / 2) {
    cos_.resize(static_cast<size_t>(max_positions) * half_);
    sin_.resize(cos_.size());
    for (int p = 0; p < max_positions; ++p) {
        for (int i = 0; i < half_; ++i) {
            const double angle = p * inv_freq[static_cast<size_t>(i)];
            cos_[static_cast<size_t>(p) * half_ + i] = static_cast<T>(std::cos(angle));
            sin_[static_cast<size_t>(p) * half_ + i] = static_cast<T>(std::sin(angle));
        }
    }
}

template <typename T>
void rope_apply(int64_t n, int heads, const int32_t* pos, const RopeTable<T>& table, T* x,
                bool inverse) {
    const int d = table.head_dim(), half = d / 2;
    for (int64_t r = 0; r < n; ++r) {
        const T* c = table.cos(pos[r]);
        const T* s = table.sin(pos[r]);
        for (int hd = 0; hd < heads; ++hd) {
            T* v = x + (r * heads + hd) * d;
            if (!inverse) {
                for (int i = 0; i < half; ++i) {
                    const T a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = b * c[i] + a * s[i];
                }
            } else {
                for (int i = 0; i < half; ++i) {
                    const T a = v[i], b = v[i + half];
                    v[i] = a * c[i] + b * s[i];
                    v[i + half] = b * c[i] - a * s[i];
                }
            }
        }
    }
}

template <typename T>
void swiglu_forward(int64_t count, const T* g, const T* u, T* s) {
    for (int64_t i = 0; i < count; ++i) {
        const T sig = T(1) / (T(1) + std::exp(-g[i]));
        s[i] = g[i] * sig * u[i];
    }
}

template <typename T>
void swiglu_backward(int64_t count, const T* g, const T* u, const T* ds, T* dg, T* du) {
    for (int64_t i = 0; i < count; ++i) {
        const T sig = T(1) / (T(1) + std::exp(-g[i]));
        const T silu = g[i] * sig;
        du[i] = ds[i] * silu;
        dg[i] = ds[i] * u[i] * sig * (T(1) + g[i] * (T(1) - sig));
    }
}

template <typename T>
void token_logprob_forward(int64_t n, int64_t vocab, const T* logits, const int32_t* target,
                           double inv_temp, T* logp, T* entropy) {
    const T it = static_cast<T>(inv_temp);
    for (int64_t i = 0; i < n; ++i) {
        const T* z = logits + i * vocab;
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < vocab; ++j) m = std::max(m, z[j] * it);
        T sum = 0, dot = 0;
        for (int64_t j = 0; j < vocab; ++j) {
            const T zj = z[j] * it - m;
            const T e = std::exp(zj);
            sum += e;
            dot += e * zj;
        }
        const T log_sum = std::log(sum);
        logp[i] = z[target[i]] * it - m - log_sum;
        if (entropy) entropy[i] = log_sum - dot / sum;
    }
}

template <typename T>
void token_logprob_backward(int64_t n, int64_t vocab, const T* logits, const int32_t* target,
                            double inv_temp, const T* weight, T* dlogits) {
    const T it = static_cast<T>(inv_temp);
    for (int64_t i = 0; i < n; ++i) {
        const T* z = logits + i * vocab;
        T* dz = dlogits + i * vocab;
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < vocab; ++j) m = std::max(m, z[j] * it);
        T sum = 0;
        for (int64_t j = 0; j < vocab; ++j) {
            dz[j] = std::exp(z[j] * it - m);
            sum += dz[j];
        }
        const T scale = -weight[i] * it / sum;
        for (int64_t j = 0; j < vocab; ++j) dz[j] *= scale;
        dz[target[i]] += weight[i] * it;
    }
}

// ---- attention ----

template <>
Status attention_forward<float>(const kernels::AttentionParams& p, const float* q, const float* k,
                                const float* v, float* o, float* lse) {
    return kernels::attention_forward_cpu(p, q, k, v, o, lse);
}

template <>
Status attention_backward<float>(const kernels::AttentionParams& p, const float* q, const float* k,
                                 const float* v, const float* o, const float* lse,
                                 const float* dout, float* dq, float* dk, float* dv) {
    return kernels::attention_backward_cpu(p, q, k, v, o, lse, dout, dq, dk, dv, false);
}

namespace {

bool visible(const kernels::AttentionParams& p, int64_t i, int64_t j) {
    return !p.causal || p.k_pos0 + j <= p.q_pos0 + i;
}

}  // namespace

// Direct reference: S = scale Q K^T, P = softmax(S) per row, O = P V.
template <>
Status attention_forward<double>(const kernels::AttentionParams& p, const double* q,
                                 const double* k, const double* v, double* o, double* lse) {
    if (p.accumulate) return invalid_argument("attention_forward<double>: accumulate unsupported");
    const int d = p.d, rep = p.hq / p.hkv;
    const int64_t ls = p.lse_stride ? p.lse_stride : p.tq;
    std::vector<double> s(static_cast<size_t>(p.tk));
    for (int h = 0; h < p.hq; ++h) {
        const int g = h / rep;
        for (int64_t i = 0; i < p.tq; ++i) {
            const double* qi = q + (i * p.hq + h) * d;
            double m = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j < p.tk; ++j) {
                if (!visible(p, i, j)) continue;
                const double* kj = k + (j * p.hkv + g) * d;
                double dot = 0;
                for (int x = 0; x < d; ++x) dot += qi[x] * kj[x];
                s[j] = dot * p.scale;
                m = std::max(m, s[j]);
            }
            double* oi = o + (i * p.hq + h) * d;
            for (int x = 0; x < d; ++x) oi[x] = 0;
            if (m == -std::numeric_limits<double>::infinity()) {
                lse[h * ls + i] = m;
                continue;
            }
            double sum = 0;
            for (int64_t j = 0; j < p.tk; ++j) {
                if (!visible(p, i, j)) continue;
                const double e = std::exp(s[j] - m);
                sum += e;
                const double* vj = v + (j * p.hkv + g) * d;
                for (int x = 0; x < d; ++x) oi[x] += e * vj[x];
            }
            for (int x = 0; x < d; ++x) oi[x] /= sum;
            lse[h * ls + i] = m + std::log(sum);
        }
    }
    return Status();
}

// dP = dO V^T, dS = P (dP - rowsum(dO o O)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
template <>
Status attention_backward<double>(const kernels::AttentionParams& p, const double* q,
                                  const double* k, const double* v, const double* o,
                                  const double* lse, const double* dout, double* dq, double* dk,
                                  double* dv) {
    const int d = p.d, rep = p.hq / p.hkv;
    const int64_t ls = p.lse_stride ? p.lse_stride : p.tq;
    std::fill(dq, dq + p.tq * p.hq * d, 0.0);
    std::fill(dk, dk + p.tk * p.hkv * d, 0.0);
    std::fill(dv, dv + p.tk * p.hkv * d, 0.0);
    for (int h = 0; h < p.hq; ++h) {
        const int g = h / rep;
        for (int64_t i = 0; i < p.tq; ++i) {
            const double l = lse[h * ls + i];
            if (l == -std::numeric_limits<double>::infinity()) continue;
            const double* qi = q + (i * p.hq + h) * d;
            const double* oi = o + (i * p.hq + h) * d;
            const double* doi = dout + (i * p.hq + h) * d;
            double delta = 0;
            for (int x = 0; x < d; ++x) delta += doi[x] * oi[x];
            for (int64_t j = 0; j < p.tk; ++j) {
                if (!visible(p, i, j)) continue;
                const double* kj = k + (j * p.hkv + g) * d;
                const double* vj = v + (j * p.hkv + g) * d;
                double sdot = 0, dpij = 0;
                for (int x = 0; x < d; ++x) {
                    sdot += qi[x] * kj[x];
                    dpij += doi[x] * vj[x];
                }
                const double pij = std::exp(sdot * p.scale - l);
                const double ds = pij * (dpij - delta);
                double* dqi = dq + (i * p.hq + h) * d;
                double* dkj = dk + (j * p.hkv + g) * d;
                double* dvj = dv + (j * p.hkv + g) * d;
                for (int x = 0; x < d; ++x) {
                    dqi[x] += p.scale * ds * kj[x];
                    dkj[x] += p.scale * ds * qi[x];
                    dvj[x] += pij * doi[x];
                }
            }
        }
    }
    return Status();
}

template void linear_forward<float>(int64_t, int64_t, int64_t, const float*, const float*, float*,
                                    bool);
template void linear_backward<float>(int64_t, int64_t, int64_t, const float*, const float*,
                                     const float*, float*, bool, float*);
template void rmsnorm_forward<float>(int64_t, int64_t, const float*, const float*, double, float*,
                                     float*);
template void rmsnorm_backward<float>(int64_t, int64_t, const float*, const float*, const float*,
                                      const float*, float*, bool, float*);
template class RopeTable<float>;
template void rope_apply<float>(int64_t, int, const int32_t*, const RopeTable<float>&, float*,
                                bool);
template void swiglu_forward<float>(int64_t, const float*, const float*, float*);
template void swiglu_backward<float>(int64_t, const float*, const float*, const float*, float*,
                                     float*);
template void token_logprob_forward<float>(int64_t, int64_t, const float*, const int32_t*, double,
                                           float*, float*);
template void token_logprob_backward<float>(int64_t, int64_t, const float*, const int32_t*, double,
                                            const float*, float*);

template void linear_forward<double>(int64_t, int64_t, int64_t, const double*, const double*,
                                     double*, bool);
template void linear_backward<double>(int64_t, int64_t, int64_t, const double*, const double*,
                                      const double*, double*, bool, double*);
template void rmsnorm_forward<double>(int64_t, int64_t, const double*, const double*, double,
                                      double*, double*);
template void rmsnorm_backward<double>(int64_t, int64_t, const double*, const double*,
                                       const double*, const double*, double*, bool, double*);
template class RopeTable<double>;
template void rope_apply<double>(int64_t, int, const int32_t*, const RopeTable<double>&, double*,
                                 bool);
template void swiglu_forward<double>(int64_t, const double*, const double*, double*);
template void swiglu_backward<double>(int64_t, const double*, const double*, const double*, double*,
                                      double*);
template void token_logprob_forward<double>(int64_t, int64_t, const double*, const int32_t*, double,
                                            double*, double*);
template void token_logprob_backward<double>(int64_t, int64_t, const double*, const int32_t*,
                                             double, const double*, double*);

}  // namespace tandem::model
