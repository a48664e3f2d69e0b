// Attention backward on the device (kernels/cuda/attention_backward.h): one warp per (query row,
// query head) for dq and one per (key row, key/value head) for dk and dv; each lane holds
// d / 32 elements of a row in registers; probabilities recomputed from the forward's lse. Also
// the dispatcher between it and the tiled kernel (attention_backward_tiled.cu).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kernels/cuda/attention_backward.h"
#include "kernels/cuda/attention_backward_tiled.h"
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda {
namespace {

constexpr int kWarps = 4;   // warps per block
constexpr int kChunks = 8;  // d <= 256 = kChunks * 32 values per row

struct BackwardArgs {
    const void* q;
    const void* k;
    const void* v;
    const float* o;
    const float* lse;
    const float* dout;
    float* dq;
    float* dk;
    float* dv;
    int64_t tq, tk;
    int hq, hkv, d;
    float scale;
    int causal;
    int accumulate;
    int64_t q_pos0, k_pos0, q_split, q_pos1, k_split, k_pos1;
    int64_t lse_stride;
};

__device__ __forceinline__ float in(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float in(const __nv_bfloat16* p, int64_t i) {
    return __bfloat162float(p[i]);
}

__device__ __forceinline__ bool visible(const BackwardArgs& a, int64_t i, int64_t j) {
    if (!a.causal) return true;
    const int64_t qp = i < a.q_split ? a.q_pos0 + i : a.q_pos1 + (i - a.q_split);
    const int64_t kp = j < a.k_split ? a.k_pos0 + j : a.k_pos1 + (j - a.k_split);
    return kp <= qp;
}

// r[c] = x[c * 32 + lane] for the d values of one row (0 beyond d).
template <typename T>
__device__ __forceinline__ void load_row(const T* x, int d, float (&r)[kChunks]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
        const int idx = c * 32 + lane;
        r[c] = idx < d ? in(x, idx) : 0.0f;
    }
}

// Dot product of two rows held as load_row leaves them; every lane gets the sum.
__device__ __forceinline__ float dot(const float (&a)[kChunks], const float (&b)[kChunks]) {
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) s += a[c] * b[c];
    return detail::warp_sum(s);
}

__device__ __forceinline__ void store_row(float* x, int d, const float (&r)[kChunks],
                                          bool accumulate) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
        const int idx = c * 32 + lane;
        if (idx < d) x[idx] = accumulate ? x[idx] + r[c] : r[c];
    }
}

// dq[i, h] = scale sum_j ds_ij k_j, ds_ij = p_ij (dout_i . v_j - dout_i . o_i) over the visible
// keys (a prefix of the key rows: positions never decrease).
template <typename T>
__global__ void __launch_bounds__(kWarps * 32) attention_dq_kernel(BackwardArgs a) {
    const int64_t w = blockIdx.x * int64_t{kWarps} + (threadIdx.x >> 5);
    if (w >= a.tq * a.hq) return;  // the whole warp leaves together
    const int64_t i = w / a.hq;
    const int h = static_cast<int>(w - i * a.hq);
    const int g = h / (a.hq / a.hkv), d = a.d;
    const T* q = static_cast<const T*>(a.q);
    const T* k = static_cast<const T*>(a.k);
    const T* v = static_cast<const T*>(a.v);
    const int64_t row = (i * a.hq + h) * d;
    float qr[kChunks], dor[kChunks], t[kChunks], acc[kChunks];
    load_row(q + row, d, qr);
    load_row(a.dout + row, d, dor);
    load_row(a.o + row, d, t);
    const float delta = dot(dor, t);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc[c] = 0.0f;
    const float l = a.lse[h * a.lse_stride + i];
    if (l != -INFINITY) {
        for (int64_t j = 0; j < a.tk && visible(a, i, j); ++j) {
            const int64_t krow = (j * a.hkv + g) * d;
            load_row(v + krow, d, t);
            const float dp = dot(dor, t);
            load_row(k + krow, d, t);
            const float p = expf(dot(qr, t) * a.scale - l);
            const float ds = a.scale * p * (dp - delta);
#pragma unroll
            for (int c = 0; c < kChunks; ++c) acc[c] += ds * t[c];
        }
    }
    store_row(a.dq + row, d, acc, a.accumulate);
}

// dv[j, g] = sum p_ij dout_i, dk[j, g] = scale sum ds_ij q_i over the query heads of group g and
// the query rows that see key j (a suffix of the query rows).
template <typename T>
__global__ void __launch_bounds__(kWarps * 32) attention_dkv_kernel(BackwardArgs a) {
    const int64_t w = blockIdx.x * int64_t{kWarps} + (threadIdx.x >> 5);
    if (w >= a.tk * a.hkv) return;
    const int64_t j = w / a.hkv;
    const int g = static_cast<int>(w - j * a.hkv);
    const int rep = a.hq / a.hkv, d = a.d;
    const T* q = static_cast<const T*>(a.q);
    const T* k = static_cast<const T*>(a.k);
    const T* v = static_cast<const T*>(a.v);
    const int64_t krow = (j * a.hkv + g) * d;
    float kr[kChunks], vr[kChunks], dor[kChunks], t[kChunks], dk[kChunks], dv[kChunks];
    load_row(k + krow, d, kr);
    load_row(v + krow, d, vr);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) dk[c] = dv[c] = 0.0f;
    for (int r = 0; r < rep; ++r) {
        const int h = g * rep + r;
        for (int64_t i = a.tq - 1; i >= 0 && visible(a, i, j); --i) {
            const float l = a.lse[h * a.lse_stride + i];
            if (l == -INFINITY) continue;
            const int64_t row = (i * a.hq + h) * d;
            load_row(a.dout + row, d, dor);
            load_row(a.o + row, d, t);
            const float delta = dot(dor, t);
            const float dp = dot(dor, vr);
            load_row(q + row, d, t);
            const float p = expf(dot(t, kr) * a.scale - l);
            const float ds = a.scale * p * (dp - delta);
#pragma unroll
            for (int c = 0; c < kChunks; ++c) {
                dv[c] += p * dor[c];
                dk[c] += ds * t[c];
            }
        }
    }
    store_row(a.dk + krow, d, dk, a.accumulate);
    store_row(a.dv + krow, d, dv, a.accumulate);
}

template <typename T>
Status launch(const Stream& s, const BackwardArgs& a) {
    constexpr int threads = kWarps * 32;
    if (a.tq > 0) {
        const int64_t blocks = (a.tq * a.hq + kWarps - 1) / kWarps;
        attention_dq_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, detail::raw(s)>>>(a);
        TANDEM_RETURN_IF_ERROR(detail::launched("attention_backward (dq)"));
    }
    if (a.tk > 0) {
        const int64_t blocks = (a.tk * a.hkv + kWarps - 1) / kWarps;
        attention_dkv_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, detail::raw(s)>>>(a);
        TANDEM_RETURN_IF_ERROR(detail::launched("attention_backward (dk, dv)"));
    }
    return Status();
}

}  // namespace

const char* attention_backward_kernel_name(AttentionBackwardKernel kernel) {
    switch (kernel) {
        case AttentionBackwardKernel::kAuto:
            return "auto";
        case AttentionBackwardKernel::kSimple:
            return "simple";
        case AttentionBackwardKernel::kTiled:
            return "tiled";
    }
    return "unknown";
}

std::string attention_backward_tiled_unsupported(const AttentionParams& p, DType dtype,
                                                 std::initializer_list<const void*> pointers) {
    if (dtype != DType::kBF16) {
        return std::string("inputs are ") + dtype_name(dtype) + " (the tiled kernel takes bf16)";
    }
    if (p.d != 64 && p.d != 128) {
        return "head dim " + std::to_string(p.d) + " (the tiled kernel takes 64 and 128)";
    }
    int index = 0;
    for (const void* ptr : pointers) {
        if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) {
            return "pointer " + std::to_string(index) + " is not 16-byte aligned";
        }
        ++index;
    }
    return "";
}

Status attention_backward(const Stream& s, const AttentionParams& p, DType dtype, const void* q,
                          const void* k, const void* v, const float* o, const float* lse,
                          const float* dout, float* dq, float* dk, float* dv,
                          bool accumulate_grads) {
    return attention_backward(s, p, dtype, q, k, v, o, lse, dout, dq, dk, dv, accumulate_grads,
                              AttentionBackwardKernel::kAuto, nullptr);
}

Status attention_backward(const Stream& s, const AttentionParams& p, DType dtype, const void* q,
                          const void* k, const void* v, const float* o, const float* lse,
                          const float* dout, float* dq, float* dk, float* dv, bool accumulate_grads,
                          AttentionBackwardKernel kernel, AttentionBackwardKernel* used) {
    const Status valid = validate(p);
    if (!valid.ok()) return valid.with_context("attention_backward");
    if (p.accumulate) return invalid_argument("attention_backward: p.accumulate must be false");
    if (p.d > kChunks * 32) return invalid_argument("attention_backward: d must be <= 256");
    TANDEM_RETURN_IF_ERROR(
        detail::check_args("attention_backward (queries)", p.tq, {q, o, lse, dout, dq}));
    TANDEM_RETURN_IF_ERROR(detail::check_args("attention_backward (keys)", p.tk, {k, v, dk, dv}));
    if (kernel == AttentionBackwardKernel::kAuto) {
        // TANDEM_ATTENTION_BACKWARD=simple|tiled|auto overrides kAuto (first device runs, A/B).
        static const char* env = std::getenv("TANDEM_ATTENTION_BACKWARD");
        const std::string choice = env ? env : "auto";
        if (choice == "simple") {
            kernel = AttentionBackwardKernel::kSimple;
        } else if (choice == "tiled") {
            kernel = AttentionBackwardKernel::kTiled;
        } else if (choice != "auto") {
            return invalid_argument("attention_backward: TANDEM_ATTENTION_BACKWARD is \"" + choice +
                                    "\"; expected simple, tiled or auto");
        }
    }
    AttentionBackwardKernel pick = AttentionBackwardKernel::kSimple;
    if (kernel != AttentionBackwardKernel::kSimple) {
        const std::string why =
            attention_backward_tiled_unsupported(p, dtype, {q, k, v, o, dout, dq, dk, dv});
        if (why.empty()) {
            pick = AttentionBackwardKernel::kTiled;
        } else if (kernel == AttentionBackwardKernel::kTiled) {
            return invalid_argument("attention_backward: the tiled kernel cannot take " + why);
        }
    }
    if (used) *used = pick;
    if (pick == AttentionBackwardKernel::kTiled) {
        return detail::attention_backward_tiled(s, p, q, k, v, o, lse, dout, dq, dk, dv,
                                                accumulate_grads);
    }
    BackwardArgs a{};
    a.q = q;
    a.k = k;
    a.v = v;
    a.o = o;
    a.lse = lse;
    a.dout = dout;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.tq = p.tq;
    a.tk = p.tk;
    a.hq = p.hq;
    a.hkv = p.hkv;
    a.d = p.d;
    a.scale = p.scale;
    a.causal = p.causal ? 1 : 0;
    a.accumulate = accumulate_grads ? 1 : 0;
    a.q_pos0 = p.q_pos0;
    a.k_pos0 = p.k_pos0;
    a.q_split = p.q_split;
    a.q_pos1 = p.q_pos1;
    a.k_split = p.k_split;
    a.k_pos1 = p.k_pos1;
    a.lse_stride = p.lse_stride ? p.lse_stride : p.tq;
    switch (dtype) {
        case DType::kF32:
            return launch<float>(s, a);
        case DType::kF16:
            // Not instantiated (no caller; it would add a third of this file's nvcc time).
            return invalid_argument("attention_backward: fp16 inputs are not supported");
        case DType::kBF16:
            return launch<__nv_bfloat16>(s, a);
    }
    return invalid_argument("attention_backward: unknown dtype");
}

}  // namespace tandem::kernels::cuda
