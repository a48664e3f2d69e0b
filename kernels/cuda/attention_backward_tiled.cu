// Tiled attention backward on tensor cores (kernels/cuda/attention_backward.h), FlashAttention-2
// style, deterministic. Two kernels, 4 warps (128 threads) each, every warp owning 16 rows:
//
//   dkdv: block = (64-key tile, key/value head g). K and V tiles stay in shared memory; for every
//         query head of group g and every query tile that sees a key of the tile it loads Q, dO
//         (fp32 -> bf16), lse and delta = rowsum(dO * O) (fp32), computes S^T = K Q^T and
//         dP^T = V dO^T on tensor cores, P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - delta),
//         and accumulates dV += P^T dO and dK += dS^T Q in registers (P^T and dS^T go from the
//         accumulator fragments straight into A fragments, rounded to bf16).
//   dq:   block = (64-query tile, query head h). Q, dO, lse and delta stay in shared memory; for
//         every visible key tile it loads K and V, recomputes S, dP, dS and accumulates dQ += dS K.
//
// MMA: mma.sync.aligned.m16n8k16 bf16 x bf16 -> fp32; fragments are read from shared memory with
// ldmatrix (.trans for the operands whose reduction dimension is the row index: dO and Q in the
// dkdv kernel, K in the dq kernel). Shared rows are padded by 8 elements (16 bytes) so the eight
// row addresses of one ldmatrix fall in distinct banks. Rows beyond tq / tk are zero in shared
// memory and their lse is +inf (no probability), so they contribute nothing; causal masking by
// global positions (two runs) is applied per element only on tiles that straddle the diagonal.
// No cp.async pipelining yet: a block loads a tile, then computes on it (several blocks per SM
// overlap the two).
//
// The kernel bodies live in attention_backward_tiled_kernels.h, shared with a host emulation
// (tests/gpu/attention_backward_emulated_test.cc); this file gives them the device primitives.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention_backward_tiled.h"
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda::detail::tiled_device {

// The primitives attention_backward_tiled_kernels.h is written against, on the device.
__device__ __forceinline__ int tb_thread() { return threadIdx.x; }
__device__ __forceinline__ unsigned tb_block_x() { return blockIdx.x; }
__device__ __forceinline__ unsigned tb_block_y() { return blockIdx.y; }
__device__ __forceinline__ void tb_sync() { __syncthreads(); }
__device__ __forceinline__ float tb_warp_sum(float v) { return warp_sum(v); }

// c += a b for one m16n8k16 tile: a 16x16 (row), b 16x8 (col), bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const __nv_bfloat16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

}  // namespace tandem::kernels::cuda::detail::tiled_device

#define TANDEM_TILED_NS tiled_device
#define TB_FN __device__ __forceinline__
#define TB_UNROLL _Pragma("unroll")
#include "kernels/cuda/attention_backward_tiled_kernels.h"

namespace tandem::kernels::cuda::detail {
namespace {

using namespace tiled_device;

template <int D, int BQ>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(Args a) {
    extern __shared__ __align__(16) unsigned char smem[];
    dkdv_body<D, BQ>(a, smem);
}

template <int D, int BK>
__global__ void __launch_bounds__(kThreads) dq_kernel(Args a) {
    extern __shared__ __align__(16) unsigned char smem[];
    dq_body<D, BK>(a, smem);
}

// Launches a kernel with `bytes` of dynamic shared memory, raising the kernel's limit above the
// default 48 KiB once when needed.
template <typename Kernel>
Status launch(const Stream& s, Kernel kernel, dim3 grid, size_t bytes, const Args& a,
              const char* op) {
    if (bytes > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(
            kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
        if (err != cudaSuccess) {
            return cuda_status(
                err, std::string(op) + ": shared memory limit " + std::to_string(bytes) + " bytes");
        }
    }
    kernel<<<grid, kThreads, bytes, raw(s)>>>(a);
    return launched(op);
}

template <int D, int BQ, int BK>
Status run(const Stream& s, const Args& a) {
    if (a.tk > 0) {
        const size_t bytes = dkdv_smem_bytes<D, BQ>();
        const dim3 grid(static_cast<unsigned>((a.tk + kRows - 1) / kRows),
                        static_cast<unsigned>(a.hkv));
        TANDEM_RETURN_IF_ERROR(
            launch(s, dkdv_kernel<D, BQ>, grid, bytes, a, "attention_backward tiled (dk, dv)"));
    }
    if (a.tq > 0) {
        const size_t bytes = dq_smem_bytes<D, BK>();
        const dim3 grid(static_cast<unsigned>((a.tq + kRows - 1) / kRows),
                        static_cast<unsigned>(a.hq));
        TANDEM_RETURN_IF_ERROR(
            launch(s, dq_kernel<D, BK>, grid, bytes, a, "attention_backward tiled (dq)"));
    }
    return Status();
}

}  // namespace

Status attention_backward_tiled(const Stream& s, const AttentionParams& p, const void* q,
                                const void* k, const void* v, const float* o, const float* lse,
                                const float* dout, float* dq, float* dk, float* dv,
                                bool accumulate_grads) {
    const Args a = make_args(p, q, k, v, o, lse, dout, dq, dk, dv, accumulate_grads);
    // Register budget per thread (fp32 accumulators): dkdv holds dK, dV (D / 2 each) and S^T,
    // dP^T (BQ / 2 each); dq holds dQ (D / 2) and S, dP (BK / 2 each).
    if (p.d == 64) return run<64, 64, 64>(s, a);
    if (p.d == 128) return run<128, 32, 64>(s, a);
    return invalid_argument("attention_backward tiled: head dim " + std::to_string(p.d) +
                            " (only 64 and 128)");
}

}  // namespace tandem::kernels::cuda::detail
