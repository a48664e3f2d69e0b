// Blockwise online-softmax attention forward on the CPU (fp32).
//
// For each key/value head the keys are packed once into transposed panels (kt: [d][kBk] per key
// block) and the values into row panels (vp: [kBk][dp], dp = d rounded up to 16). Each block of
// kBq query rows of each query head then walks the key blocks: S = Q Kt with a register-blocked
// micro-kernel, an online softmax in base 2 (the scale is folded with log2(e) into the packed
// queries), and O = diag(alpha) O + P V. Causal blocks entirely above the diagonal are skipped.
#include <cmath>
#include <iterator>
#include <limits>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/simd.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int64_t kBq = 64;   // query rows per block
constexpr int64_t kBk = 64;   // key rows per block (a multiple of every vector width)
constexpr int64_t kPad = 16;  // head-dimension padding: a multiple of every vector width
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Scratch memory for one call, carved from the calling thread's scratch before the per-ISA
// code runs (the per-ISA code then allocates nothing).
struct ForwardWorkspace {
    explicit ForwardWorkspace(const AttentionParams& p)
        : dp(round_up(p.d, kPad)), nkb((p.tk + kBk - 1) / kBk) {
        const int64_t sizes[] = {
            nkb * p.d * kBk, nkb * kBk * dp, kBq * p.d, kBq * kBk, kBq * dp, kBq, kBq, kBq};
        float** slots[] = {&kt, &vp, &qs, &s, &ob, &m, &l, &alpha};
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
    float *kt, *vp, *qs, *s, *ob, *m, *l, *alpha;
};

// Packs key/value head g into transposed key panels and padded value panels.
TANDEM_ALWAYS_INLINE void pack_kv(const AttentionParams& p, int g, const float* k, const float* v,
                                  ForwardWorkspace& ws) {
    const int64_t d = p.d, dp = ws.dp, row = static_cast<int64_t>(p.hkv) * d;
    for (int64_t kb = 0; kb < ws.nkb; ++kb) {
        const int64_t j0 = kb * kBk;
        const int64_t kn = p.tk - j0 < kBk ? p.tk - j0 : kBk;
        float* kt = ws.kt + kb * d * kBk;
        float* vp = ws.vp + kb * kBk * dp;
        for (int64_t j = 0; j < kBk; ++j) {
            if (j < kn) {
                const float* kr = k + (j0 + j) * row + g * d;
                const float* vr = v + (j0 + j) * row + g * d;
                for (int64_t x = 0; x < d; ++x) kt[x * kBk + j] = kr[x];
                for (int64_t x = 0; x < d; ++x) vp[j * dp + x] = vr[x];
                for (int64_t x = d; x < dp; ++x) vp[j * dp + x] = 0.0f;
            } else {
                for (int64_t x = 0; x < d; ++x) kt[x * kBk + j] = 0.0f;
                for (int64_t x = 0; x < dp; ++x) vp[j * dp + x] = 0.0f;
            }
        }
    }
}

// Online softmax over one row of kBk scores (base 2); replaces the scores by probabilities
// relative to the new running max and returns the rescale factor for the old accumulator.
template <int W>
TANDEM_ALWAYS_INLINE float softmax_row(float* srow, float& m, float& l) {
    Vec<W> mx = load<W>(srow);
    TANDEM_UNROLL for (int64_t j = W; j < kBk; j += W) mx = vmax<W>(mx, load<W>(srow + j));
    const float row_max = hmax<W>(mx);
    const float m_new = row_max > m ? row_max : m;
    if (m_new == kNegInf) {  // nothing visible yet: keep the empty state, P = 0
        TANDEM_UNROLL for (int64_t j = 0; j < kBk; j += W) store<W>(srow + j, Vec<W>{});
        return 1.0f;
    }
    const Vec<W> shift = splat<W>(m_new);
    Vec<W> sum{};
    TANDEM_UNROLL for (int64_t j = 0; j < kBk; j += W) {
        const Vec<W> pj = exp2v<W>(load<W>(srow + j) - shift);
        store<W>(srow + j, pj);
        sum += pj;
    }
    float rs = 0.0f;
    TANDEM_UNROLL for (int i = 0; i < W; ++i) rs += sum[i];
    const float alpha = m == kNegInf ? 0.0f : exp2v<W>(splat<W>(m - m_new))[0];
    l = l * alpha + rs;
    m = m_new;
    return alpha;
}

template <class Isa>
TANDEM_ALWAYS_INLINE void forward_impl(const AttentionParams& p, const float* q, const float* k,
                                       const float* v, float* o, float* lse, ForwardWorkspace& ws) {
    constexpr int W = Isa::kW;
    const int64_t d = p.d, dp = ws.dp;
    const int rep = p.hq / p.hkv;
    const int64_t ls = p.lse_stride != 0 ? p.lse_stride : p.tq;
    const int64_t q_row = static_cast<int64_t>(p.hq) * d;
    const float scale2 = p.scale * kLog2e;
    float* m = ws.m;
    float* l = ws.l;
    float* alpha = ws.alpha;
    float* s = ws.s;
    float* ob = ws.ob;
    float* qs = ws.qs;

    for (int g = 0; g < p.hkv; ++g) {
        pack_kv(p, g, k, v, ws);
        for (int r = 0; r < rep; ++r) {
            const int h = g * rep + r;
            for (int64_t i0 = 0; i0 < p.tq; i0 += kBq) {
                const int64_t bq = p.tq - i0 < kBq ? p.tq - i0 : kBq;
                // Keys [0, kend) can be visible to some row of this block.
                const int64_t kend =
                    p.causal ? keys_visible_at(p, query_position(p, i0 + bq - 1)) : p.tk;
                for (int64_t i = 0; i < bq; ++i) {
                    const float* qr = q + (i0 + i) * q_row + h * d;
                    for (int64_t x = 0; x < d; ++x) qs[i * d + x] = qr[x] * scale2;
                }
                for (int64_t i = 0; i < bq; ++i) {
                    const float prev = p.accumulate ? lse[h * ls + i0 + i] : kNegInf;
                    float* orow = ob + i * dp;
                    if (prev == kNegInf) {
                        m[i] = kNegInf;
                        l[i] = 0.0f;
                        for (int64_t x = 0; x < dp; ++x) orow[x] = 0.0f;
                    } else {
                        m[i] = prev * kLog2e;
                        l[i] = 1.0f;
                        const float* oin = o + (i0 + i) * q_row + h * d;
                        for (int64_t x = 0; x < d; ++x) orow[x] = oin[x];
                        for (int64_t x = d; x < dp; ++x) orow[x] = 0.0f;
                    }
                }
                const int64_t nblocks = (kend + kBk - 1) / kBk;
                for (int64_t kb = 0; kb < nblocks; ++kb) {
                    const int64_t j0 = kb * kBk;
                    const int64_t kn = p.tk - j0 < kBk ? p.tk - j0 : kBk;
                    gemm<Isa, GemmMode::kOverwrite>(bq, kBk, d, qs, d, ws.kt + kb * d * kBk, kBk, s,
                                                    kBk);
                    const bool diagonal =  // some key of the block is masked for some row
                        p.causal && key_position(p, j0 + kn - 1) > query_position(p, i0);
                    if (kn < kBk || diagonal) {
                        for (int64_t i = 0; i < bq; ++i) {
                            int64_t limit = kn;
                            if (p.causal) {
                                const int64_t vis =
                                    keys_visible_at(p, query_position(p, i0 + i)) - j0;
                                limit = vis < 0 ? 0 : (vis < kn ? vis : kn);
                            }
                            for (int64_t j = limit; j < kBk; ++j) s[i * kBk + j] = kNegInf;
                        }
                    }
                    for (int64_t i = 0; i < bq; ++i)
                        alpha[i] = softmax_row<W>(s + i * kBk, m[i], l[i]);
                    gemm<Isa, GemmMode::kScaleAccumulate>(bq, dp, kn, s, kBk, ws.vp + kb * kBk * dp,
                                                          dp, ob, dp, alpha);
                }
                for (int64_t i = 0; i < bq; ++i) {
                    float* orow = o + (i0 + i) * q_row + h * d;
                    if (l[i] == 0.0f) {
                        for (int64_t x = 0; x < d; ++x) orow[x] = 0.0f;
                        lse[h * ls + i0 + i] = kNegInf;
                    } else {
                        const float inv = 1.0f / l[i];
                        for (int64_t x = 0; x < d; ++x) orow[x] = ob[i * dp + x] * inv;
                        lse[h * ls + i0 + i] = (m[i] + std::log2(l[i])) * kLn2;
                    }
                }
            }
        }
    }
}

void forward_generic(const AttentionParams& p, const float* q, const float* k, const float* v,
                     float* o, float* lse, ForwardWorkspace& ws) {
    forward_impl<IsaGeneric>(p, q, k, v, o, lse, ws);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void forward_avx2(const AttentionParams& p, const float* q,
                                                      const float* k, const float* v, float* o,
                                                      float* lse, ForwardWorkspace& ws) {
    forward_impl<IsaAvx2>(p, q, k, v, o, lse, ws);
}

__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))) void forward_avx512(
    const AttentionParams& p, const float* q, const float* k, const float* v, float* o, float* lse,
    ForwardWorkspace& ws) {
    forward_impl<IsaAvx512>(p, q, k, v, o, lse, ws);
}
#endif

}  // namespace

Status attention_forward_cpu_isa(CpuIsa isa, const AttentionParams& p, const float* q,
                                 const float* k, const float* v, float* o, float* lse) {
    TANDEM_RETURN_IF_ERROR(validate(p));
    if (!cpu_isa_supported(isa)) {
        return invalid_argument(std::string("attention: this CPU cannot run the ") +
                                std::string(cpu_isa_name(isa)) + " kernel");
    }
    if (p.tq == 0) return Status();
    if (!q || !o || !lse || (p.tk > 0 && (!k || !v))) {
        return invalid_argument("attention_forward_cpu: null tensor pointer");
    }
    ForwardWorkspace ws(p);
    switch (isa) {
#if defined(__x86_64__)
        case CpuIsa::kAvx512:
            forward_avx512(p, q, k, v, o, lse, ws);
            break;
        case CpuIsa::kAvx2:
            forward_avx2(p, q, k, v, o, lse, ws);
            break;
#endif
        default:
            forward_generic(p, q, k, v, o, lse, ws);
            break;
    }
    return Status();
}

}  // namespace tandem::kernels::cpu

namespace tandem::kernels {

Status attention_forward_cpu(const AttentionParams& p, const float* q, const float* k,
                             const float* v, float* o, float* lse) {
    return cpu::attention_forward_cpu_isa(cpu::best_cpu_isa(), p, q, k, v, o, lse);
}

}  // namespace tandem::kernels
