// CUDA attention forward (flash-style: K/V tiles streamed through shared memory, online softmax
// in base 2, fp32 accumulation, no [tq, tk] matrix in global memory).
//
// Two kernels behind one launcher:
// - attention_wmma: fp16/bf16 inputs with d = 64 or 128. Each warp owns 16 query rows; S = Q K^T
//   and P V run on tensor cores (WMMA 16x16x16, fp32 accumulators); the softmax and the O
//   accumulator live in registers (two lanes per query row).
// - attention_simt: every dtype and d <= 256, CUDA cores only (fp32 in, or the fallback for
//   other head dims and unaligned pointers).
// Both: one block of 128 threads per (64 query rows, query head); grid (ceil(tq / 64), hq).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

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

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ int64_t q_position(const KernelArgs& a, int64_t i) {
    return i < a.q_split ? a.q_pos0 + i : a.q_pos1 + (i - a.q_split);
}
__device__ __forceinline__ int64_t k_position(const KernelArgs& a, int64_t j) {
    return j < a.k_split ? a.k_pos0 + j : a.k_pos1 + (j - a.k_split);
}

// Keys [0, kend) can be visible to some query row of the block starting at i0: the keys at
// positions up to the block's last query (positions never decrease along the rows).
__device__ __forceinline__ int64_t key_end(const KernelArgs& a, int64_t i0) {
    if (!a.causal) return a.tk;
    const int64_t pos = q_position(a, (i0 + kBq < a.tq ? i0 + kBq : a.tq) - 1);
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
    const int64_t kend = key_end(a, i0);
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

template <int kD>
struct WmmaLayout {
    static constexpr int kLd = kD + 8;    // 16-bit elements; a multiple of 8 as WMMA requires
    static constexpr int kSLd = kBk + 4;  // fp32 scores
    static constexpr int kPLd = kBk + 8;  // 16-bit probabilities
    static constexpr int kOLd = kD + 4;   // fp32 P V product
    static constexpr int kWarps = kThreads / 32;
    // Byte offsets; every region and every 16-row tile starts on a 32-byte boundary.
    static constexpr size_t kQ = 0;
    static constexpr size_t kK = kQ + 2 * kBq * kLd;
    static constexpr size_t kV = kK + 2 * kBk * kLd;
    static constexpr size_t kS = kV + 2 * kBk * kLd;
    static constexpr size_t kP = kS + 4 * kWarps * 16 * kSLd;
    static constexpr size_t kO = kP + 2 * kWarps * 16 * kPLd;
    static constexpr size_t kBytes = kO + 4 * kWarps * 16 * kOLd;
};

// Copies rows [r0, r0 + 64) of head `head` (row stride `row_elems`) into shared memory as 16-byte
// chunks; rows at or past `rows` become zeros. d == kD and the source is 16-byte aligned.
template <typename T, int kD>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t r0, int64_t rows,
                                          int64_t row_elems, int head) {
    constexpr int kChunks = kD * 2 / 16;  // 16-byte chunks per row
    constexpr int kLd = WmmaLayout<kD>::kLd;
    for (int idx = threadIdx.x; idx < 64 * kChunks; idx += kThreads) {
        const int r = idx / kChunks, c = idx % kChunks;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (r0 + r < rows) {
            val = reinterpret_cast<const uint4*>(src + (r0 + r) * row_elems + head * kD)[c];
        }
        reinterpret_cast<uint4*>(dst + r * kLd)[c] = val;
    }
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) attention_wmma(KernelArgs a) {
    using namespace nvcuda;
    using L = WmmaLayout<kD>;
    extern __shared__ __align__(128) unsigned char raw[];
    T* qs = reinterpret_cast<T*>(raw + L::kQ);
    T* ks = reinterpret_cast<T*>(raw + L::kK);
    T* vs = reinterpret_cast<T*>(raw + L::kV);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* sw = reinterpret_cast<float*>(raw + L::kS) + warp * 16 * L::kSLd;
    T* pw = reinterpret_cast<T*>(raw + L::kP) + warp * 16 * L::kPLd;
    float* ow = reinterpret_cast<float*>(raw + L::kO) + warp * 16 * L::kOLd;
    constexpr int kCols = kD / 2;

    const int h = blockIdx.y;
    const int g = h / (a.hq / a.hkv);
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBq;
    const int r = lane >> 1;  // row within the warp's 16
    const int half = lane & 1;
    const int64_t qi = i0 + warp * 16 + r;

    load_tile<T, kD>(qs, static_cast<const T*>(a.q), i0, a.tq, static_cast<int64_t>(a.hq) * kD, h);
    float m, l, o_acc[kCols];
    init_state<kCols>(a, h, qi, half * kCols, m, l, o_acc);
    const int64_t kend = key_end(a, i0);
    const int64_t kv_row = static_cast<int64_t>(a.hkv) * kD;
    __syncthreads();

    for (int64_t j0 = 0; j0 < kend; j0 += kBk) {
        load_tile<T, kD>(ks, static_cast<const T*>(a.k), j0, a.tk, kv_row, g);
        load_tile<T, kD>(vs, static_cast<const T*>(a.v), j0, a.tk, kv_row, g);
        __syncthreads();
        // S (16 x 64) = Q_warp (16 x kD) K^T (kD x 64).
#pragma unroll
        for (int n = 0; n < kBk / 16; ++n) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < kD / 16; ++kk) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, qs + warp * 16 * L::kLd + kk * 16, L::kLd);
                wmma::load_matrix_sync(fb, ks + n * 16 * L::kLd + kk * 16, L::kLd);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sw + n * 16, acc, L::kSLd, wmma::mem_row_major);
        }
        __syncwarp();
        float s[32];
#pragma unroll
        for (int c = 0; c < 32; ++c) {
            const int col = half * 32 + c;
            s[c] = (qi < a.tq && visible(a, qi, j0 + col)) ? sw[r * L::kSLd + col] * a.scale2
                                                           : neg_inf();
        }
        const float alpha = online_softmax(s, m, l);
#pragma unroll
        for (int c = 0; c < 32; ++c) pw[r * L::kPLd + half * 32 + c] = from_float<T>(s[c]);
        __syncwarp();
        // O_tile (16 x kD) = P (16 x 64) V (64 x kD).
#pragma unroll
        for (int n = 0; n < kD / 16; ++n) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < kBk / 16; ++kk) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, pw + kk * 16, L::kPLd);
                wmma::load_matrix_sync(fb, vs + kk * 16 * L::kLd + n * 16, L::kLd);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(ow + n * 16, acc, L::kOLd, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
            o_acc[c] = o_acc[c] * alpha + ow[r * L::kOLd + half * kCols + c];
        }
        __syncthreads();  // the next tile overwrites ks and vs
    }
    finish_row<kCols>(a, h, qi, half * kCols, half == 0, m, l, o_acc);
}

template <typename Kernel>
Status launch(Kernel kernel, size_t smem, const KernelArgs& args, int64_t tq, int hq,
              cudaStream_t stream, const char* name) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
    if (err == cudaSuccess) {
        const dim3 grid(static_cast<unsigned>((tq + kBq - 1) / kBq), static_cast<unsigned>(hq));
        kernel<<<grid, kThreads, smem, stream>>>(args);
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
        if (aligned && d == 64) {
            return launch(attention_wmma<T, 64>, WmmaLayout<64>::kBytes, args, tq, hq, stream,
                          "attention_wmma<64>");
        }
        if (aligned && d == 128) {
            return launch(attention_wmma<T, 128>, WmmaLayout<128>::kBytes, args, tq, hq, stream,
                          "attention_wmma<128>");
        }
    }
    if (d <= 64) {
        return launch(attention_simt<T, 64>, simt_smem_bytes<64>(), args, tq, hq, stream,
                      "attention_simt<64>");
    }
    if (d <= 128) {
        return launch(attention_simt<T, 128>, simt_smem_bytes<128>(), args, tq, hq, stream,
                      "attention_simt<128>");
    }
    return launch(attention_simt<T, 256>, simt_smem_bytes<256>(), args, tq, hq, stream,
                  "attention_simt<256>");
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
