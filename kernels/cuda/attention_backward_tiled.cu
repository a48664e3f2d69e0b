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
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention_backward_tiled.h"
#include "kernels/cuda/attention_backward_tiles.h"
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda::detail {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;  // 4 warps of 16 rows
constexpr int kRows = 64;      // rows of the tile a block owns (keys in dkdv, queries in dq)
constexpr float kLog2e = 1.4426950408889634f;

struct Args {
    const bf16* q;
    const bf16* k;
    const bf16* v;
    const float* o;
    const float* lse;
    const float* dout;
    float* dq;
    float* dk;
    float* dv;
    tiles::Positions pos;  // tq, tk, causal and the position runs
    int64_t tq, tk;
    int hq, hkv;
    float scale;       // softmax scale
    float scale_log2;  // scale * log2(e): p = exp2(s * scale_log2 - lse * log2(e))
    int causal;
    int accumulate;
    int64_t lse_stride;
};

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
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// Fragment addresses for one lane (tile T row-major with row stride ld elements):
// A fragment of the 16x16 block at (r0, k0): registers {rows 0-7 | 8-15} x {cols 0-7 | 8-15}.
__device__ __forceinline__ const bf16* a_frag(const bf16* t, int ld, int r0, int k0, int lane) {
    return t + (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8;
}
// B fragments of two n-blocks (n0, n0 + 8) x k0..k0+15 where B[k][n] = T[n][k] (T rows are n):
// registers {b0, b1} of block n0, then of block n0 + 8.
__device__ __forceinline__ const bf16* b_frag(const bf16* t, int ld, int n0, int k0, int lane) {
    return t + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8;
}
// The same where B[k][n] = T[k][n] (T rows are k), read with ldmatrix.trans.
__device__ __forceinline__ const bf16* bt_frag(const bf16* t, int ld, int k0, int n0, int lane) {
    return t + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8;
}

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lower column) in the low half
    return *reinterpret_cast<uint32_t*>(&v);
}

// Rows row0..row0+rows-1 of head `head` of a [n, heads, D] bf16 tensor into t[rows][LD]; rows at
// or beyond n are zero. 16-byte vectors (the caller checked alignment).
template <int D, int LD>
__device__ __forceinline__ void load_bf16(bf16* t, const bf16* src, int64_t row0, int rows,
                                          int64_t n, int heads, int head) {
    constexpr int kVec = D / 8;
    for (int idx = threadIdx.x; idx < rows * kVec; idx += kThreads) {
        const int r = idx / kVec, c = idx - r * kVec;
        const int64_t row = row0 + r;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (row < n) val = reinterpret_cast<const uint4*>(src + (row * heads + head) * D)[c];
        *reinterpret_cast<uint4*>(t + r * LD + c * 8) = val;
    }
}

// dO rows (fp32) rounded to bf16 into t[rows][LD], and per row lse * log2(e) (+inf for rows
// beyond tq and rows without a visible key: no probability) and delta = sum dO * O in fp32.
template <int D, int LD>
__device__ __forceinline__ void load_dout(const Args& a, bf16* t, float* lse2, float* delta,
                                          int64_t row0, int rows, int head) {
    constexpr int kVec = D / 4;
    for (int idx = threadIdx.x; idx < rows * kVec; idx += kThreads) {
        const int r = idx / kVec, c = idx - r * kVec;
        const int64_t row = row0 + r;
        float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row < a.tq) val = reinterpret_cast<const float4*>(a.dout + (row * a.hq + head) * D)[c];
        *reinterpret_cast<uint2*>(t + r * LD + c * 4) =
            make_uint2(pack(val.x, val.y), pack(val.z, val.w));
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int r = warp; r < rows; r += kThreads / 32) {
        const int64_t row = row0 + r;
        float sum = 0.0f, l = INFINITY;
        if (row < a.tq) {
            const float* dor = a.dout + (row * a.hq + head) * D;
            const float* orow = a.o + (row * a.hq + head) * D;
#pragma unroll
            for (int c = lane; c < D; c += 32) sum += dor[c] * orow[c];
            const float x = a.lse[head * a.lse_stride + row];
            if (x != -INFINITY) l = x * kLog2e;
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            lse2[r] = l;
            delta[r] = sum;
        }
    }
}

// out[row, head, col..col+1] (+)= (x, y), fp32, 8-byte stores.
__device__ __forceinline__ void store2(float* out, int64_t off, float x, float y, int accumulate) {
    float2* p = reinterpret_cast<float2*>(out + off);
    if (accumulate) {
        const float2 old = *p;
        x += old.x;
        y += old.y;
    }
    *p = make_float2(x, y);
}

// dK, dV of one 64-key tile of head g; BQ query rows per inner tile.
template <int D, int BQ>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(Args a) {
    constexpr int LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* sK = reinterpret_cast<bf16*>(smem);
    bf16* sV = sK + kRows * LD;
    bf16* sQ = sV + kRows * LD;
    bf16* sdO = sQ + BQ * LD;
    float* sLse = reinterpret_cast<float*>(sdO + BQ * LD);
    float* sDelta = sLse + BQ;

    const int64_t j0 = int64_t{blockIdx.x} * kRows;
    const int g = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gr = lane >> 2, tc = (lane & 3) * 2;  // fragment row and column within a block
    const int w0 = warp * 16;                       // this warp's key rows in the tile
    const int rep = a.hq / a.hkv;

    load_bf16<D, LD>(sK, a.k, j0, kRows, a.tk, a.hkv, g);
    load_bf16<D, LD>(sV, a.v, j0, kRows, a.tk, a.hkv, g);

    // Query tiles before first_tile see none of this tile's keys; rows from full_from on see all.
    const tiles::KeyTileQueries range = tiles::key_tile_queries(a.pos, j0, kRows, BQ);

    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;

    for (int r = 0; r < rep; ++r) {
        const int h = g * rep + r;
        for (int64_t i0 = range.first_tile; i0 < a.tq; i0 += BQ) {
            __syncthreads();  // the previous tile's reads of sQ, sdO are done
            load_bf16<D, LD>(sQ, a.q, i0, BQ, a.tq, a.hq, h);
            load_dout<D, LD>(a, sdO, sLse, sDelta, i0, BQ, h);
            __syncthreads();

            // S^T = K Q^T and dP^T = V dO^T: 16 key rows x BQ query columns per warp.
            float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
            for (int n = 0; n < BQ / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                uint32_t ak[4], av[4];
                ldsm_x4(ak, a_frag(sK, LD, w0, kk * 16, lane));
                ldsm_x4(av, a_frag(sV, LD, w0, kk * 16, lane));
#pragma unroll
                for (int nb = 0; nb < BQ / 16; ++nb) {
                    uint32_t b[4];
                    ldsm_x4(b, b_frag(sQ, LD, nb * 16, kk * 16, lane));
                    mma(st[2 * nb], ak, b[0], b[1]);
                    mma(st[2 * nb + 1], ak, b[2], b[3]);
                    ldsm_x4(b, b_frag(sdO, LD, nb * 16, kk * 16, lane));
                    mma(dpt[2 * nb], av, b[0], b[1]);
                    mma(dpt[2 * nb + 1], av, b[2], b[3]);
                }
            }
            // P^T and dS^T (dS without the softmax scale, applied to dK at the end).
            const bool mask = a.causal && i0 < range.full_from;
#pragma unroll
            for (int n = 0; n < BQ / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int jr = w0 + gr + (e >> 1) * 8, ic = n * 8 + tc + (e & 1);
                    float p = exp2f(st[n][e] * a.scale_log2 - sLse[ic]);
                    if (mask && !tiles::visible(a.pos, i0 + ic, j0 + jr)) p = 0.0f;
                    dpt[n][e] = p * (dpt[n][e] - sDelta[ic]);
                    st[n][e] = p;
                }
            }
            // dV += P^T dO, dK += dS^T Q: the reduction runs over the BQ query rows.
#pragma unroll
            for (int kk = 0; kk < BQ / 16; ++kk) {
                const uint32_t ap[4] = {pack(st[2 * kk][0], st[2 * kk][1]),
                                        pack(st[2 * kk][2], st[2 * kk][3]),
                                        pack(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                        pack(st[2 * kk + 1][2], st[2 * kk + 1][3])};
                const uint32_t ads[4] = {pack(dpt[2 * kk][0], dpt[2 * kk][1]),
                                         pack(dpt[2 * kk][2], dpt[2 * kk][3]),
                                         pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                         pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
                for (int nd = 0; nd < D / 16; ++nd) {
                    uint32_t b[4];
                    ldsm_x4_trans(b, bt_frag(sdO, LD, kk * 16, nd * 16, lane));
                    mma(dv[2 * nd], ap, b[0], b[1]);
                    mma(dv[2 * nd + 1], ap, b[2], b[3]);
                    ldsm_x4_trans(b, bt_frag(sQ, LD, kk * 16, nd * 16, lane));
                    mma(dk[2 * nd], ads, b[0], b[1]);
                    mma(dk[2 * nd + 1], ads, b[2], b[3]);
                }
            }
        }
    }

#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int64_t j = j0 + w0 + gr + half * 8;
            if (j >= a.tk) continue;
            const int64_t off = (j * a.hkv + g) * D + n * 8 + tc;
            store2(a.dk, off, a.scale * dk[n][2 * half], a.scale * dk[n][2 * half + 1],
                   a.accumulate);
            store2(a.dv, off, dv[n][2 * half], dv[n][2 * half + 1], a.accumulate);
        }
    }
}

// dQ of one 64-query tile of head h; BK key rows per inner tile.
template <int D, int BK>
__global__ void __launch_bounds__(kThreads) dq_kernel(Args a) {
    constexpr int LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sdO = sQ + kRows * LD;
    bf16* sK = sdO + kRows * LD;
    bf16* sV = sK + BK * LD;
    float* sLse = reinterpret_cast<float*>(sV + BK * LD);
    float* sDelta = sLse + kRows;

    const int64_t i0 = int64_t{blockIdx.x} * kRows;
    const int h = blockIdx.y, g = h / (a.hq / a.hkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gr = lane >> 2, tc = (lane & 3) * 2;
    const int w0 = warp * 16;  // this warp's query rows in the tile

    load_bf16<D, LD>(sQ, a.q, i0, kRows, a.tq, a.hq, h);
    load_dout<D, LD>(a, sdO, sLse, sDelta, i0, kRows, h);
    __syncthreads();
    const float lse2[2] = {sLse[w0 + gr], sLse[w0 + gr + 8]};
    const float delta[2] = {sDelta[w0 + gr], sDelta[w0 + gr + 8]};

    // Keys from range.end on are seen by no row of the tile; keys before range.full by all.
    const tiles::QueryTileKeys range = tiles::query_tile_keys(a.pos, i0, kRows);

    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;

    for (int64_t j0 = 0; j0 < range.end; j0 += BK) {
        __syncthreads();  // the previous tile's reads of sK, sV are done
        load_bf16<D, LD>(sK, a.k, j0, BK, a.tk, a.hkv, g);
        load_bf16<D, LD>(sV, a.v, j0, BK, a.tk, a.hkv, g);
        __syncthreads();

        float s[BK / 8][4], dp[BK / 8][4];
#pragma unroll
        for (int n = 0; n < BK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t aq[4], ado[4];
            ldsm_x4(aq, a_frag(sQ, LD, w0, kk * 16, lane));
            ldsm_x4(ado, a_frag(sdO, LD, w0, kk * 16, lane));
#pragma unroll
            for (int nb = 0; nb < BK / 16; ++nb) {
                uint32_t b[4];
                ldsm_x4(b, b_frag(sK, LD, nb * 16, kk * 16, lane));
                mma(s[2 * nb], aq, b[0], b[1]);
                mma(s[2 * nb + 1], aq, b[2], b[3]);
                ldsm_x4(b, b_frag(sV, LD, nb * 16, kk * 16, lane));
                mma(dp[2 * nb], ado, b[0], b[1]);
                mma(dp[2 * nb + 1], ado, b[2], b[3]);
            }
        }
        const bool mask = j0 + BK > range.full;  // causal diagonal or keys beyond tk
#pragma unroll
        for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int ir = w0 + gr + (e >> 1) * 8, jc = n * 8 + tc + (e & 1);
                float p = exp2f(s[n][e] * a.scale_log2 - lse2[e >> 1]);
                if (mask) {
                    const int64_t j = j0 + jc;
                    if (j >= a.tk || !tiles::visible(a.pos, i0 + ir, j)) p = 0.0f;
                }
                dp[n][e] = p * (dp[n][e] - delta[e >> 1]);
            }
        }
        // dQ += dS K: the reduction runs over the BK key rows.
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            const uint32_t ads[4] = {pack(dp[2 * kk][0], dp[2 * kk][1]),
                                     pack(dp[2 * kk][2], dp[2 * kk][3]),
                                     pack(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                                     pack(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
            for (int nd = 0; nd < D / 16; ++nd) {
                uint32_t b[4];
                ldsm_x4_trans(b, bt_frag(sK, LD, kk * 16, nd * 16, lane));
                mma(acc[2 * nd], ads, b[0], b[1]);
                mma(acc[2 * nd + 1], ads, b[2], b[3]);
            }
        }
    }

#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int64_t i = i0 + w0 + gr + half * 8;
            if (i >= a.tq) continue;
            const int64_t off = (i * a.hq + h) * D + n * 8 + tc;
            store2(a.dq, off, a.scale * acc[n][2 * half], a.scale * acc[n][2 * half + 1],
                   a.accumulate);
        }
    }
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
    constexpr int LD = D + 8;
    if (a.tk > 0) {
        const size_t bytes = size_t{2} * (kRows + BQ) * LD * sizeof(bf16) + 2 * BQ * sizeof(float);
        const dim3 grid(static_cast<unsigned>((a.tk + kRows - 1) / kRows),
                        static_cast<unsigned>(a.hkv));
        TANDEM_RETURN_IF_ERROR(
            launch(s, dkdv_kernel<D, BQ>, grid, bytes, a, "attention_backward tiled (dk, dv)"));
    }
    if (a.tq > 0) {
        const size_t bytes =
            size_t{2} * (kRows + BK) * LD * sizeof(bf16) + 2 * kRows * sizeof(float);
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
    Args a{};
    a.q = static_cast<const bf16*>(q);
    a.k = static_cast<const bf16*>(k);
    a.v = static_cast<const bf16*>(v);
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
    a.scale = p.scale;
    a.scale_log2 = p.scale * kLog2e;
    a.causal = p.causal ? 1 : 0;
    a.accumulate = accumulate_grads ? 1 : 0;
    a.pos.tq = p.tq;
    a.pos.tk = p.tk;
    a.pos.causal = p.causal;
    a.pos.q_pos0 = p.q_pos0;
    a.pos.k_pos0 = p.k_pos0;
    a.pos.q_split = p.q_split;
    a.pos.q_pos1 = p.q_pos1;
    a.pos.k_split = p.k_split;
    a.pos.k_pos1 = p.k_pos1;
    a.lse_stride = p.lse_stride ? p.lse_stride : p.tq;
    // Register budget per thread (fp32 accumulators): dkdv holds dK, dV (D / 2 each) and S^T,
    // dP^T (BQ / 2 each); dq holds dQ (D / 2) and S, dP (BK / 2 each).
    if (p.d == 64) return run<64, 64, 64>(s, a);
    if (p.d == 128) return run<128, 32, 64>(s, a);
    return invalid_argument("attention_backward tiled: head dim " + std::to_string(p.d) +
                            " (only 64 and 128)");
}

}  // namespace tandem::kernels::cuda::detail
