#pragma once

// Internal to kernels/cpu: portable SIMD building blocks written with GCC/Clang vector
// extensions. Every function here is always_inline and carries no target attribute of its own, so
// it is compiled with the instruction set of the per-ISA entry point that inlines it
// (`__attribute__((target("avx512f,...")))` in the .cc files). Nothing here is ever emitted as an
// out-of-line function, which keeps AVX-512 code out of the baseline path.

#include <cstdint>
#include <cstring>
#include <memory>

#define TANDEM_ALWAYS_INLINE [[gnu::always_inline]] inline
#define TANDEM_UNROLL _Pragma("GCC unroll 16")

namespace tandem::kernels::cpu {

// Per-ISA shape of the register-blocked micro-kernel: kMr rows by kNv vectors of kW floats.
struct IsaGeneric {  // SSE2, the x86-64 baseline
    static constexpr int kW = 4;
    static constexpr int kMr = 4;
    static constexpr int kNv = 2;
};
struct IsaAvx2 {  // AVX2 + FMA: 16 ymm registers, 8 accumulators
    static constexpr int kW = 8;
    static constexpr int kMr = 4;
    static constexpr int kNv = 2;
};
struct IsaAvx512 {  // AVX-512F: 32 zmm registers, 16 accumulators
    static constexpr int kW = 16;
    static constexpr int kMr = 4;
    static constexpr int kNv = 4;
};

template <int W>
struct VecOf {
    typedef float type __attribute__((vector_size(W * sizeof(float))));
    typedef int32_t itype __attribute__((vector_size(W * sizeof(int32_t))));
};

template <int W>
using Vec = typename VecOf<W>::type;
template <int W>
using IVec = typename VecOf<W>::itype;

template <int W>
TANDEM_ALWAYS_INLINE Vec<W> load(const float* p) {
    Vec<W> v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <int W>
TANDEM_ALWAYS_INLINE void store(float* p, Vec<W> v) {
    std::memcpy(p, &v, sizeof(v));
}

template <int W>
TANDEM_ALWAYS_INLINE Vec<W> splat(float x) {
    return Vec<W>{} + x;
}

template <int W>
TANDEM_ALWAYS_INLINE Vec<W> vmax(Vec<W> a, Vec<W> b) {
    return a > b ? a : b;  // element-wise select
}

template <int W>
TANDEM_ALWAYS_INLINE float hmax(Vec<W> v) {
    float m = v[0];
    TANDEM_UNROLL for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
    return m;
}

// 2^x for a vector, relative error about 1e-7 on the normal range. Inputs below -126 (and -inf)
// give exactly 0; inputs above 127 saturate at 2^127 (callers only pass x <= 0).
template <int W>
TANDEM_ALWAYS_INLINE Vec<W> exp2v(Vec<W> x) {
    const Vec<W> lo = splat<W>(-126.0f);
    const IVec<W> underflow = x < lo;
    x = x < lo ? lo : x;
    x = x > splat<W>(127.0f) ? splat<W>(127.0f) : x;
    // Round to nearest with the 1.5 * 2^23 trick; n is then read from the low mantissa bits.
    const Vec<W> magic = splat<W>(12582912.0f);
    const Vec<W> shifted = x + magic;
    const Vec<W> n = shifted - magic;
    const Vec<W> f = x - n;  // in [-0.5, 0.5]
    IVec<W> ni;
    std::memcpy(&ni, &shifted, sizeof(ni));
    ni = ni - 0x4B400000;  // bits of `magic`
    // Taylor series of 2^f = e^(f ln 2) to degree 7: error below 5e-9 on [-0.5, 0.5].
    Vec<W> p = splat<W>(1.5252734e-5f);  // ln2^7 / 7!
    p = p * f + 1.5403530e-4f;           // ln2^6 / 6!
    p = p * f + 1.3333558e-3f;           // ln2^5 / 5!
    p = p * f + 9.6181291e-3f;           // ln2^4 / 4!
    p = p * f + 5.5504109e-2f;           // ln2^3 / 3!
    p = p * f + 2.4022651e-1f;           // ln2^2 / 2!
    p = p * f + 6.9314718e-1f;           // ln2
    p = p * f + 1.0f;
    IVec<W> bits;
    std::memcpy(&bits, &p, sizeof(bits));
    bits = bits + (ni << 23);
    bits = bits & ~underflow;  // exactly 0 below -126
    Vec<W> out;
    std::memcpy(&out, &bits, sizeof(out));
    return out;
}

enum class GemmMode {
    kOverwrite,       // C = A B
    kAccumulate,      // C += A B
    kScaleAccumulate  // C = diag(row_scale) C + A B
};

// C[MR x NV*W] (op)= A[MR x K] B[K x NV*W]: A row-major with leading dimension lda (scalars
// broadcast), B row-major with leading dimension ldb (vector loads), C row-major (ldc).
template <int W, int MR, int NV, GemmMode kMode>
TANDEM_ALWAYS_INLINE void micro_kernel(int64_t k, const float* a, int64_t lda, const float* b,
                                       int64_t ldb, float* c, int64_t ldc, const float* row_scale) {
    Vec<W> acc[MR][NV];
    TANDEM_UNROLL for (int r = 0; r < MR; ++r) {
        TANDEM_UNROLL for (int j = 0; j < NV; ++j) {
            if constexpr (kMode == GemmMode::kOverwrite) {
                acc[r][j] = Vec<W>{};
            } else if constexpr (kMode == GemmMode::kAccumulate) {
                acc[r][j] = load<W>(c + r * ldc + j * W);
            } else {
                acc[r][j] = load<W>(c + r * ldc + j * W) * row_scale[r];
            }
        }
    }
    for (int64_t x = 0; x < k; ++x) {
        Vec<W> bv[NV];
        TANDEM_UNROLL for (int j = 0; j < NV; ++j) bv[j] = load<W>(b + x * ldb + j * W);
        TANDEM_UNROLL for (int r = 0; r < MR; ++r) {
            const float av = a[r * lda + x];
            TANDEM_UNROLL for (int j = 0; j < NV; ++j) acc[r][j] += av * bv[j];
        }
    }
    TANDEM_UNROLL for (int r = 0; r < MR; ++r) {
        TANDEM_UNROLL for (int j = 0; j < NV; ++j) store<W>(c + r * ldc + j * W, acc[r][j]);
    }
}

template <int W, int MR, int NV, GemmMode kMode>
TANDEM_ALWAYS_INLINE void gemm_rows(int64_t n, int64_t k, const float* a, int64_t lda,
                                    const float* b, int64_t ldb, float* c, int64_t ldc,
                                    const float* row_scale) {
    int64_t col = 0;
    for (; col + NV * W <= n; col += NV * W) {
        micro_kernel<W, MR, NV, kMode>(k, a, lda, b + col, ldb, c + col, ldc, row_scale);
    }
    // Column tail: n is a multiple of W, so whole vectors remain.
    for (; col < n; col += W) {
        micro_kernel<W, MR, 1, kMode>(k, a, lda, b + col, ldb, c + col, ldc, row_scale);
    }
}

// C[m x n] (op)= A[m x k] B[k x n]; n must be a multiple of Isa::kW. Deterministic: every C
// element is a sequential sum over x = 0..k-1.
template <class Isa, GemmMode kMode>
TANDEM_ALWAYS_INLINE void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                               const float* b, int64_t ldb, float* c, int64_t ldc,
                               const float* row_scale = nullptr) {
    constexpr int W = Isa::kW;
    constexpr int MR = Isa::kMr;
    constexpr int NV = Isa::kNv;
    int64_t row = 0;
    for (; row + MR <= m; row += MR) {
        gemm_rows<W, MR, NV, kMode>(n, k, a + row * lda, lda, b, ldb, c + row * ldc, ldc,
                                    row_scale ? row_scale + row : nullptr);
    }
    for (; row < m; ++row) {
        gemm_rows<W, 1, NV, kMode>(n, k, a + row * lda, lda, b, ldb, c + row * ldc, ldc,
                                   row_scale ? row_scale + row : nullptr);
    }
}

constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Grow-only scratch memory of one thread, reused by the kernels' successive calls on that thread
// so small calls (ring steps, decode) do not pay for allocating and faulting in fresh pages.
// Contents are uninitialised; every kernel writes what it reads.
class ThreadScratch {
public:
    static float* get(size_t floats) {
        thread_local ThreadScratch scratch;  // one per thread, freed at thread exit
        if (floats > scratch.capacity_) {
            scratch.buffer_.reset(new float[floats]);
            scratch.capacity_ = floats;
        }
        return scratch.buffer_.get();
    }

private:
    std::unique_ptr<float[]> buffer_;
    size_t capacity_ = 0;
};

}  // namespace tandem::kernels::cpu
