// Backward ops of kernels/cuda/ops.h: RMSNorm, RoPE, bias, SwiGLU, embedding.
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda {

using detail::blocks_for;
using detail::check_args;
using detail::launched;
using detail::ld;
using detail::raw;

namespace {

constexpr int kColRows = 256;  // rows per block of the column reductions

__global__ void rmsnorm_dx_kernel(int64_t h, const float* x, const Bf16* w, const float* rstd,
                                  const float* dy, float* dx, bool accumulate) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const float* xr = x + row * h;
    const float* dyr = dy + row * h;
    float* dxr = dx + row * h;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x) dot += dyr[j] * ld(w, j) * xr[j];
    dot = detail::block_sum(dot, scratch);
    const float c = dot * r * r * r / static_cast<float>(h);
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x) {
        const float g = r * dyr[j] * ld(w, j) - c * xr[j];
        dxr[j] = accumulate ? dxr[j] + g : g;
    }
}

// dw[j] += sum_r dy[r, j] x[r, j] rstd[r]: blockIdx.y takes kColRows rows, threads take columns.
__global__ void rmsnorm_dw_kernel(int64_t n, int64_t h, const float* x, const float* rstd,
                                  const float* dy, float* dw) {
    const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
    if (j >= h) return;
    const int64_t r0 = blockIdx.y * int64_t{kColRows};
    const int64_t r1 = r0 + kColRows < n ? r0 + kColRows : n;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; ++r) acc += dy[r * h + j] * x[r * h + j] * rstd[r];
    atomicAdd(dw + j, acc);
}

__global__ void column_sum_kernel(int64_t n, int64_t width, const float* dy, float* db) {
    const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
    if (j >= width) return;
    const int64_t r0 = blockIdx.y * int64_t{kColRows};
    const int64_t r1 = r0 + kColRows < n ? r0 + kColRows : n;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; ++r) acc += dy[r * width + j];
    atomicAdd(db + j, acc);
}

__global__ void rope_kernel(int64_t units, int heads, int d, const float* cos, const float* sin,
                            const int32_t* pos, float* x, bool inverse) {
    const int half = d / 2;
    const int64_t count = units * half;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const int64_t unit = i / half;
        const int k = static_cast<int>(i - unit * half);
        const int64_t p = pos[unit / heads];
        const float c = cos[p * half + k], s = sin[p * half + k];
        float* v = x + unit * d;
        const float a = v[k], b = v[k + half];
        if (!inverse) {
            v[k] = a * c - b * s;
            v[k + half] = b * c + a * s;
        } else {
            v[k] = a * c + b * s;
            v[k + half] = b * c - a * s;
        }
    }
}

__global__ void swiglu_backward_kernel(int64_t count, const float* g, const float* u,
                                       const float* ds, float* dg, float* du) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const float sig = 1.0f / (1.0f + expf(-g[i]));
        const float silu = g[i] * sig;
        const float d = ds[i];
        du[i] = d * silu;
        dg[i] = d * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    }
}

__global__ void embedding_backward_kernel(int64_t hidden, int64_t vocab, const int32_t* tokens,
                                          const float* dx, float* dtable) {
    const int64_t row = blockIdx.x;
    const int32_t t = tokens[row];
    if (t < 0 || t >= vocab) return;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
        atomicAdd(dtable + int64_t{t} * hidden + j, dx[row * hidden + j]);
    }
}

Status column_grid(const char* op, int64_t n, int64_t width, dim3* grid) {
    const int64_t gx = (width + 255) / 256, gy = (n + kColRows - 1) / kColRows;
    if (gx > 0x7fffffff || gy > 65535) return invalid_argument(std::string(op) + ": too large");
    *grid = dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    return Status();
}

}  // namespace

Status rmsnorm_backward(const Stream& s, int64_t n, int64_t h, const float* x, const Bf16* w,
                        const float* rstd, const float* dy, float* dx, bool accumulate_dx,
                        float* dw) {
    TANDEM_RETURN_IF_ERROR(check_args("rmsnorm_backward", n, {x, w, rstd, dy, dx, dw}));
    if (n == 0) return Status();
    if (h <= 0 || n > 0x7fffffff) return invalid_argument("rmsnorm_backward: bad shape");
    const int threads = h >= 1024 ? 512 : (h >= 256 ? 256 : 128);
    rmsnorm_dx_kernel<<<static_cast<unsigned>(n), threads, 0, raw(s)>>>(h, x, w, rstd, dy, dx,
                                                                        accumulate_dx);
    TANDEM_RETURN_IF_ERROR(launched("rmsnorm_backward (dx)"));
    dim3 grid;
    TANDEM_RETURN_IF_ERROR(column_grid("rmsnorm_backward", n, h, &grid));
    rmsnorm_dw_kernel<<<grid, 256, 0, raw(s)>>>(n, h, x, rstd, dy, dw);
    return launched("rmsnorm_backward (dw)");
}

Status rope_apply(const Stream& s, int64_t n, int heads, int d, const float* cos, const float* sin,
                  const int32_t* pos, float* x, bool inverse) {
    TANDEM_RETURN_IF_ERROR(check_args("rope_apply", n, {cos, sin, pos, x}));
    if (n == 0) return Status();
    if (heads <= 0 || d <= 0 || d % 2 != 0) {
        return invalid_argument("rope_apply: heads must be positive and d even");
    }
    const int64_t count = n * heads * (d / 2);
    rope_kernel<<<blocks_for(count), 256, 0, raw(s)>>>(n * heads, heads, d, cos, sin, pos, x,
                                                       inverse);
    return launched("rope_apply");
}

Status bias_backward(const Stream& s, int64_t n, int64_t width, const float* dy, float* db) {
    TANDEM_RETURN_IF_ERROR(check_args("bias_backward", n * width, {dy, db}));
    if (n * width == 0) return Status();
    dim3 grid;
    TANDEM_RETURN_IF_ERROR(column_grid("bias_backward", n, width, &grid));
    column_sum_kernel<<<grid, 256, 0, raw(s)>>>(n, width, dy, db);
    return launched("bias_backward");
}

Status swiglu_backward(const Stream& s, int64_t count, const float* g, const float* u,
                       const float* ds, float* dg, float* du) {
    TANDEM_RETURN_IF_ERROR(check_args("swiglu_backward", count, {g, u, ds, dg, du}));
    if (count == 0) return Status();
    swiglu_backward_kernel<<<blocks_for(count), 256, 0, raw(s)>>>(count, g, u, ds, dg, du);
    return launched("swiglu_backward");
}

Status embedding_backward(const Stream& s, int64_t n, int64_t hidden, int64_t vocab,
                          const int32_t* tokens, const float* dx, float* dtable) {
    TANDEM_RETURN_IF_ERROR(check_args("embedding_backward", n, {tokens, dx, dtable}));
    if (n == 0) return Status();
    if (n > 0x7fffffff) return invalid_argument("embedding_backward: too many rows");
    embedding_backward_kernel<<<static_cast<unsigned>(n), 256, 0, raw(s)>>>(hidden, vocab, tokens,
                                                                            dx, dtable);
    return launched("embedding_backward");
}

}  // namespace tandem::kernels::cuda
