#pragma once

// Internal to kernels/cuda: the bodies of the tiled attention backward's two kernels (see
// attention_backward_tiled.cu for the algorithm) and their helpers, written once for two
// includers: attention_backward_tiled.cu compiles them for the device, and
// tests/gpu/attention_backward_emulated_test.cc runs them on the host with an emulated warp
// (ldmatrix, mma.sync and shuffles done lane by lane after the PTX fragment layouts), so the
// fragment and index arithmetic is exercised without a GPU. The includer defines, before
// including: the namespace TANDEM_TILED_NS; TB_FN (function qualifiers) and TB_UNROLL; and
// tb_thread(), tb_block_x(), tb_block_y(), tb_sync(), tb_warp_sum(float), ldsm_x4(r, p),
// ldsm_x4_trans(r, p), mma(c, a, b0, b1) with the semantics of threadIdx.x, blockIdx,
// __syncthreads, a warp sum and the PTX instructions.

#include <cuda_bf16.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/cuda/attention_backward_tiles.h"

namespace tandem::kernels::cuda::detail::TANDEM_TILED_NS {

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

// Fragment addresses for one lane (tile T row-major with row stride ld elements):
// A fragment of the 16x16 block at (r0, k0): registers {rows 0-7 | 8-15} x {cols 0-7 | 8-15}.
TB_FN const bf16* a_frag(const bf16* t, int ld, int r0, int k0, int lane) {
    return t + (r0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8;
}
// B fragments of two n-blocks (n0, n0 + 8) x k0..k0+15 where B[k][n] = T[n][k] (T rows are n):
// registers {b0, b1} of block n0, then of block n0 + 8.
TB_FN const bf16* b_frag(const bf16* t, int ld, int n0, int k0, int lane) {
    return t + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8;
}
// The same where B[k][n] = T[k][n] (T rows are k), read with ldmatrix.trans.
TB_FN const bf16* bt_frag(const bf16* t, int ld, int k0, int n0, int lane) {
    return t + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8;
}

TB_FN uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lower column) in the low half
    return *reinterpret_cast<uint32_t*>(&v);
}

// Rows row0..row0+rows-1 of head `head` of a [n, heads, D] bf16 tensor into t[rows][LD]; rows at
// or beyond n are zero. 16-byte vectors (the caller checked alignment).
template <int D, int LD>
TB_FN void load_bf16(bf16* t, const bf16* src, int64_t row0, int rows, int64_t n, int heads,
                     int head) {
    constexpr int kVec = D / 8;
    for (int idx = tb_thread(); idx < rows * kVec; idx += kThreads) {
        const int r = idx / kVec, c = idx - r * kVec;
        const int64_t row = row0 + r;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (row < n) val = reinterpret_cast<const uint4*>(src + (row * heads + head) * D)[c];
        *reinterpret_cast<uint4*>(t + r * LD + c * 8) = val;
    }
}

// dO rows (fp32) rounded to bf16 into t[rows][LD], and per row lse * log2(e) (+inf for rows
// beyond tq and rows without a visible key: no probability) and delta = sum dO * O in fp32
// (dO rounded to bf16 first, as the tiles hold it).
template <int D, int LD>
TB_FN void load_dout(const Args& a, bf16* t, float* lse2, float* delta, int64_t row0, int rows,
                     int head) {
    constexpr int kVec = D / 4;
    for (int idx = tb_thread(); idx < rows * kVec; idx += kThreads) {
        const int r = idx / kVec, c = idx - r * kVec;
        const int64_t row = row0 + r;
        float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row < a.tq) val = reinterpret_cast<const float4*>(a.dout + (row * a.hq + head) * D)[c];
        *reinterpret_cast<uint2*>(t + r * LD + c * 4) =
            make_uint2(pack(val.x, val.y), pack(val.z, val.w));
    }
    const int warp = tb_thread() >> 5, lane = tb_thread() & 31;
    for (int r = warp; r < rows; r += kThreads / 32) {
        const int64_t row = row0 + r;
        float sum = 0.0f, l = INFINITY;
        if (row < a.tq) {
            const float* dor = a.dout + (row * a.hq + head) * D;
            const float* orow = a.o + (row * a.hq + head) * D;
            TB_UNROLL
            // dO as the MMAs see it (bf16): delta and dP then come from the same dO, and the
            // gradients are exactly those of the rounded dO (no cancellation error in dP - delta).
            for (int c = lane; c < D; c += 32) {
                sum += __bfloat162float(__float2bfloat16_rn(dor[c])) * orow[c];
            }
            const float x = a.lse[head * a.lse_stride + row];
            if (x != -INFINITY) l = x * kLog2e;
        }
        sum = tb_warp_sum(sum);
        if (lane == 0) {
            lse2[r] = l;
            delta[r] = sum;
        }
    }
}

// out[row, head, col..col+1] (+)= (x, y), fp32, 8-byte stores.
TB_FN void store2(float* out, int64_t off, float x, float y, int accumulate) {
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
TB_FN void dkdv_body(const Args& a, unsigned char* smem) {
    constexpr int LD = D + 8;
    bf16* sK = reinterpret_cast<bf16*>(smem);
    bf16* sV = sK + kRows * LD;
    bf16* sQ = sV + kRows * LD;
    bf16* sdO = sQ + BQ * LD;
    float* sLse = reinterpret_cast<float*>(sdO + BQ * LD);
    float* sDelta = sLse + BQ;

    const int64_t j0 = int64_t{tb_block_x()} * kRows;
    const int g = tb_block_y();
    const int warp = tb_thread() >> 5, lane = tb_thread() & 31;
    const int gr = lane >> 2, tc = (lane & 3) * 2;  // fragment row and column within a block
    const int w0 = warp * 16;                       // this warp's key rows in the tile
    const int rep = a.hq / a.hkv;

    load_bf16<D, LD>(sK, a.k, j0, kRows, a.tk, a.hkv, g);
    load_bf16<D, LD>(sV, a.v, j0, kRows, a.tk, a.hkv, g);

    // Query tiles before first_tile see none of this tile's keys; rows from full_from on see all.
    const tiles::KeyTileQueries range = tiles::key_tile_queries(a.pos, j0, kRows, BQ);

    float dk[D / 8][4], dv[D / 8][4];
    TB_UNROLL
    for (int n = 0; n < D / 8; ++n) TB_UNROLL
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;

    for (int r = 0; r < rep; ++r) {
        const int h = g * rep + r;
        for (int64_t i0 = range.first_tile; i0 < a.tq; i0 += BQ) {
            tb_sync();  // the previous tile's reads of sQ, sdO are done
            load_bf16<D, LD>(sQ, a.q, i0, BQ, a.tq, a.hq, h);
            load_dout<D, LD>(a, sdO, sLse, sDelta, i0, BQ, h);
            tb_sync();

            // S^T = K Q^T and dP^T = V dO^T: 16 key rows x BQ query columns per warp.
            float st[BQ / 8][4], dpt[BQ / 8][4];
            TB_UNROLL
            for (int n = 0; n < BQ / 8; ++n) TB_UNROLL
            for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
            TB_UNROLL
            for (int kk = 0; kk < D / 16; ++kk) {
                uint32_t ak[4], av[4];
                ldsm_x4(ak, a_frag(sK, LD, w0, kk * 16, lane));
                ldsm_x4(av, a_frag(sV, LD, w0, kk * 16, lane));
                TB_UNROLL
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
            TB_UNROLL
            for (int n = 0; n < BQ / 8; ++n) {
                TB_UNROLL
                for (int e = 0; e < 4; ++e) {
                    const int jr = w0 + gr + (e >> 1) * 8, ic = n * 8 + tc + (e & 1);
                    float p = exp2f(st[n][e] * a.scale_log2 - sLse[ic]);
                    if (mask && !tiles::visible(a.pos, i0 + ic, j0 + jr)) p = 0.0f;
                    dpt[n][e] = p * (dpt[n][e] - sDelta[ic]);
                    st[n][e] = p;
                }
            }
            // dV += P^T dO, dK += dS^T Q: the reduction runs over the BQ query rows.
            TB_UNROLL
            for (int kk = 0; kk < BQ / 16; ++kk) {
                const uint32_t ap[4] = {pack(st[2 * kk][0], st[2 * kk][1]),
                                        pack(st[2 * kk][2], st[2 * kk][3]),
                                        pack(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                        pack(st[2 * kk + 1][2], st[2 * kk + 1][3])};
                const uint32_t ads[4] = {pack(dpt[2 * kk][0], dpt[2 * kk][1]),
                                         pack(dpt[2 * kk][2], dpt[2 * kk][3]),
                                         pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                         pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
                TB_UNROLL
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

    TB_UNROLL
    for (int n = 0; n < D / 8; ++n) {
        TB_UNROLL
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
TB_FN void dq_body(const Args& a, unsigned char* smem) {
    constexpr int LD = D + 8;
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sdO = sQ + kRows * LD;
    bf16* sK = sdO + kRows * LD;
    bf16* sV = sK + BK * LD;
    float* sLse = reinterpret_cast<float*>(sV + BK * LD);
    float* sDelta = sLse + kRows;

    const int64_t i0 = int64_t{tb_block_x()} * kRows;
    const int h = tb_block_y(), g = h / (a.hq / a.hkv);
    const int warp = tb_thread() >> 5, lane = tb_thread() & 31;
    const int gr = lane >> 2, tc = (lane & 3) * 2;
    const int w0 = warp * 16;  // this warp's query rows in the tile

    load_bf16<D, LD>(sQ, a.q, i0, kRows, a.tq, a.hq, h);
    load_dout<D, LD>(a, sdO, sLse, sDelta, i0, kRows, h);
    tb_sync();
    const float lse2[2] = {sLse[w0 + gr], sLse[w0 + gr + 8]};
    const float delta[2] = {sDelta[w0 + gr], sDelta[w0 + gr + 8]};

    // Keys from range.end on are seen by no row of the tile; keys before range.full by all.
    const tiles::QueryTileKeys range = tiles::query_tile_keys(a.pos, i0, kRows);

    float acc[D / 8][4];
    TB_UNROLL
    for (int n = 0; n < D / 8; ++n) TB_UNROLL
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;

    for (int64_t j0 = 0; j0 < range.end; j0 += BK) {
        tb_sync();  // the previous tile's reads of sK, sV are done
        load_bf16<D, LD>(sK, a.k, j0, BK, a.tk, a.hkv, g);
        load_bf16<D, LD>(sV, a.v, j0, BK, a.tk, a.hkv, g);
        tb_sync();

        float s[BK / 8][4], dp[BK / 8][4];
        TB_UNROLL
        for (int n = 0; n < BK / 8; ++n) TB_UNROLL
        for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
        TB_UNROLL
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t aq[4], ado[4];
            ldsm_x4(aq, a_frag(sQ, LD, w0, kk * 16, lane));
            ldsm_x4(ado, a_frag(sdO, LD, w0, kk * 16, lane));
            TB_UNROLL
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
        TB_UNROLL
        for (int n = 0; n < BK / 8; ++n) {
            TB_UNROLL
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
        TB_UNROLL
        for (int kk = 0; kk < BK / 16; ++kk) {
            const uint32_t ads[4] = {pack(dp[2 * kk][0], dp[2 * kk][1]),
                                     pack(dp[2 * kk][2], dp[2 * kk][3]),
                                     pack(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                                     pack(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
            TB_UNROLL
            for (int nd = 0; nd < D / 16; ++nd) {
                uint32_t b[4];
                ldsm_x4_trans(b, bt_frag(sK, LD, kk * 16, nd * 16, lane));
                mma(acc[2 * nd], ads, b[0], b[1]);
                mma(acc[2 * nd + 1], ads, b[2], b[3]);
            }
        }
    }

    TB_UNROLL
    for (int n = 0; n < D / 8; ++n) {
        TB_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int64_t i = i0 + w0 + gr + half * 8;
            if (i >= a.tq) continue;
            const int64_t off = (i * a.hq + h) * D + n * 8 + tc;
            store2(a.dq, off, a.scale * acc[n][2 * half], a.scale * acc[n][2 * half + 1],
                   a.accumulate);
        }
    }
}

// Dynamic shared memory of the two kernels.
template <int D, int BQ>
constexpr size_t dkdv_smem_bytes() {
    return size_t{2} * (kRows + BQ) * (D + 8) * sizeof(bf16) + 2 * BQ * sizeof(float);
}
template <int D, int BK>
constexpr size_t dq_smem_bytes() {
    return size_t{2} * (kRows + BK) * (D + 8) * sizeof(bf16) + 2 * kRows * sizeof(float);
}

// The kernels' arguments for `p` (host code).
inline Args make_args(const AttentionParams& p, const void* q, const void* k, const void* v,
                      const float* o, const float* lse, const float* dout, float* dq, float* dk,
                      float* dv, bool accumulate_grads) {
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
    return a;
}

}  // namespace tandem::kernels::cuda::detail::TANDEM_TILED_NS
