#pragma once

// A paged KV cache in device memory for generation (bf16 keys and values, fp32 accumulation):
// the kernels that write new keys/values into their pages, copy pages (a forked sample's own copy
// of its prompt's partial last page) and attend one new query token per sequence over its pages.
// The host side (which page holds what, refcounts, block tables) is common/gpu/paged_plan.h.
//
// Layout: one pool per layer and per K/V, each [num_blocks, block_tokens, hkv, d] bf16, all
// layers in one allocation: layer l's keys start at pool + (2 l) * block_elems * num_blocks, its
// values at pool + (2 l + 1) * block_elems * num_blocks, block_elems = block_tokens * hkv * d.
// A slot is block * block_tokens + offset. A block table is int32 [rows, width]: row r's
// position i lives in block table[r * width + i / block_tokens] at offset i % block_tokens.
// Never run on a GPU yet.

#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

struct PagedKvShape {
    int64_t num_blocks = 0;
    int block_tokens = 16;
    int hkv = 0;
    int d = 0;  // even, <= 256
    int64_t block_elems() const { return int64_t{block_tokens} * hkv * d; }
    int64_t layer_elems() const { return 2 * block_elems() * num_blocks; }  // K and V of a layer
};

// k_pool[slot] = k[i], v_pool[slot] = v[i] for i < n, slot = slots[i] (rows [n, hkv * d] bf16;
// k_pool / v_pool one layer's pools). A negative slot skips the row.
Status paged_kv_write(const Stream& s, const PagedKvShape& shape, int64_t n, const int32_t* slots,
                      const Bf16* k, const Bf16* v, Bf16* k_pool, Bf16* v_pool);

// For each of `count` pairs (pairs[2 i] = source block, pairs[2 i + 1] = destination block):
// copies the block's keys and values in every one of `layers` layers of `pool`.
Status paged_copy_blocks(const Stream& s, const PagedKvShape& shape, int layers, int64_t count,
                         const int32_t* pairs, Bf16* pool);

// One query token per row: q [n, hq, d] bf16 at the row's last position, which sees the keys of
// positions 0 .. context_lens[r] - 1 (its own key already written). o [n, hq, d] fp32; query head
// h reads kv head h / (hq / hkv); scores scale * <q, k>, softmax in fp32. context_lens >= 1.
struct PagedDecode {
    PagedKvShape shape;
    int64_t n = 0;
    int hq = 0;
    float scale = 0;
    const int32_t* block_table = nullptr;  // [n, table_width]
    int table_width = 0;
    const int32_t* context_lens = nullptr;  // [n]
    const Bf16* k_pool = nullptr;           // one layer
    const Bf16* v_pool = nullptr;
};
Status paged_decode_attention(const Stream& s, const PagedDecode& p, const Bf16* q, float* o);

}  // namespace tandem::kernels::cuda
