#pragma once

// Shared device helpers of the ops_*.cu files (internal to kernels/cuda).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "kernels/cuda/ops.h"

namespace tandem::kernels::cuda::detail {

__device__ __forceinline__ float ld(const Bf16* p, int64_t i) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
}
__device__ __forceinline__ void st(Bf16* p, int64_t i, float v) {
    reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; safe to call repeatedly with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

inline cudaStream_t raw(const Stream& s) { return static_cast<cudaStream_t>(s.handle()); }

// The launch's error (cudaGetLastError right after it), named after the op.
inline Status launched(const char* op) {
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return cuda_status(err, std::string(op) + ": kernel launch");
    return Status();
}

// Blocks for an elementwise grid of `count` values at 256 threads, grid-stride beyond that.
inline unsigned blocks_for(int64_t count, int threads = 256) {
    const int64_t b = (count + threads - 1) / threads;
    return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

// Checks n >= 0 and non-null pointers where n > 0.
inline Status check_args(const char* op, int64_t n, std::initializer_list<const void*> ptrs) {
    if (n < 0) return invalid_argument(std::string(op) + ": negative size");
    if (n == 0) return Status();
    for (const void* p : ptrs) {
        if (!p) return invalid_argument(std::string(op) + ": null device pointer");
    }
    return Status();
}

}  // namespace tandem::kernels::cuda::detail
