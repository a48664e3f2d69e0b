// Paged KV cache kernels (kernels/cuda/paged_kv.h).
#include "kernels/cuda/ops_common.cuh"
#include "kernels/cuda/paged_kv.h"

namespace tandem::kernels::cuda {

using detail::blocks_for;
using detail::launched;
using detail::raw;

namespace {

constexpr int kWarps = 4;
constexpr int kMaxD = 256;
constexpr int kPerLane = kMaxD / 64;  // bf16 pairs per lane

// One thread per bf16 pair of a row's hkv * d values.
__global__ void kv_write_kernel(int64_t n, int64_t row_pairs, int block_tokens,
                                const int32_t* slots, const __nv_bfloat162* k,
                                const __nv_bfloat162* v, __nv_bfloat162* kp, __nv_bfloat162* vp) {
    const int64_t total = n * row_pairs;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
         i += int64_t{gridDim.x} * blockDim.x) {
        const int64_t r = i / row_pairs, c = i % row_pairs;
        const int32_t slot = slots[r];
        if (slot < 0) continue;
        const int64_t dst = static_cast<int64_t>(slot) * row_pairs + c;
        kp[dst] = k[i];
        vp[dst] = v[i];
    }
}

// grid (count, 2 * layers): one block copies one block of K or V of one layer, 16 bytes a thread.
__global__ void copy_blocks_kernel(const int32_t* pairs, int64_t block_vec, int64_t pool_vec,
                                   int4* pool) {
    const int64_t src = pairs[2 * blockIdx.x], dst = pairs[2 * blockIdx.x + 1];
    int4* base = pool + blockIdx.y * pool_vec;
    for (int64_t i = threadIdx.x; i < block_vec; i += blockDim.x) {
        base[dst * block_vec + i] = base[src * block_vec + i];
    }
}

// grid (n, hq), kWarps warps. Warp w takes positions w, w + kWarps, ... with its own online
// softmax (lane owns channel pairs lane, lane + 32, ...); warps merge by log-sum-exp at the end.
__global__ void __launch_bounds__(kWarps * 32)
    paged_decode_kernel(PagedDecode p, const __nv_bfloat162* q, float* o) {
    const int r = blockIdx.x, h = blockIdx.y;
    const int hkv = p.shape.hkv, d = p.shape.d, dp = d / 2, bt = p.shape.block_tokens;
    const int kvh = h / (p.hq / hkv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __shared__ float wm[kWarps], wl[kWarps];
    __shared__ float2 wacc[kWarps][kMaxD / 2];
    float2 qv[kPerLane];
    const __nv_bfloat162* qrow = q + (static_cast<int64_t>(r) * p.hq + h) * dp;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
        const int c = lane + 32 * i;
        qv[i] = c < dp ? __bfloat1622float2(qrow[c]) : make_float2(0.f, 0.f);
    }
    const int len = p.context_lens[r];
    const int32_t* table = p.block_table + static_cast<int64_t>(r) * p.table_width;
    const auto* kp = reinterpret_cast<const __nv_bfloat162*>(p.k_pool);
    const auto* vp = reinterpret_cast<const __nv_bfloat162*>(p.v_pool);
    float m = -INFINITY, l = 0.0f;
    float2 acc[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] = make_float2(0.f, 0.f);
    for (int t = warp; t < len; t += kWarps) {
        const int64_t slot = static_cast<int64_t>(table[t / bt]) * bt + t % bt;
        const int64_t base = (slot * hkv + kvh) * dp;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
            const int c = lane + 32 * i;
            if (c < dp) {
                const float2 kk = __bfloat1622float2(kp[base + c]);
                dot += qv[i].x * kk.x + qv[i].y * kk.y;
            }
        }
        const float sc = detail::warp_sum(dot) * p.scale;
        const float m_new = fmaxf(m, sc);
        const float alpha = expf(m - m_new);
        const float w = expf(sc - m_new);
        l = l * alpha + w;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
            const int c = lane + 32 * i;
            if (c < dp) {
                const float2 vv = __bfloat1622float2(vp[base + c]);
                acc[i].x = acc[i].x * alpha + w * vv.x;
                acc[i].y = acc[i].y * alpha + w * vv.y;
            }
        }
        m = m_new;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
        const int c = lane + 32 * i;
        if (c < dp) wacc[warp][c] = acc[i];
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w]);
    float2* orow = reinterpret_cast<float2*>(o + (static_cast<int64_t>(r) * p.hq + h) * d);
    if (mx == -INFINITY) {
        for (int c = threadIdx.x; c < dp; c += blockDim.x) orow[c] = make_float2(0.f, 0.f);
        return;
    }
    float den = 0.0f, f[kWarps];
    for (int w = 0; w < kWarps; ++w) {
        f[w] = wm[w] == -INFINITY ? 0.0f : expf(wm[w] - mx);
        den += wl[w] * f[w];
    }
    for (int c = threadIdx.x; c < dp; c += blockDim.x) {
        float2 num = make_float2(0.f, 0.f);
        for (int w = 0; w < kWarps; ++w) {
            num.x += wacc[w][c].x * f[w];
            num.y += wacc[w][c].y * f[w];
        }
        orow[c] = make_float2(num.x / den, num.y / den);
    }
}

Status check_shape(const char* op, const PagedKvShape& sh) {
    if (sh.num_blocks < 1 || sh.block_tokens < 1 || sh.hkv < 1 || sh.d < 2 || sh.d % 2 != 0 ||
        sh.d > kMaxD) {
        return invalid_argument(std::string(op) +
                                ": bad pool shape (need num_blocks, block_tokens, hkv >= 1, d "
                                "even and in [2, 256]), got d = " +
                                std::to_string(sh.d));
    }
    return Status();
}

}  // namespace

Status paged_kv_write(const Stream& s, const PagedKvShape& shape, int64_t n, const int32_t* slots,
                      const Bf16* k, const Bf16* v, Bf16* k_pool, Bf16* v_pool) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_kv_write", shape));
    TANDEM_RETURN_IF_ERROR(detail::check_args("paged_kv_write", n, {slots, k, v, k_pool, v_pool}));
    if (n == 0) return Status();
    const int64_t row_pairs = int64_t{shape.hkv} * shape.d / 2;
    kv_write_kernel<<<blocks_for(n * row_pairs), 256, 0, raw(s)>>>(
        n, row_pairs, shape.block_tokens, slots, reinterpret_cast<const __nv_bfloat162*>(k),
        reinterpret_cast<const __nv_bfloat162*>(v), reinterpret_cast<__nv_bfloat162*>(k_pool),
        reinterpret_cast<__nv_bfloat162*>(v_pool));
    return launched("paged_kv_write");
}

Status paged_copy_blocks(const Stream& s, const PagedKvShape& shape, int layers, int64_t count,
                         const int32_t* pairs, Bf16* pool) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_copy_blocks", shape));
    TANDEM_RETURN_IF_ERROR(detail::check_args("paged_copy_blocks", count, {pairs, pool}));
    if (count == 0) return Status();
    if ((shape.block_elems() * 2) % 16 != 0 || layers < 1 || count > 65535 * 1024) {
        return invalid_argument(
            "paged_copy_blocks: a block must hold a multiple of 16 bytes, layers >= 1");
    }
    const int64_t block_vec = shape.block_elems() * 2 / 16;
    const int64_t pool_vec = shape.num_blocks * block_vec;  // one layer's K (or V) pool
    copy_blocks_kernel<<<dim3(static_cast<unsigned>(count), static_cast<unsigned>(2 * layers)), 256,
                         0, raw(s)>>>(pairs, block_vec, pool_vec, reinterpret_cast<int4*>(pool));
    return launched("paged_copy_blocks");
}

Status paged_decode_attention(const Stream& s, const PagedDecode& p, const Bf16* q, float* o) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_decode_attention", p.shape));
    TANDEM_RETURN_IF_ERROR(detail::check_args(
        "paged_decode_attention", p.n, {q, o, p.block_table, p.context_lens, p.k_pool, p.v_pool}));
    if (p.hq < 1 || p.hq % p.shape.hkv != 0 || p.table_width < 1 || !(p.scale > 0.0f)) {
        return invalid_argument(
            "paged_decode_attention: need hq a multiple of hkv, table_width >= 1, scale > 0");
    }
    if (p.n == 0) return Status();
    paged_decode_kernel<<<dim3(static_cast<unsigned>(p.n), static_cast<unsigned>(p.hq)),
                          kWarps * 32, 0, raw(s)>>>(p, reinterpret_cast<const __nv_bfloat162*>(q),
                                                    o);
    return launched("paged_decode_attention");
}

}  // namespace tandem::kernels::cuda
