// Blockwise attention backward on the CPU (fp32 in, fp32 accumulators).
//
// Recomputes P = exp(S - lse) block by block from the forward's lse, so no [tq, tk] matrix is
// stored. Per key/value head g and key block: dV_b += P^T dO, dP = dO V^T, dS = P (dP - delta),
// dQ += scale dS K_b, dK_b += scale dS^T Q, where delta_i = <dO_i, O_i>. The key block's dK/dV
// accumulators live in the workspace until every query block has contributed; dQ is added block
// by block in a fixed order, so the result is bitwise reproducible.
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/simd.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int64_t kBq = 64;
constexpr int64_t kBk = 64;
constexpr int64_t kPad = 16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Scratch memory for one call, carved from the calling thread's scratch.
struct BackwardWorkspace {
    explicit BackwardWorkspace(const AttentionParams& p)
        : dp(round_up(p.d, kPad)), nkb((p.tk + kBk - 1) / kBk) {
        const int64_t sizes[] = {nkb * p.d * kBk, nkb * p.d * kBk, nkb * kBk * dp, kBq * p.d,
                                 kBq * dp,        kBq * dp,        kBq * kBk,      kBq * kBk,
                                 kBk * kBq,       kBk * kBq,       kBq * dp,       kBk * dp,
                                 kBk * dp,        p.hq * p.tq};
        float** slots[] = {&kt, &vt, &kp,  &qs,     &qp,     &dop,    &s,
                           &ds, &pt, &dst, &dq_tmp, &dk_acc, &dv_acc, &delta};
        int64_t total = 0;
        for (int64_t n : sizes) total += round_up(n, kPad);
        float* base = ThreadScratch::get(static_cast<size_t>(total));
        for (size_t i = 0; i < std::size(sizes); ++i) {
            *slots[i] = base;
            base += round_up(sizes[i], kPad);
        }
    }
    int64_t dp;
    int64_t nkb;
    float *kt, *vt, *kp, *qs, *qp, *dop, *s, *ds, *pt, *dst, *dq_tmp, *dk_acc, *dv_acc, *delta;
};

TANDEM_ALWAYS_INLINE void pack_kv(const AttentionParams& p, int g, const float* k, const float* v,
                                  BackwardWorkspace& ws) {
    const int64_t d = p.d, dp = ws.dp, row = static_cast<int64_t>(p.hkv) * d;
    for (int64_t kb = 0; kb < ws.nkb; ++kb) {
        const int64_t j0 = kb * kBk;
        const int64_t kn = p.tk - j0 < kBk ? p.tk - j0 : kBk;
        float* kt = ws.kt + kb * d * kBk;
        float* vt = ws.vt + kb * d * kBk;
        float* kp = ws.kp + kb * kBk * dp;
        for (int64_t j = 0; j < kBk; ++j) {
            const bool live = j < kn;
            const float* kr = live ? k + (j0 + j) * row + g * d : nullptr;
            const float* vr = live ? v + (j0 + j) * row + g * d : nullptr;
            for (int64_t x = 0; x < d; ++x) {
                kt[x * kBk + j] = live ? kr[x] : 0.0f;
                vt[x * kBk + j] = live ? vr[x] : 0.0f;
                kp[j * dp + x] = live ? kr[x] : 0.0f;
            }
            for (int64_t x = d; x < dp; ++x) kp[j * dp + x] = 0.0f;
        }
    }
}

template <class Isa>
TANDEM_ALWAYS_INLINE void backward_impl(const AttentionParams& p, const float* q, const float* k,
                                        const float* v, const float* o, const float* lse,
                                        const float* dout, float* dq, float* dk, float* dv,
                                        BackwardWorkspace& ws) {
    constexpr int W = Isa::kW;
    const int64_t d = p.d, dp = ws.dp;
    const int rep = p.hq / p.hkv;
    const int64_t ls = p.lse_stride != 0 ? p.lse_stride : p.tq;
    const int64_t q_row = static_cast<int64_t>(p.hq) * d;
    const int64_t kv_row = static_cast<int64_t>(p.hkv) * d;
    const float scale2 = p.scale * kLog2e;
    float* delta = ws.delta;
    float* s = ws.s;
    float* ds = ws.ds;
    float* pt = ws.pt;
    float* dst = ws.dst;
    float* qs = ws.qs;
    float* qp = ws.qp;
    float* dop = ws.dop;
    float* dq_tmp = ws.dq_tmp;
    float* dk_acc = ws.dk_acc;
    float* dv_acc = ws.dv_acc;

    for (int h = 0; h < p.hq; ++h) {
        for (int64_t i = 0; i < p.tq; ++i) {
            const float* orow = o + i * q_row + h * d;
            const float* grow = dout + i * q_row + h * d;
            float acc = 0.0f;
            for (int64_t x = 0; x < d; ++x) acc += orow[x] * grow[x];
            delta[h * p.tq + i] = acc;
        }
    }

    for (int g = 0; g < p.hkv; ++g) {
        pack_kv(p, g, k, v, ws);
        for (int64_t kb = 0; kb < ws.nkb; ++kb) {
            const int64_t j0 = kb * kBk;
            const int64_t kn = p.tk - j0 < kBk ? p.tk - j0 : kBk;
            for (int64_t x = 0; x < kBk * dp; ++x) dk_acc[x] = 0.0f;
            for (int64_t x = 0; x < kBk * dp; ++x) dv_acc[x] = 0.0f;
            // Query rows before istart see none of this block's keys.
            const int64_t istart = p.causal ? queries_before(p, key_position(p, j0)) : 0;
            const float* ktb = ws.kt + kb * d * kBk;
            const float* vtb = ws.vt + kb * d * kBk;
            const float* kpb = ws.kp + kb * kBk * dp;
            for (int r = 0; r < rep; ++r) {
                const int h = g * rep + r;
                for (int64_t i0 = istart; i0 < p.tq; i0 += kBq) {
                    const int64_t bq = p.tq - i0 < kBq ? p.tq - i0 : kBq;
                    for (int64_t i = 0; i < bq; ++i) {
                        const float* qr = q + (i0 + i) * q_row + h * d;
                        const float* gr = dout + (i0 + i) * q_row + h * d;
                        for (int64_t x = 0; x < d; ++x) {
                            qs[i * d + x] = qr[x] * scale2;
                            qp[i * dp + x] = qr[x];
                            dop[i * dp + x] = gr[x];
                        }
                        for (int64_t x = d; x < dp; ++x) {
                            qp[i * dp + x] = 0.0f;
                            dop[i * dp + x] = 0.0f;
                        }
                    }
                    gemm<Isa, GemmMode::kOverwrite>(bq, kBk, d, qs, d, ktb, kBk, s, kBk);
                    gemm<Isa, GemmMode::kOverwrite>(bq, kBk, d, dop, dp, vtb, kBk, ds, kBk);
                    for (int64_t i = 0; i < bq; ++i) {
                        float* srow = s + i * kBk;
                        float* dsrow = ds + i * kBk;
                        int64_t limit = kn;
                        if (p.causal) {
                            const int64_t vis = keys_visible_at(p, query_position(p, i0 + i)) - j0;
                            limit = vis < 0 ? 0 : (vis < kn ? vis : kn);
                        }
                        const float row_lse = lse[h * ls + i0 + i];
                        if (row_lse == kNegInf) limit = 0;
                        for (int64_t j = limit; j < kBk; ++j) srow[j] = kNegInf;
                        const Vec<W> shift = splat<W>(limit == 0 ? 0.0f : row_lse * kLog2e);
                        const Vec<W> dl = splat<W>(delta[h * p.tq + i0 + i]);
                        TANDEM_UNROLL for (int64_t j = 0; j < kBk; j += W) {
                            const Vec<W> pj = exp2v<W>(load<W>(srow + j) - shift);
                            store<W>(srow + j, pj);
                            store<W>(dsrow + j, pj * (load<W>(dsrow + j) - dl) * p.scale);
                        }
                    }
                    for (int64_t i = 0; i < bq; ++i) {
                        for (int64_t j = 0; j < kn; ++j) {
                            pt[j * kBq + i] = s[i * kBk + j];
                            dst[j * kBq + i] = ds[i * kBk + j];
                        }
                    }
                    gemm<Isa, GemmMode::kAccumulate>(kn, dp, bq, pt, kBq, dop, dp, dv_acc, dp);
                    gemm<Isa, GemmMode::kAccumulate>(kn, dp, bq, dst, kBq, qp, dp, dk_acc, dp);
                    gemm<Isa, GemmMode::kOverwrite>(bq, dp, kn, ds, kBk, kpb, dp, dq_tmp, dp);
                    for (int64_t i = 0; i < bq; ++i) {
                        float* dqr = dq + (i0 + i) * q_row + h * d;
                        for (int64_t x = 0; x < d; ++x) dqr[x] += dq_tmp[i * dp + x];
                    }
                }
            }
            for (int64_t j = 0; j < kn; ++j) {
                float* dkr = dk + (j0 + j) * kv_row + g * d;
                float* dvr = dv + (j0 + j) * kv_row + g * d;
                for (int64_t x = 0; x < d; ++x) {
                    dkr[x] += dk_acc[j * dp + x];
                    dvr[x] += dv_acc[j * dp + x];
                }
            }
        }
    }
}

using BackwardFn = void (*)(const AttentionParams&, const float*, const float*, const float*,
                            const float*, const float*, const float*, float*, float*, float*,
                            BackwardWorkspace&);

void backward_generic(const AttentionParams& p, const float* q, const float* k, const float* v,
                      const float* o, const float* lse, const float* dout, float* dq, float* dk,
                      float* dv, BackwardWorkspace& ws) {
    backward_impl<IsaGeneric>(p, q, k, v, o, lse, dout, dq, dk, dv, ws);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void backward_avx2(const AttentionParams& p, const float* q,
                                                       const float* k, const float* v,
                                                       const float* o, const float* lse,
                                                       const float* dout, float* dq, float* dk,
                                                       float* dv, BackwardWorkspace& ws) {
    backward_impl<IsaAvx2>(p, q, k, v, o, lse, dout, dq, dk, dv, ws);
}

__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))) void backward_avx512(
    const AttentionParams& p, const float* q, const float* k, const float* v, const float* o,
    const float* lse, const float* dout, float* dq, float* dk, float* dv, BackwardWorkspace& ws) {
    backward_impl<IsaAvx512>(p, q, k, v, o, lse, dout, dq, dk, dv, ws);
}
#endif

}  // namespace

Status attention_backward_cpu_isa(CpuIsa isa, const AttentionParams& p, const float* q,
                                  const float* k, const float* v, const float* o, const float* lse,
                                  const float* dout, float* dq, float* dk, float* dv,
                                  bool accumulate_grads) {
    TANDEM_RETURN_IF_ERROR(validate(p));
    if (p.accumulate) {
        return invalid_argument("attention_backward_cpu: params.accumulate must be false");
    }
    if (!cpu_isa_supported(isa)) {
        return invalid_argument(std::string("attention: this CPU cannot run the ") +
                                std::string(cpu_isa_name(isa)) + " kernel");
    }
    const size_t q_elems = static_cast<size_t>(p.tq) * p.hq * p.d;
    const size_t kv_elems = static_cast<size_t>(p.tk) * p.hkv * p.d;
    if ((q_elems > 0 && (!q || !o || !lse || !dout || !dq)) ||
        (kv_elems > 0 && (!k || !v || !dk || !dv))) {
        return invalid_argument("attention_backward_cpu: null tensor pointer");
    }
    if (!accumulate_grads) {
        if (q_elems > 0) std::memset(dq, 0, q_elems * sizeof(float));
        if (kv_elems > 0) {
            std::memset(dk, 0, kv_elems * sizeof(float));
            std::memset(dv, 0, kv_elems * sizeof(float));
        }
    }
    if (q_elems == 0 || kv_elems == 0) return Status();
    BackwardWorkspace ws(p);
    BackwardFn fn = backward_generic;
#if defined(__x86_64__)
    if (isa == CpuIsa::kAvx512) fn = backward_avx512;
    if (isa == CpuIsa::kAvx2) fn = backward_avx2;
#endif
    fn(p, q, k, v, o, lse, dout, dq, dk, dv, ws);
    return Status();
}

}  // namespace tandem::kernels::cpu

namespace tandem::kernels {

Status attention_backward_cpu(const AttentionParams& p, const float* q, const float* k,
                              const float* v, const float* o, const float* lse, const float* dout,
                              float* dq, float* dk, float* dv, bool accumulate_grads) {
    return cpu::attention_backward_cpu_isa(cpu::best_cpu_isa(), p, q, k, v, o, lse, dout, dq, dk,
                                           dv, accumulate_grads);
}

}  // namespace tandem::kernels
