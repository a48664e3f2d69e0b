// Forward ops of kernels/cuda/ops.h: conversions, embedding, RMSNorm, head preparation (bias,
// q/k norm, RoPE), bias add, SwiGLU.
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda {

using detail::blocks_for;
using detail::check_args;
using detail::launched;
using detail::ld;
using detail::raw;
using detail::st;

namespace {

__global__ void to_bf16_kernel(int64_t count, const float* x, Bf16* out) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        st(out, i, x[i]);
    }
}

__global__ void to_float_kernel(int64_t count, const Bf16* x, float* out) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        out[i] = ld(x, i);
    }
}

__global__ void gather_rows_kernel(int64_t rows, int64_t width, const int32_t* index, const Bf16* x,
                                   Bf16* out) {
    const int64_t count = rows * width;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const int64_t r = i / width, c = i - r * width;
        reinterpret_cast<__nv_bfloat16*>(out)[i] =
            reinterpret_cast<const __nv_bfloat16*>(x)[int64_t{index[r]} * width + c];
    }
}

__global__ void embedding_kernel(int64_t hidden, int64_t vocab, const int32_t* tokens,
                                 const Bf16* table, float* x) {
    const int64_t row = blockIdx.x;
    const int32_t t = tokens[row];
    float* out = x + row * hidden;
    const bool valid = t >= 0 && t < vocab;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
        out[j] = valid ? ld(table, int64_t{t} * hidden + j) : 0.0f;
    }
}

__global__ void rmsnorm_kernel(int64_t h, const float* x, const Bf16* w, float eps, Bf16* y,
                               float* rstd) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const float* xr = x + row * h;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x) ss += xr[j] * xr[j];
    ss = detail::block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
    if (rstd && threadIdx.x == 0) rstd[row] = r;
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x) st(y, row * h + j, xr[j] * r * ld(w, j));
}

// One warp per (row, head); lane l handles the rotate_half pairs (i, i + d/2), i = l, l + 32, ...
__global__ void head_prepare_kernel(HeadPrepare p, const float* x, Bf16* out) {
    const int64_t unit = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (unit >= p.n * p.heads) return;  // whole warps leave together (unit is warp-uniform)
    const int64_t row = unit / p.heads;
    const int head = static_cast<int>(unit - row * p.heads);
    const int half = p.d / 2;
    const int64_t base = unit * p.d;  // == (row * heads + head) * d
    constexpr int kMaxPairs = 4;      // d <= 256: at most 128 pairs, 4 per lane
    float a[kMaxPairs], b[kMaxPairs];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxPairs; ++k) {
        const int i = lane + 32 * k;
        a[k] = b[k] = 0.0f;
        if (i < half) {
            a[k] = x[base + i];
            b[k] = x[base + i + half];
            if (p.bias) {
                a[k] += ld(p.bias, int64_t{head} * p.d + i);
                b[k] += ld(p.bias, int64_t{head} * p.d + i + half);
            }
            if (p.raw) {
                p.raw[base + i] = a[k];
                p.raw[base + i + half] = b[k];
            }
            ss += a[k] * a[k] + b[k] * b[k];
        }
    }
    if (p.norm_w) {
        ss = detail::warp_sum(ss);
        const float r = 1.0f / sqrtf(ss / static_cast<float>(p.d) + p.eps);
        if (p.rstd && lane == 0) p.rstd[unit] = r;
#pragma unroll
        for (int k = 0; k < kMaxPairs; ++k) {
            const int i = lane + 32 * k;
            if (i < half) {
                a[k] = a[k] * r * ld(p.norm_w, i);
                b[k] = b[k] * r * ld(p.norm_w, i + half);
            }
        }
    }
    const int64_t pos = p.cos ? p.pos[row] : 0;
#pragma unroll
    for (int k = 0; k < kMaxPairs; ++k) {
        const int i = lane + 32 * k;
        if (i >= half) continue;
        float ya = a[k], yb = b[k];
        if (p.cos) {
            const float c = p.cos[pos * half + i], s = p.sin[pos * half + i];
            ya = a[k] * c - b[k] * s;
            yb = b[k] * c + a[k] * s;
        }
        st(out, base + i, ya);
        st(out, base + i + half, yb);
    }
}

__global__ void bias_add_kernel(int64_t n, int64_t width, const Bf16* bias, float* y) {
    const int64_t count = n * width;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        y[i] += ld(bias, i % width);
    }
}

__global__ void swiglu_kernel(int64_t count, const float* g, const float* u, Bf16* out) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const float sig = 1.0f / (1.0f + expf(-g[i]));
        st(out, i, g[i] * sig * u[i]);
    }
}

}  // namespace

Status to_bf16(const Stream& s, int64_t count, const float* x, Bf16* out) {
    TANDEM_RETURN_IF_ERROR(check_args("to_bf16", count, {x, out}));
    if (count == 0) return Status();
    to_bf16_kernel<<<blocks_for(count), 256, 0, raw(s)>>>(count, x, out);
    return launched("to_bf16");
}

Status to_float(const Stream& s, int64_t count, const Bf16* x, float* out) {
    TANDEM_RETURN_IF_ERROR(check_args("to_float", count, {x, out}));
    if (count == 0) return Status();
    to_float_kernel<<<blocks_for(count), 256, 0, raw(s)>>>(count, x, out);
    return launched("to_float");
}

Status gather_rows(const Stream& s, int64_t rows, int64_t width, const int32_t* index,
                   const Bf16* x, Bf16* out) {
    TANDEM_RETURN_IF_ERROR(check_args("gather_rows", rows * width, {index, x, out}));
    if (rows * width == 0) return Status();
    gather_rows_kernel<<<blocks_for(rows * width), 256, 0, raw(s)>>>(rows, width, index, x, out);
    return launched("gather_rows");
}

Status embedding_forward(const Stream& s, int64_t n, int64_t hidden, int64_t vocab,
                         const int32_t* tokens, const Bf16* table, float* x) {
    TANDEM_RETURN_IF_ERROR(check_args("embedding_forward", n, {tokens, table, x}));
    if (n == 0) return Status();
    if (n > 0x7fffffff) return invalid_argument("embedding_forward: too many rows");
    embedding_kernel<<<static_cast<unsigned>(n), 256, 0, raw(s)>>>(hidden, vocab, tokens, table, x);
    return launched("embedding_forward");
}

Status rmsnorm_forward(const Stream& s, int64_t n, int64_t h, const float* x, const Bf16* w,
                       float eps, Bf16* y, float* rstd) {
    TANDEM_RETURN_IF_ERROR(check_args("rmsnorm_forward", n, {x, w, y}));
    if (n == 0) return Status();
    if (h <= 0 || n > 0x7fffffff) return invalid_argument("rmsnorm_forward: bad shape");
    const int threads = h >= 1024 ? 512 : (h >= 256 ? 256 : 128);
    rmsnorm_kernel<<<static_cast<unsigned>(n), threads, 0, raw(s)>>>(h, x, w, eps, y, rstd);
    return launched("rmsnorm_forward");
}

Status head_prepare(const Stream& s, const HeadPrepare& p, const float* x, Bf16* out) {
    TANDEM_RETURN_IF_ERROR(check_args("head_prepare", p.n, {x, out}));
    if (p.n == 0) return Status();
    if (p.heads <= 0 || p.d <= 0 || p.d % 2 != 0 || p.d > 256) {
        return invalid_argument("head_prepare: heads must be positive and d even, <= 256");
    }
    if (p.cos && (!p.sin || !p.pos)) {
        return invalid_argument("head_prepare: RoPE needs cos, sin and pos");
    }
    const int64_t units = p.n * p.heads, per_block = 8;
    const int64_t blocks = (units + per_block - 1) / per_block;
    if (blocks > 0x7fffffff) return invalid_argument("head_prepare: too many rows");
    head_prepare_kernel<<<static_cast<unsigned>(blocks), 32 * per_block, 0, raw(s)>>>(p, x, out);
    return launched("head_prepare");
}

Status bias_add(const Stream& s, int64_t n, int64_t width, const Bf16* bias, float* y) {
    TANDEM_RETURN_IF_ERROR(check_args("bias_add", n * width, {bias, y}));
    if (n * width == 0) return Status();
    bias_add_kernel<<<blocks_for(n * width), 256, 0, raw(s)>>>(n, width, bias, y);
    return launched("bias_add");
}

Status swiglu_forward(const Stream& s, int64_t count, const float* g, const float* u, Bf16* out) {
    TANDEM_RETURN_IF_ERROR(check_args("swiglu_forward", count, {g, u, out}));
    if (count == 0) return Status();
    swiglu_kernel<<<blocks_for(count), 256, 0, raw(s)>>>(count, g, u, out);
    return launched("swiglu_forward");
}

}  // namespace tandem::kernels::cuda
