// The tiled fallback GEMM of kernels/cuda/gemm.h: 64x64 output tiles, 16-deep k slices through
// shared memory, 4x4 outputs per thread, fp32 accumulation. Correct for any shape, stride and
// alignment; not fast (cuBLASLt is the fast path).
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda {

namespace {

constexpr int kTile = 64, kDepth = 16;

__global__ void __launch_bounds__(256) gemm_tiled(GemmShape g, float alpha, const Bf16* a,
                                                  const Bf16* b, float beta, void* c, bool c_bf16) {
    __shared__ float as[kDepth][kTile + 1];  // as[kk][i] = op(A)[row0 + i, k0 + kk]
    __shared__ float bs[kDepth][kTile + 1];  // bs[kk][j] = op(B)[k0 + kk, col0 + j]
    const int64_t row0 = blockIdx.y * int64_t{kTile}, col0 = blockIdx.x * int64_t{kTile};
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < g.k; k0 += kDepth) {
        for (int e = threadIdx.x; e < kDepth * kTile; e += blockDim.x) {
            const int kk = e / kTile, i = e % kTile;
            const int64_t r = row0 + i, kx = k0 + kk;
            float va = 0.0f;
            if (r < g.m && kx < g.k)
                va = detail::ld(a, g.trans_a ? kx * g.lda + r : r * g.lda + kx);
            as[kk][i] = va;
            const int64_t cidx = col0 + i;
            float vb = 0.0f;
            if (cidx < g.n && kx < g.k) {
                vb = detail::ld(b, g.trans_b ? cidx * g.ldb + kx : kx * g.ldb + cidx);
            }
            bs[kk][i] = vb;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kDepth; ++kk) {
            float ra[4], rb[4];
#pragma unroll
            for (int x = 0; x < 4; ++x) {
                ra[x] = as[kk][ty + 16 * x];
                rb[x] = bs[kk][tx + 16 * x];
            }
#pragma unroll
            for (int x = 0; x < 4; ++x)
#pragma unroll
                for (int y = 0; y < 4; ++y) acc[x][y] += ra[x] * rb[y];
        }
        __syncthreads();
    }
#pragma unroll
    for (int x = 0; x < 4; ++x) {
        const int64_t r = row0 + ty + 16 * x;
        if (r >= g.m) continue;
#pragma unroll
        for (int y = 0; y < 4; ++y) {
            const int64_t col = col0 + tx + 16 * y;
            if (col >= g.n) continue;
            const int64_t idx = r * g.ldc + col;
            if (c_bf16) {
                Bf16* cp = static_cast<Bf16*>(c);
                const float old = beta != 0.0f ? beta * detail::ld(cp, idx) : 0.0f;
                detail::st(cp, idx, alpha * acc[x][y] + old);
            } else {
                float* cp = static_cast<float*>(c);
                const float old = beta != 0.0f ? beta * cp[idx] : 0.0f;
                cp[idx] = alpha * acc[x][y] + old;
            }
        }
    }
}

}  // namespace

Status gemm_fallback(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                     float beta, void* c, bool c_bf16) {
    if (g.m < 0 || g.n < 0 || g.k < 0) return invalid_argument("gemm: negative size");
    if (g.m == 0 || g.n == 0) return Status();
    const int64_t gx = (g.n + kTile - 1) / kTile, gy = (g.m + kTile - 1) / kTile;
    if (gx > 0x7fffffff || gy > 65535) return invalid_argument("gemm: fallback grid too large");
    gemm_tiled<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), 256, 0,
                 detail::raw(s)>>>(g, alpha, a, b, beta, c, c_bf16);
    return detail::launched("gemm (fallback kernel)");
}

}  // namespace tandem::kernels::cuda
