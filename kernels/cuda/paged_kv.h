#pragma once

// A paged KV cache in device memory for generation (bf16 or quantized keys and values, fp32
// accumulation): the kernels that write new keys/values into their pages, copy pages (a forked
// sample's own copy of its prompt's partial last page), requantize pages (background
// compression) and attend one new query token per sequence over its pages, split over the
// context (flash-decoding) when it is long. The host side (which page holds what, refcounts,
// block tables) is common/gpu/paged_plan.h; formats, compression schedule and split choice
// common/gpu/kv_pages.h.
//
// bf16 layout (PagedKvShape::pages.dtype < 0): one pool per layer and per K/V, each
// [num_blocks, block_tokens, hkv, d] bf16, all layers in one allocation: layer l's keys start at
// pool + (2 l) * block_elems * num_blocks, its values at pool + (2 l + 1) * block_elems *
// num_blocks, block_elems = block_tokens * hkv * d.
// Page layout (pages.dtype >= 0): block b of layer l is one page of the CPU engine's format
// (kernels/kv_quant.h, byte for byte: K codes | V codes | K scales | V scales, page_tokens =
// block_tokens) at pool + (l * num_blocks + b) * pages.stride bytes. Writes quantize each row on
// its own, so only per-token formats (bf16, int8, int4 per token) are written; KIVI formats are
// produced by paged_requantize from full pages.
// A slot is block * block_tokens + offset. A block table is int32 [rows, width]: row r's
// position i lives in block table[r * width + i / block_tokens] at offset i % block_tokens.
// Never run on a GPU yet.

#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

#ifndef TANDEM_HD  // as kernels/cuda/philox.h defines it
#if defined(__CUDACC__)
#define TANDEM_HD __host__ __device__ __forceinline__
#else
#define TANDEM_HD inline
#endif
#endif

namespace tandem::kernels::cuda {

// A page format as the kernels read it: kernels/kv_quant.h's KvPageFormat reduced to its codes
// and section offsets (filled by paged_kv_pages() in kernels/cuda/kv_attention.h, which checks
// them against kv_page_bytes).
struct PagedKvPages {
    int32_t dtype = -1;  // KvDType value (0 f32 .. 4 int2); -1: the bf16 pool, no pages
    int32_t kivi = 0;    // keys per channel over the page, values per token in value_group channels
    int32_t value_group = 0;
    int64_t page_bytes = 0;  // kv_page_bytes
    int64_t stride = 0;      // bytes between pages: page_bytes rounded up to 16
    int64_t v_codes = 0;     // byte offsets of the sections (key codes at 0)
    int64_t k_scales = 0;
    int64_t v_scales = 0;
    bool paged() const { return dtype >= 0; }
};

struct PagedKvShape {
    int64_t num_blocks = 0;
    int block_tokens = 16;
    int hkv = 0;
    int d = 0;           // even, <= 256
    PagedKvPages pages;  // dtype < 0: bf16 pools
    int64_t block_elems() const { return int64_t{block_tokens} * hkv * d; }
    int64_t layer_elems() const { return 2 * block_elems() * num_blocks; }  // K and V of a layer
    // Bytes of one layer's keys and values: the bf16 pools or the pages.
    int64_t layer_bytes() const {
        return pages.paged() ? num_blocks * pages.stride : layer_elems() * 2;
    }
};

// Split s of `splits` of a context of `len` positions: [*begin, *end), chunks of
// ceil(len / splits) positions in order (the last ones may be empty). The device kernel and the
// host emulation (tests) both use it.
TANDEM_HD void decode_split_range(int64_t len, int splits, int s, int64_t* begin, int64_t* end) {
    const int64_t chunk = (len + splits - 1) / splits;
    *begin = chunk * s < len ? chunk * s : len;
    *end = *begin + chunk < len ? *begin + chunk : len;
}

// k_pool[slot] = k[i], v_pool[slot] = v[i] for i < n, slot = slots[i] (rows [n, hkv * d] bf16;
// k_pool / v_pool one layer's pools). A negative slot skips the row.
Status paged_kv_write(const Stream& s, const PagedKvShape& shape, int64_t n, const int32_t* slots,
                      const Bf16* k, const Bf16* v, Bf16* k_pool, Bf16* v_pool);
// The same into one layer's pages (shape.pages: bf16, int8 or int4 per token): row i of k and v
// quantized into row slot % block_tokens of page slot / block_tokens, its scales as
// kv_quantize_page computes them (bit for bit: f16 scales rounded outward, codes rounded to
// nearest even). Non-finite values are not detected on the device.
Status paged_kv_write_pages(const Stream& s, const PagedKvShape& shape, int64_t n,
                            const int32_t* slots, const Bf16* k, const Bf16* v, uint8_t* pages);

// For each of `count` pairs (pairs[2 i] = source block, pairs[2 i + 1] = destination block):
// copies the block's keys and values (or its page) in every one of `layers` layers of `pool`.
Status paged_copy_blocks(const Stream& s, const PagedKvShape& shape, int layers, int64_t count,
                         const int32_t* pairs, void* pool);

// Background compression: for each of `count` blocks, every layer's page of `from` (the pool
// laid out by shape.pages) dequantized and quantized again into the same block of `to` (laid out
// by `to_pages`, same num_blocks), as model::requantize_block does on the CPU (all rows of the
// page; KIVI keys per channel over them). block_tokens * d <= 12288.
Status paged_requantize(const Stream& s, const PagedKvShape& shape, int layers, int64_t count,
                        const int32_t* blocks, const uint8_t* from, const PagedKvPages& to_pages,
                        uint8_t* to);

// One query token per row: q [n, hq, d] bf16 at the row's last position, which sees the keys of
// positions 0 .. context_lens[r] - 1 (its own key already written). o [n, hq, d] fp32; query head
// h reads kv head h / (hq / hkv); scores scale * <q, k>, softmax in fp32. context_lens >= 1.
// Pages (shape.pages.paged()): block b is read from `cpages` in `cformat` when compressed[b] != 0,
// else from `pages`. splits > 1: split s of each row's context (decode_split_range) is one block
// that writes its partial into slot s of `partials` ([o [n, hq, d] | lse [hq, n]] per slot,
// slot_stride = n * hq * (d + 1) floats), merged into o by merge_attention_table (its lse into
// `lse` [hq, n]); deterministic for a given split count.
struct PagedDecode {
    PagedKvShape shape;
    int64_t n = 0;
    int hq = 0;
    float scale = 0;
    const int32_t* block_table = nullptr;  // [n, table_width]
    int table_width = 0;
    const int32_t* context_lens = nullptr;  // [n]
    const Bf16* k_pool = nullptr;           // one layer (bf16 pools)
    const Bf16* v_pool = nullptr;
    const uint8_t* pages = nullptr;       // one layer (pages)
    const uint8_t* cpages = nullptr;      // one layer of the compressed pool, or null
    PagedKvPages cformat;                 // its format
    const int32_t* compressed = nullptr;  // [num_blocks] when cpages is set
    int splits = 1;
    float* partials = nullptr;  // [splits * n * hq * (d + 1)] when splits > 1
    float* lse = nullptr;       // [hq, n] when splits > 1
};
Status paged_decode_attention(const Stream& s, const PagedDecode& p, const Bf16* q, float* o);

}  // namespace tandem::kernels::cuda
