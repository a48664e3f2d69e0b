// CUDA attention forward (flash-style: K/V tiles streamed through shared memory, online softmax
// in base 2, fp32 accumulation, no [tq, tk] matrix in global memory).
//
// Two kernels behind one launcher:
// - attention_mma: fp16/bf16 inputs with d = 64 or 128, 16-byte-aligned. FlashAttention-2 style
//   on mma.sync m16n8k16: S, P and O in registers, K/V double-buffered with cp.async; a block of
//   128 threads per (64 query rows, query head), key tiles of 32 rows.
// - attention_simt: every dtype and d <= 256, CUDA cores only (fp32 in, or the fallback for
//   other head dims and unaligned pointers).
// attention_simt: one block of 128 threads per (64 query rows, query head).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/attention.h"

namespace tandem::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kBq = 64;  // query rows per block
constexpr int kBk = 64;  // key rows per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct KernelArgs {
    const void* q;
    const void* k;
    const void* v;
    float* o;
    float* lse;
    int64_t tq;
    int64_t tk;
    int hq;
    int hkv;
    int d;
    float scale2;  // scale * log2(e)
    int causal;
    int accumulate;
    int64_t q_pos0;
    int64_t k_pos0;
    int64_t lse_stride;
    int64_t q_split;  // see AttentionParams: a second run of positions from this row on
    int64_t q_pos1;
    int64_t k_split;
    int64_t k_pos1;
};

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
    return __half2float(x);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
    return __bfloat162float(x);
}

__device__ __forceinline__ int64_t q_position(const KernelArgs& a, int64_t i) {
    return i < a.q_split ? a.q_pos0 + i : a.q_pos1 + (i - a.q_split);
}
__device__ __forceinline__ int64_t k_position(const KernelArgs& a, int64_t j) {
    return j < a.k_split ? a.k_pos0 + j : a.k_pos1 + (j - a.k_split);
}

// Keys [0, kend) can be visible to some query row of the block of `rows` rows starting at i0:
// the keys at positions up to the block's last query (positions never decrease along the rows).
__device__ __forceinline__ int64_t key_end(const KernelArgs& a, int64_t i0, int rows) {
    if (!a.causal) return a.tk;
    const int64_t pos = q_position(a, (i0 + rows < a.tq ? i0 + rows : a.tq) - 1);
    const int64_t first_rows = a.k_split < a.tk ? a.k_split : a.tk;
    int64_t n = pos - a.k_pos0 + 1;
    n = n <= 0 ? 0 : (n < first_rows ? n : first_rows);
    if (n < first_rows || first_rows == a.tk) return n;
    int64_t m = pos - a.k_pos1 + 1;
    m = m <= 0 ? 0 : (m < a.tk - first_rows ? m : a.tk - first_rows);
    return n + m;
}

__device__ __forceinline__ bool visible(const KernelArgs& a, int64_t i, int64_t j) {
    return j < a.tk && (!a.causal || k_position(a, j) <= q_position(a, i));
}

// Online softmax over 32 scores of one row held by a lane; its partner lane (lane ^ 1) holds the
// other 32. Replaces scores by probabilities, updates (m, l), returns the rescale factor of the
// old accumulator. Every lane of the warp must call it.
__device__ __forceinline__ float online_softmax(float (&s)[32], float& m, float& l) {
    float mx = neg_inf();
#pragma unroll
    for (int c = 0; c < 32; ++c) mx = fmaxf(mx, s[c]);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    float alpha = 1.0f, rs = 0.0f;
    if (m_new == neg_inf()) {
#pragma unroll
        for (int c = 0; c < 32; ++c) s[c] = 0.0f;
    } else {
        alpha = m == neg_inf() ? 0.0f : exp2f(m - m_new);
#pragma unroll
        for (int c = 0; c < 32; ++c) {
            s[c] = exp2f(s[c] - m_new);
            rs += s[c];
        }
    }
    rs += __shfl_xor_sync(0xffffffffu, rs, 1);
    l = l * alpha + rs;
    m = m_new;
    return alpha;
}

// Loads the running (m, l, o) of a query row in accumulate mode, or the empty state.
template <int kCols>
__device__ __forceinline__ void init_state(const KernelArgs& a, int h, int64_t qi, int col0,
                                           float& m, float& l, float (&o_acc)[kCols]) {
    m = neg_inf();
    l = 0.0f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) o_acc[c] = 0.0f;
    if (!a.accumulate || qi >= a.tq) return;
    const int64_t ls = a.lse_stride != 0 ? a.lse_stride : a.tq;
    const float prev = a.lse[h * ls + qi];
    if (prev == neg_inf()) return;
    m = prev * kLog2e;
    l = 1.0f;
    const float* orow = a.o + (qi * a.hq + h) * a.d;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
        if (col0 + c < a.d) o_acc[c] = orow[col0 + c];
    }
}

template <int kCols>
__device__ __forceinline__ void finish_row(const KernelArgs& a, int h, int64_t qi, int col0,
                                           bool writes_lse, float m, float l,
                                           const float (&o_acc)[kCols]) {
    if (qi >= a.tq) return;
    const int64_t ls = a.lse_stride != 0 ? a.lse_stride : a.tq;
    float* orow = a.o + (qi * a.hq + h) * a.d;
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
        if (col0 + c < a.d) orow[col0 + c] = o_acc[c] * inv;
    }
    if (writes_lse) a.lse[h * ls + qi] = l == 0.0f ? neg_inf() : (m + log2f(l)) * kLn2;
}

// ---- CUDA-core kernel: any dtype, d <= kD ----

template <int kD>
constexpr size_t simt_smem_bytes() {
    return sizeof(float) * (3 * kBq * (kD + 1) + kBq * (kBk + 1));
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) attention_simt(KernelArgs a) {
    extern __shared__ float smem[];
    constexpr int kLd = kD + 1;  // odd stride: rows land in different banks
    constexpr int kCols = kD / 2;
    float* qs = smem;            // [kBq][kLd], pre-scaled by scale * log2(e)
    float* ks = qs + kBq * kLd;  // [kBk][kLd]
    float* vs = ks + kBk * kLd;  // [kBk][kLd]
    float* ps = vs + kBk * kLd;  // [kBq][kBk + 1]
    const T* q = static_cast<const T*>(a.q);
    const T* k = static_cast<const T*>(a.k);
    const T* v = static_cast<const T*>(a.v);
    const int tid = threadIdx.x;
    const int row = tid >> 1;  // two threads per query row
    const int half = tid & 1;
    const int h = blockIdx.y;
    const int g = h / (a.hq / a.hkv);
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBq;
    const int64_t qi = i0 + row;
    const int64_t q_row = static_cast<int64_t>(a.hq) * a.d;
    const int64_t kv_row = static_cast<int64_t>(a.hkv) * a.d;

    for (int idx = tid; idx < kBq * kD; idx += kThreads) {
        const int r = idx / kD, x = idx % kD;
        const int64_t i = i0 + r;
        qs[r * kLd + x] =
            (i < a.tq && x < a.d) ? to_float(q[i * q_row + h * a.d + x]) * a.scale2 : 0.0f;
    }
    float m, l, o_acc[kCols];
    init_state<kCols>(a, h, qi, half * kCols, m, l, o_acc);
    const int64_t kend = key_end(a, i0, kBq);
    __syncthreads();

    for (int64_t j0 = 0; j0 < kend; j0 += kBk) {
        for (int idx = tid; idx < kBk * kD; idx += kThreads) {
            const int r = idx / kD, x = idx % kD;
            const int64_t j = j0 + r;
            const bool live = j < a.tk && x < a.d;
            ks[r * kLd + x] = live ? to_float(k[j * kv_row + g * a.d + x]) : 0.0f;
            vs[r * kLd + x] = live ? to_float(v[j * kv_row + g * a.d + x]) : 0.0f;
        }
        __syncthreads();
        float s[32];
#pragma unroll
        for (int c = 0; c < 32; ++c) s[c] = 0.0f;
        for (int x = 0; x < a.d; ++x) {
            const float qv = qs[row * kLd + x];
#pragma unroll
            for (int c = 0; c < 32; ++c) s[c] += qv * ks[(half * 32 + c) * kLd + x];
        }
#pragma unroll
        for (int c = 0; c < 32; ++c) {
            if (qi >= a.tq || !visible(a, qi, j0 + half * 32 + c)) s[c] = neg_inf();
        }
        const float alpha = online_softmax(s, m, l);
#pragma unroll
        for (int c = 0; c < 32; ++c) ps[row * (kBk + 1) + half * 32 + c] = s[c];
        __syncwarp();
#pragma unroll
        for (int c = 0; c < kCols; ++c) o_acc[c] *= alpha;
        const int jn = a.tk - j0 < kBk ? static_cast<int>(a.tk - j0) : kBk;
        for (int j = 0; j < jn; ++j) {
            const float pj = ps[row * (kBk + 1) + j];
            const float* vr = vs + j * kLd + half * kCols;
#pragma unroll
            for (int c = 0; c < kCols; ++c) o_acc[c] += pj * vr[c];
        }
        __syncthreads();  // the next tile overwrites ks, vs and ps
    }
    finish_row<kCols>(a, h, qi, half * kCols, half == 0, m, l, o_acc);
}

// ---- tensor-core kernel: fp16/bf16, d == kD (64 or 128) ----
//
// FlashAttention-2 style on mma.sync m16n8k16 (fp32 accumulate). A block of kWarps warps owns
// 16 * kWarps query rows of one head, 16 per warp. Q is copied to registers once; K/V tiles of
// kMmaBk rows stream through two shared-memory stages with cp.async, the next tile loading while
// this one computes. S = Q K^T, the online softmax and O live in registers: the accumulator layout
// of S is reused as the A operand of P V (P rounded to the input type), so nothing of size tq x tk
// leaves the registers. ldmatrix feeds the B operands (.trans for V); rows are padded by 16 bytes
// so the eight rows of one 8x8 matrix fall in different banks.

template <int kD, int kWarps, int kMmaBk>
struct MmaLayout {
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kBq = 16 * kWarps;            // query rows per block
    static constexpr int kLd = kD + 8;                 // 16-bit elements per shared-memory row
    static constexpr size_t kTile = 2 * kMmaBk * kLd;  // bytes of one K or V stage
    static constexpr size_t kQ = 0;
    static constexpr size_t kK = kQ + 2 * kBq * kLd;
    static constexpr size_t kV = kK + 2 * kTile;
    static constexpr size_t kBytes = kV + 2 * kTile;
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-filled when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// c (16x8, fp32) += a (16x16) b (16x8).
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    if constexpr (std::is_same_v<T, __half>) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
            "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
            "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// Two floats as one register of two 16-bit values, `lo` at the lower column.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    if constexpr (std::is_same_v<T, __half>) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    } else {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
}

// Starts copying rows [r0, r0 + kRows) of head `head` into shared memory (row stride kLd).
template <typename T, int kD, int kRows, int kThreads>
__device__ __forceinline__ void load_rows_async(T* dst, const T* src, int64_t r0, int64_t rows,
                                                int64_t row_elems, int head) {
    constexpr int kChunks = kD / 8;  // 16-byte chunks per row
    constexpr int kLd = kD + 8;
#pragma unroll
    for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
        const int r = idx / kChunks, c = idx % kChunks;
        const bool valid = r0 + r < rows;
        const T* from = valid ? src + (r0 + r) * row_elems + head * kD + c * 8 : src;
        cp_async16(dst + r * kLd + c * 8, from, valid);
    }
}

template <typename T, int kD, int kWarps, int kMmaBk, int kMinBlocks>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks) attention_mma(KernelArgs a) {
    using L = MmaLayout<kD, kWarps, kMmaBk>;
    constexpr int kMmaBq = L::kBq;
    constexpr int kMmaThreads = L::kThreads;
    constexpr int kLd = L::kLd;
    constexpr int kSTiles = kMmaBk / 8;  // 8-column tiles of S
    constexpr int kOTiles = kD / 8;      // 8-column tiles of O
    extern __shared__ __align__(128) unsigned char raw[];
    T* qs = reinterpret_cast<T*>(raw + L::kQ);
    T* ks = reinterpret_cast<T*>(raw + L::kK);
    T* vs = reinterpret_cast<T*>(raw + L::kV);
    const T* q = static_cast<const T*>(a.q);
    const T* k = static_cast<const T*>(a.k);
    const T* v = static_cast<const T*>(a.v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int quad_row = lane >> 2, quad_col = lane & 3;
    const int h = blockIdx.y;
    const int g = h / (a.hq / a.hkv);
    // The last row blocks see the most keys under a causal mask: start them first.
    const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kMmaBq;
    const int64_t row[2] = {i0 + warp * 16 + quad_row, i0 + warp * 16 + quad_row + 8};
    const int64_t kv_row = static_cast<int64_t>(a.hkv) * kD;
    const int64_t tiles = (key_end(a, i0, kMmaBq) + kMmaBk - 1) / kMmaBk;

    load_rows_async<T, kD, kMmaBq, kMmaThreads>(qs, q, i0, a.tq, static_cast<int64_t>(a.hq) * kD,
                                                h);
    if (tiles > 0) {
        load_rows_async<T, kD, kMmaBk, kMmaThreads>(ks, k, 0, a.tk, kv_row, g);
        load_rows_async<T, kD, kMmaBk, kMmaThreads>(vs, v, 0, a.tk, kv_row, g);
    }
    cp_async_commit();

    // Running state of this thread's two rows; l holds the thread's share of the row sum (the
    // quad adds them up at the end).
    float m[2], l[2], o[kOTiles][4];
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    const int64_t ls = a.lse_stride != 0 ? a.lse_stride : a.tq;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        m[r] = neg_inf();
        l[r] = 0.0f;
        if (!a.accumulate || row[r] >= a.tq) continue;
        const float prev = a.lse[h * ls + row[r]];
        if (prev == neg_inf()) continue;
        m[r] = prev * kLog2e;
        l[r] = quad_col == 0 ? 1.0f : 0.0f;
        const float* orow = a.o + (row[r] * a.hq + h) * kD;
#pragma unroll
        for (int n = 0; n < kOTiles; ++n) {
            const float2 x = *reinterpret_cast<const float2*>(orow + n * 8 + 2 * quad_col);
            o[n][2 * r] = x.x;
            o[n][2 * r + 1] = x.y;
        }
    }

    uint32_t qf[kD / 16][4];
    for (int64_t t = 0; t < tiles; ++t) {
        const int stage = static_cast<int>(t & 1);
        if (t + 1 < tiles) {
            const int next = stage ^ 1;
            load_rows_async<T, kD, kMmaBk, kMmaThreads>(ks + next * kMmaBk * kLd, k,
                                                        (t + 1) * kMmaBk, a.tk, kv_row, g);
            load_rows_async<T, kD, kMmaBk, kMmaThreads>(vs + next * kMmaBk * kLd, v,
                                                        (t + 1) * kMmaBk, a.tk, kv_row, g);
        }
        cp_async_commit();
        cp_async_wait<1>();  // everything but the tile just started
        __syncthreads();
        if (t == 0) {
#pragma unroll
            for (int kk = 0; kk < kD / 16; ++kk) {
                ldmatrix_x4(qf[kk], qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd +
                                        kk * 16 + (lane >> 4) * 8);
            }
        }
        const T* kt = ks + stage * kMmaBk * kLd;
        const T* vt = vs + stage * kMmaBk * kLd;

        float s[kSTiles][4];
#pragma unroll
        for (int n = 0; n < kSTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
            for (int n2 = 0; n2 < kSTiles / 2; ++n2) {
                uint32_t b[4];
                ldmatrix_x4(b, kt + (n2 * 16 + (lane & 7) + (lane >> 4) * 8) * kLd + kk * 16 +
                                   ((lane >> 3) & 1) * 8);
                mma16816<T>(s[2 * n2], qf[kk], b[0], b[1]);
                mma16816<T>(s[2 * n2 + 1], qf[kk], b[2], b[3]);
            }
        }

        const int64_t j0 = t * kMmaBk;
        const bool masked =
            j0 + kMmaBk > a.tk || (a.causal && k_position(a, j0 + kMmaBk - 1) > q_position(a, i0));
        float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
        for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                // Unscaled here: the scale is folded into the exponent's FMA below (rounding is
                // monotonic, so max(s) * scale is the max of the scaled scores).
                if (masked && !visible(a, row[e >> 1], j0 + n * 8 + 2 * quad_col + (e & 1))) {
                    s[n][e] = neg_inf();
                }
                mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
            }
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float m_new = fmaxf(m[r], mx[r] * a.scale2);
            alpha[r] = m_new == neg_inf() ? 1.0f : (m[r] == neg_inf() ? 0.0f : exp2f(m[r] - m_new));
            mx[r] = m_new;  // from here: the max to subtract
            m[r] = m_new;
        }
        float rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float base = mx[e >> 1];
                const float p = base == neg_inf() ? 0.0f : exp2f(fmaf(s[n][e], a.scale2, -base));
                s[n][e] = p;
                rs[e >> 1] += p;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + rs[r];
        // Once the running maxima settle, most tiles leave every row's max unchanged (alpha 1):
        // skipping the multiply by 1 then is exact and saves kD / 2 multiplies per thread.
        if (!__all_sync(0xffffffffu, alpha[0] == 1.0f && alpha[1] == 1.0f)) {
#pragma unroll
            for (int n = 0; n < kOTiles; ++n) {
                o[n][0] *= alpha[0];
                o[n][1] *= alpha[0];
                o[n][2] *= alpha[1];
                o[n][3] *= alpha[1];
            }
        }
        // O += P V: two S tiles (16 keys) form one A operand.
#pragma unroll
        for (int kk = 0; kk < kMmaBk / 16; ++kk) {
            const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]),
                                    pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                    pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int n2 = 0; n2 < kOTiles / 2; ++n2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd +
                                         n2 * 16 + (lane >> 4) * 8);
                mma16816<T>(o[2 * n2], pa, b[0], b[1]);
                mma16816<T>(o[2 * n2 + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads();  // the next iteration refills the other stage; this one after it
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float sum = l[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (row[r] >= a.tq) continue;
        float* orow = a.o + (row[r] * a.hq + h) * kD;
        const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
#pragma unroll
        for (int n = 0; n < kOTiles; ++n) {
            *reinterpret_cast<float2*>(orow + n * 8 + 2 * quad_col) =
                make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        }
        if (quad_col == 0) {
            a.lse[h * ls + row[r]] = sum == 0.0f ? neg_inf() : (m[r] + log2f(sum)) * kLn2;
        }
    }
}

template <typename Kernel>
Status launch(Kernel kernel, int threads, int rows_per_block, size_t smem, const KernelArgs& args,
              int64_t tq, int hq, cudaStream_t stream, const char* name) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
    if (err == cudaSuccess) {
        const dim3 grid(static_cast<unsigned>((tq + rows_per_block - 1) / rows_per_block),
                        static_cast<unsigned>(hq));
        kernel<<<grid, threads, smem, stream>>>(args);
        err = cudaGetLastError();
    }
    if (err != cudaSuccess) {
        return unavailable(std::string("attention_forward_cuda: launching ") + name + ": " +
                           cudaGetErrorString(err));
    }
    return Status();
}

template <typename T>
Status launch_for(const KernelArgs& args, int64_t tq, int hq, int d, bool aligned,
                  cudaStream_t stream) {
    if constexpr (!std::is_same_v<T, float>) {
        // 4 warps (64 query rows) and key tiles of 32 rows: 166 registers, so three blocks (12
        // warps) share an SM. Measured on an H100 against 8 warps x 64 keys (one block per SM)
        // and 4 warps x 64 keys (two): 5-10% faster (docs/kernels.md).
        if (aligned && d == 64) {
            return launch(attention_mma<T, 64, 4, 32, 3>, 128, 64, MmaLayout<64, 4, 32>::kBytes,
                          args, tq, hq, stream, "attention_mma<64>");
        }
        if (aligned && d == 128) {
            return launch(attention_mma<T, 128, 4, 32, 3>, 128, 64, MmaLayout<128, 4, 32>::kBytes,
                          args, tq, hq, stream, "attention_mma<128>");
        }
    }
    if (d <= 64) {
        return launch(attention_simt<T, 64>, kThreads, kBq, simt_smem_bytes<64>(), args, tq, hq,
                      stream, "attention_simt<64>");
    }
    if (d <= 128) {
        return launch(attention_simt<T, 128>, kThreads, kBq, simt_smem_bytes<128>(), args, tq, hq,
                      stream, "attention_simt<128>");
    }
    return launch(attention_simt<T, 256>, kThreads, kBq, simt_smem_bytes<256>(), args, tq, hq,
                  stream, "attention_simt<256>");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

Status attention_forward_cuda(const AttentionParams& p, DType dtype, const void* q, const void* k,
                              const void* v, float* o, float* lse, void* stream) {
    TANDEM_RETURN_IF_ERROR(validate(p));
    if (p.tq == 0) return Status();
    if (!q || !o || !lse || (p.tk > 0 && (!k || !v))) {
        return invalid_argument("attention_forward_cuda: null tensor pointer");
    }
    if ((p.tq + kBq - 1) / kBq > 0x7fffffff || p.hq > 65535) {
        return invalid_argument("attention_forward_cuda: grid too large");
    }
    KernelArgs args{q,
                    k,
                    v,
                    o,
                    lse,
                    p.tq,
                    p.tk,
                    p.hq,
                    p.hkv,
                    p.d,
                    p.scale * kLog2e,
                    p.causal ? 1 : 0,
                    p.accumulate ? 1 : 0,
                    p.q_pos0,
                    p.k_pos0,
                    p.lse_stride,
                    p.q_split,
                    p.q_pos1,
                    p.k_split,
                    p.k_pos1};
    const bool aligned = aligned16(q) && aligned16(k) && aligned16(v);
    auto s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
        case DType::kF32:
            return launch_for<float>(args, p.tq, p.hq, p.d, aligned, s);
        case DType::kF16:
            return launch_for<__half>(args, p.tq, p.hq, p.d, aligned, s);
        case DType::kBF16:
            return launch_for<__nv_bfloat16>(args, p.tq, p.hq, p.d, aligned, s);
    }
    return invalid_argument("attention_forward_cuda: unknown dtype");
}

}  // namespace tandem::kernels
