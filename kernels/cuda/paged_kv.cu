// Paged KV cache kernels (kernels/cuda/paged_kv.h).
#include "kernels/cuda/attention_merge.h"
#include "kernels/cuda/kv_page.cuh"
#include "kernels/cuda/ops_common.cuh"
#include "kernels/cuda/paged_kv.h"

namespace tandem::kernels::cuda {

using detail::blocks_for;
using detail::launched;
using detail::raw;
using namespace detail;  // kernels/cuda/kv_page.cuh's page helpers

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

// One warp per (row, kv head): the row's keys, then its values, quantized per token into the
// row's page (shape.pages).
__global__ void kv_write_pages_kernel(int64_t n, PagedKvShape sh, const int32_t* slots,
                                      const Bf16* k, const Bf16* v, uint8_t* pages) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
    const int hkv = sh.hkv, d = sh.d;
    for (int64_t w = blockIdx.x * int64_t{blockDim.x >> 5} + (threadIdx.x >> 5); w < n * hkv;
         w += warps) {
        const int64_t i = w / hkv;
        const int h = static_cast<int>(w % hkv);
        const int32_t slot = slots[i];
        if (slot < 0) continue;
        uint8_t* page = pages + static_cast<int64_t>(slot / sh.block_tokens) * sh.pages.stride;
        const int64_t rh = static_cast<int64_t>(slot % sh.block_tokens) * hkv + h;
        const int64_t src = (i * hkv + h) * d;
        quantize_row(
            sh.pages, page, page + sh.pages.k_scales, rh, d, [&](int c) { return ld(k, src + c); },
            lane);
        quantize_row(
            sh.pages, page + sh.pages.v_codes, page + sh.pages.v_scales, rh, d,
            [&](int c) { return ld(v, src + c); }, lane);
    }
}

// (lo, hi) of count values of tile at start, start + stride, ... (one thread).
__device__ __forceinline__ void tile_range(const float* tile, int start, int count, int stride,
                                           float* lo, float* hi) {
    float a = tile[start], b = tile[start];
    for (int i = 1; i < count; ++i) {
        a = fminf(a, tile[start + i * stride]);
        b = fmaxf(b, tile[start + i * stride]);
    }
    *lo = a;
    *hi = b;
}

// grid (count, layers, hkv), 128 threads, bt * d floats of dynamic shared memory: one head of
// one layer's page of one block, keys then values: dequantized into the tile, then quantized
// into the target page as kv_quantize_page would (all bt rows).
__global__ void __launch_bounds__(128)
    requantize_kernel(PagedKvShape sh, const int32_t* blocks, const uint8_t* from,
                      PagedKvPages to_f, uint8_t* to) {
    extern __shared__ float tile[];
    const int bt = sh.block_tokens, d = sh.d, hkv = sh.hkv, h = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t page_index =
        static_cast<int64_t>(blockIdx.y) * sh.num_blocks + blocks[blockIdx.x];
    const uint8_t* src = from + page_index * sh.pages.stride;
    uint8_t* dst = to + page_index * to_f.stride;
    const int bits = page_bits(to_f.dtype), levels = (1 << bits) - 1;
    for (int pass = 0; pass < 2; ++pass) {
        const bool key = pass == 0;
        __syncthreads();  // the previous pass is done with the tile
        for (int i = threadIdx.x; i < bt * d; i += blockDim.x) {
            tile[i] = page_value(sh.pages, src, key, i / d, h, i % d, hkv, d);
        }
        __syncthreads();
        uint8_t* codes = dst + (key ? 0 : to_f.v_codes);
        auto* scales =
            reinterpret_cast<unsigned short*>(dst + (key ? to_f.k_scales : to_f.v_scales));
        if (!to_f.kivi) {
            for (int r = warp; r < bt; r += blockDim.x >> 5) {
                quantize_row(
                    to_f, codes, reinterpret_cast<uint8_t*>(scales),
                    static_cast<int64_t>(r) * hkv + h, d, [&](int c) { return tile[r * d + c]; },
                    lane);
            }
            continue;
        }
        // KIVI: keys per channel over the rows, values per row in groups of value_group
        // channels. Scales by one thread a group; each code byte by one thread, which finds its
        // groups' (m, s) again (the same deterministic computation).
        const int G = to_f.value_group, groups = d / G;
        const int ngroups = key ? d : bt * groups;
        for (int gi = threadIdx.x; gi < ngroups; gi += blockDim.x) {
            float lo, hi;
            int64_t si;
            if (key) {
                tile_range(tile, gi, bt, d, &lo, &hi);
                si = static_cast<int64_t>(h) * d + gi;
            } else {
                const int r = gi / groups, g = gi % groups;
                tile_range(tile, r * d + g * G, G, 1, &lo, &hi);
                si = (static_cast<int64_t>(r) * hkv + h) * groups + g;
            }
            unsigned short m16, s16;
            asym_params(lo, hi, levels, &m16, &s16);
            scales[2 * si] = m16;
            scales[2 * si + 1] = s16;
        }
        const int per_byte = 8 / bits, row_bytes = d * bits / 8;
        for (int i = threadIdx.x; i < bt * row_bytes; i += blockDim.x) {
            const int r = i / row_bytes, j = i % row_bytes;
            unsigned byte = 0;
            int cached = -1;
            float m = 0.0f, s = 1.0f;
            for (int q = 0; q < per_byte; ++q) {
                const int c = j * per_byte + q;
                const int group = key ? c : c / G;
                if (group != cached) {
                    float lo, hi;
                    if (key) {
                        tile_range(tile, c, bt, d, &lo, &hi);
                    } else {
                        tile_range(tile, r * d + group * G, G, 1, &lo, &hi);
                    }
                    unsigned short m16, s16;
                    asym_params(lo, hi, levels, &m16, &s16);
                    m = f16_value(m16);
                    s = f16_value(s16);
                    cached = group;
                }
                byte |= asym_code(tile[r * d + c], m, s, levels) << (q * bits);
            }
            codes[(static_cast<int64_t>(r) * hkv + h) * row_bytes + j] = static_cast<uint8_t>(byte);
        }
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

// One key/value row of a position as the decode kernel reads it: bf16 pools, or a page in the
// stored or the compressed format.
struct RowRef {
    const __nv_bfloat162* k2;  // bf16 pools: the row's kv head, channel pairs
    const __nv_bfloat162* v2;
    const PagedKvPages* f;  // pages: the block's format and page, row
    const uint8_t* page;
    int64_t row;
};

// grid (n, hq, splits), kWarps warps. Block (r, h, s) takes split s of row r's context
// (decode_split_range); warp w takes positions w, w + kWarps, ... of it with its own online
// softmax (lane owns channel pairs lane, lane + 32, ...); warps merge by log-sum-exp at the end.
// One split: o normalised; more: the split's partial (o normalised, lse) into its slot of
// p.partials.
template <bool kPages>
__global__ void __launch_bounds__(kWarps * 32)
    paged_decode_kernel(PagedDecode p, const __nv_bfloat162* q, float* o) {
    const int r = blockIdx.x, h = blockIdx.y, split = blockIdx.z;
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
    int64_t t0, t1;
    decode_split_range(p.context_lens[r], p.splits, split, &t0, &t1);
    const int32_t* table = p.block_table + static_cast<int64_t>(r) * p.table_width;
    const auto* kp = reinterpret_cast<const __nv_bfloat162*>(p.k_pool);
    const auto* vp = reinterpret_cast<const __nv_bfloat162*>(p.v_pool);
    auto load = [&](const RowRef& ref, bool key, int c2) -> float2 {
        if constexpr (kPages) {
            return make_float2(page_value(*ref.f, ref.page, key, ref.row, kvh, 2 * c2, hkv, d),
                               page_value(*ref.f, ref.page, key, ref.row, kvh, 2 * c2 + 1, hkv, d));
        } else {
            return __bfloat1622float2((key ? ref.k2 : ref.v2)[c2]);
        }
    };
    float m = -INFINITY, l = 0.0f;
    float2 acc[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] = make_float2(0.f, 0.f);
    for (int64_t t = t0 + warp; t < t1; t += kWarps) {
        const int32_t block = table[t / bt];
        RowRef ref{};
        if constexpr (kPages) {
            const bool cz = p.cpages && p.compressed[block] != 0;
            ref.f = cz ? &p.cformat : &p.shape.pages;
            ref.page = (cz ? p.cpages : p.pages) + static_cast<int64_t>(block) * ref.f->stride;
            ref.row = t % bt;
        } else {
            const int64_t slot = static_cast<int64_t>(block) * bt + t % bt;
            const int64_t base = (slot * hkv + kvh) * dp;
            ref.k2 = kp + base;
            ref.v2 = vp + base;
        }
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
            const int c = lane + 32 * i;
            if (c < dp) {
                const float2 kk = load(ref, true, c);
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
                const float2 vv = load(ref, false, c);
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
    const int64_t rh = static_cast<int64_t>(r) * p.hq + h;
    float* out = o;
    float* lse = nullptr;
    if (p.splits > 1) {
        const int64_t slot_stride = p.n * p.hq * (int64_t{d} + 1);
        out = p.partials + split * slot_stride;
        lse = out + p.n * p.hq * d + static_cast<int64_t>(h) * p.n + r;
    }
    float2* orow = reinterpret_cast<float2*>(out + rh * d);
    if (mx == -INFINITY) {  // an empty split (a row always sees its own key)
        for (int c = threadIdx.x; c < dp; c += blockDim.x) orow[c] = make_float2(0.f, 0.f);
        if (lse && threadIdx.x == 0) *lse = -INFINITY;
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
    if (lse && threadIdx.x == 0) *lse = mx + logf(den);
}

Status check_shape(const char* op, const PagedKvShape& sh) {
    if (sh.num_blocks < 1 || sh.block_tokens < 1 || sh.hkv < 1 || sh.d < 2 || sh.d % 2 != 0 ||
        sh.d > kMaxD) {
        return invalid_argument(std::string(op) +
                                ": bad pool shape (need num_blocks, block_tokens, hkv >= 1, d "
                                "even and in [2, 256]), got d = " +
                                std::to_string(sh.d));
    }
    if (sh.pages.paged() && (sh.pages.stride < sh.pages.page_bytes || sh.pages.stride % 16 != 0 ||
                             sh.pages.dtype > detail::kKvInt2)) {
        return invalid_argument(std::string(op) + ": bad page format (stride " +
                                std::to_string(sh.pages.stride) + " for pages of " +
                                std::to_string(sh.pages.page_bytes) + " bytes)");
    }
    return Status();
}

Status check_pages(const char* op, const PagedKvShape& sh, bool paged) {
    if (sh.pages.paged() != paged) {
        return invalid_argument(std::string(op) + (paged
                                                       ? ": the pool holds bf16 rows, not pages"
                                                       : ": the pool holds pages, not bf16 rows"));
    }
    return Status();
}

}  // namespace

Status paged_kv_write(const Stream& s, const PagedKvShape& shape, int64_t n, const int32_t* slots,
                      const Bf16* k, const Bf16* v, Bf16* k_pool, Bf16* v_pool) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_kv_write", shape));
    TANDEM_RETURN_IF_ERROR(check_pages("paged_kv_write", shape, false));
    TANDEM_RETURN_IF_ERROR(detail::check_args("paged_kv_write", n, {slots, k, v, k_pool, v_pool}));
    if (n == 0) return Status();
    const int64_t row_pairs = int64_t{shape.hkv} * shape.d / 2;
    kv_write_kernel<<<blocks_for(n * row_pairs), 256, 0, raw(s)>>>(
        n, row_pairs, shape.block_tokens, slots, reinterpret_cast<const __nv_bfloat162*>(k),
        reinterpret_cast<const __nv_bfloat162*>(v), reinterpret_cast<__nv_bfloat162*>(k_pool),
        reinterpret_cast<__nv_bfloat162*>(v_pool));
    return launched("paged_kv_write");
}

Status paged_kv_write_pages(const Stream& s, const PagedKvShape& shape, int64_t n,
                            const int32_t* slots, const Bf16* k, const Bf16* v, uint8_t* pages) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_kv_write_pages", shape));
    TANDEM_RETURN_IF_ERROR(check_pages("paged_kv_write_pages", shape, true));
    TANDEM_RETURN_IF_ERROR(detail::check_args("paged_kv_write_pages", n, {slots, k, v, pages}));
    if (shape.pages.kivi || shape.pages.dtype == detail::kKvInt2) {
        return invalid_argument(
            "paged_kv_write_pages: KIVI pages are not written row by row (paged_requantize "
            "makes them from full pages)");
    }
    if (n == 0) return Status();
    kv_write_pages_kernel<<<blocks_for(n * shape.hkv * 32), 256, 0, raw(s)>>>(n, shape, slots, k, v,
                                                                              pages);
    return launched("paged_kv_write_pages");
}

Status paged_copy_blocks(const Stream& s, const PagedKvShape& shape, int layers, int64_t count,
                         const int32_t* pairs, void* pool) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_copy_blocks", shape));
    TANDEM_RETURN_IF_ERROR(detail::check_args("paged_copy_blocks", count, {pairs, pool}));
    if (count == 0) return Status();
    const bool paged = shape.pages.paged();
    const int64_t block_bytes = paged ? shape.pages.stride : shape.block_elems() * 2;
    if (block_bytes % 16 != 0 || layers < 1 || count > 65535 * 1024) {
        return invalid_argument(
            "paged_copy_blocks: a block must hold a multiple of 16 bytes, layers >= 1");
    }
    const int64_t block_vec = block_bytes / 16;
    const int64_t pool_vec = shape.num_blocks * block_vec;  // one layer's K (or V) pool, or pages
    const unsigned units = static_cast<unsigned>(paged ? layers : 2 * layers);
    copy_blocks_kernel<<<dim3(static_cast<unsigned>(count), units), 256, 0, raw(s)>>>(
        pairs, block_vec, pool_vec, reinterpret_cast<int4*>(pool));
    return launched("paged_copy_blocks");
}

Status paged_requantize(const Stream& s, const PagedKvShape& shape, int layers, int64_t count,
                        const int32_t* blocks, const uint8_t* from, const PagedKvPages& to_pages,
                        uint8_t* to) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_requantize", shape));
    TANDEM_RETURN_IF_ERROR(check_pages("paged_requantize", shape, true));
    TANDEM_RETURN_IF_ERROR(detail::check_args("paged_requantize", count, {blocks, from, to}));
    PagedKvShape target = shape;
    target.pages = to_pages;
    TANDEM_RETURN_IF_ERROR(check_shape("paged_requantize (target)", target));
    if (!to_pages.paged() ||
        (to_pages.kivi && (to_pages.value_group < 1 || shape.d % to_pages.value_group != 0))) {
        return invalid_argument("paged_requantize: the target is not a page format");
    }
    const int64_t tile_bytes = int64_t{shape.block_tokens} * shape.d * 4;
    if (tile_bytes > 48 * 1024 || layers < 1 || count > 65535 * 1024 || shape.hkv > 65535) {
        return invalid_argument("paged_requantize: needs block_tokens * d <= 12288, layers >= 1");
    }
    if (count == 0) return Status();
    requantize_kernel<<<dim3(static_cast<unsigned>(count), static_cast<unsigned>(layers),
                             static_cast<unsigned>(shape.hkv)),
                        128, static_cast<size_t>(tile_bytes), raw(s)>>>(shape, blocks, from,
                                                                        to_pages, to);
    return launched("paged_requantize");
}

Status paged_decode_attention(const Stream& s, const PagedDecode& p, const Bf16* q, float* o) {
    TANDEM_RETURN_IF_ERROR(check_shape("paged_decode_attention", p.shape));
    TANDEM_RETURN_IF_ERROR(
        detail::check_args("paged_decode_attention", p.n, {q, o, p.block_table, p.context_lens}));
    const bool paged = p.shape.pages.paged();
    if (paged ? !p.pages : (!p.k_pool || !p.v_pool)) {
        return invalid_argument("paged_decode_attention: null pool");
    }
    if (p.hq < 1 || p.hq % p.shape.hkv != 0 || p.table_width < 1 || !(p.scale > 0.0f)) {
        return invalid_argument(
            "paged_decode_attention: need hq a multiple of hkv, table_width >= 1, scale > 0");
    }
    if (p.cpages && (!paged || !p.compressed || !p.cformat.paged())) {
        return invalid_argument(
            "paged_decode_attention: a compressed pool needs pages, its format and the flags");
    }
    if (p.splits < 1 || p.splits > 65535 || (p.splits > 1 && (!p.partials || !p.lse))) {
        return invalid_argument("paged_decode_attention: splits must be in [1, 65535] (" +
                                std::to_string(p.splits) +
                                "), more than one needs partials and lse");
    }
    if (p.n == 0) return Status();
    const dim3 grid(static_cast<unsigned>(p.n), static_cast<unsigned>(p.hq),
                    static_cast<unsigned>(p.splits));
    const auto* q2 = reinterpret_cast<const __nv_bfloat162*>(q);
    if (paged) {
        paged_decode_kernel<true><<<grid, kWarps * 32, 0, raw(s)>>>(p, q2, o);
    } else {
        paged_decode_kernel<false><<<grid, kWarps * 32, 0, raw(s)>>>(p, q2, o);
    }
    TANDEM_RETURN_IF_ERROR(launched("paged_decode_attention"));
    if (p.splits == 1) return Status();
    return merge_attention_table(s, p.partials, p.splits, p.n * p.hq * (int64_t{p.shape.d} + 1),
                                 p.n, p.hq, p.shape.d, o, p.lse);
}

}  // namespace tandem::kernels::cuda
