// Decode attention over quantized KV pages: the kernel and its launcher (the host side, which
// reads KvPageRef and KvPageFormat, is kernels/cuda/kv_attention.cc).
#include <cuda_fp16.h>

#include <cmath>

#include "kernels/cuda/kv_attention_kernel.h"
#include "kernels/cuda/kv_page.cuh"
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda::detail {

namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kKvMaxD / 32;

// Element (row, h, c) of the page's keys (key = true) or values, dequantized.
__device__ __forceinline__ float dequant(const KvPageDesc& p, bool key, int64_t row, int h, int c,
                                         int hkv, int d) {
    PagedKvPages f;
    f.dtype = p.dtype;
    f.kivi = p.kivi;
    f.value_group = p.value_group;
    f.v_codes = p.v_codes;
    f.k_scales = p.k_scales;
    f.v_scales = p.v_scales;
    return page_value(f, p.page, key, row, h, c, hkv, d);
}

// grid (B, hq), kWarps warps. Warp w takes rows w, w + kWarps, ... of every page and keeps its own
// online softmax (max m, sum l, accumulator: lane owns channels lane, lane + 32, ...); the warps
// are merged by log-sum-exp at the end.
__global__ void __launch_bounds__(kWarps * 32)
    kv_decode_kernel(const KvPageDesc* pages, const int64_t* seq_begin, const int64_t* q_pos,
                     int hq, int hkv, int d, float scale, const float* q, float* o, float* lse) {
    const int b = blockIdx.x, h = blockIdx.y;
    const int kvh = h / (hq / hkv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __shared__ float qs[kKvMaxD];
    __shared__ float wm[kWarps], wl[kWarps];
    __shared__ float wacc[kWarps][kKvMaxD];
    const float* qrow = q + (static_cast<int64_t>(b) * hq + h) * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) qs[c] = qrow[c];
    __syncthreads();

    const int64_t qp = q_pos[b];
    float m = -INFINITY, l = 0.0f;
    float acc[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] = 0.0f;
    for (int64_t pi = seq_begin[b]; pi < seq_begin[b + 1]; ++pi) {
        const KvPageDesc p = pages[pi];
        if (p.pos0 > qp) continue;
        for (int r = warp; r < p.rows && p.pos0 + r <= qp; r += kWarps) {
            const int64_t row = p.row0 + r;
            float dot = 0.0f;
            for (int c = lane; c < d; c += 32) dot += qs[c] * dequant(p, true, row, kvh, c, hkv, d);
            const float s = warp_sum(dot) * scale;
            const float m_new = fmaxf(m, s);
            const float alpha = expf(m - m_new);  // m = -inf: 0
            const float w = expf(s - m_new);
            l = l * alpha + w;
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) {
                const int c = lane + 32 * i;
                if (c < d) acc[i] = acc[i] * alpha + w * dequant(p, false, row, kvh, c, hkv, d);
            }
            m = m_new;
        }
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
        const int c = lane + 32 * i;
        if (c < d) wacc[warp][c] = acc[i];
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w]);
    float* orow = o + (static_cast<int64_t>(b) * hq + h) * d;
    if (mx == -INFINITY) {  // no visible key
        for (int c = threadIdx.x; c < d; c += blockDim.x) orow[c] = 0.0f;
        if (threadIdx.x == 0) lse[static_cast<int64_t>(b) * hq + h] = -INFINITY;
        return;
    }
    float den = 0.0f;
    for (int w = 0; w < kWarps; ++w) den += wl[w] * expf(wm[w] - mx);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float num = 0.0f;
        for (int w = 0; w < kWarps; ++w) num += wacc[w][c] * expf(wm[w] - mx);
        orow[c] = num / den;
    }
    if (threadIdx.x == 0) lse[static_cast<int64_t>(b) * hq + h] = mx + logf(den);
}

}  // namespace

Status launch_kv_decode(const Stream& stream, const uint8_t* table, int64_t begin_offset, int64_t B,
                        int hq, int hkv, int d, float scale, const float* q, float* o, float* lse) {
    const auto* begin = reinterpret_cast<const int64_t*>(table + begin_offset);
    kv_decode_kernel<<<dim3(static_cast<unsigned>(B), static_cast<unsigned>(hq)), kWarps * 32, 0,
                       raw(stream)>>>(reinterpret_cast<const KvPageDesc*>(table), begin,
                                      begin + B + 1, hq, hkv, d, scale, q, o, lse);
    return launched("kv_paged_decode_cuda");
}

}  // namespace tandem::kernels::cuda::detail
