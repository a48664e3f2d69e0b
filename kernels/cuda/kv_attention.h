#pragma once

// Decode attention over quantized KV pages on the GPU: the device mirror of
// kv_paged_attention_cpu (kernels/kv_quant.h) for one query token per sequence. The pages are the
// CPU layout byte for byte (copied to the device as they are), in any mix of formats: int8 /
// int4 per token, int4 / int2 KIVI, bf16, and the f32 pages of the residual window. Codes are
// dequantized in the inner loop (no fp32 tile): for every key row a warp dequantizes the row's
// channels, takes the dot product with the query and folds the row into an online softmax; the
// values are dequantized the same way into the warp's accumulator. Never run on a GPU yet.

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "kernels/cuda/paged_kv.h"
#include "kernels/cuda/runtime.h"
#include "kernels/kv_quant.h"

namespace tandem::kernels::cuda {

// `format` as the paged kernels read it (kernels/cuda/paged_kv.h): codes, section offsets
// (checked against kv_page_bytes), stride = page bytes rounded up to 16. Fails naming the format
// when validate() does.
Result<PagedKvPages> paged_kv_pages(const KvPageFormat& format);

// One sequence of a decode batch: its pages in position order, as KvPagedSequence::pages()
// lists them but with `page` pointing at the page's bytes in device memory (`format` stays a host
// pointer), and the position of its one query token. Keys after q_pos are masked (causal).
struct KvDecodeSequence {
    std::vector<KvPageRef> pages;
    int64_t q_pos = 0;
};

// q [B, hq, d] fp32, o [B, hq, d] fp32, lse [B, hq] fp32 (natural log of the softmax
// denominator), all device pointers, B = seqs.size(). Query head h reads kv head h / (hq / hkv);
// scores are scale * <q, k>. A sequence with no visible key gets o = 0, lse = -inf. Every page's
// format must have hkv heads of d channels (d <= 256). Asynchronous on `stream`: the page table
// is staged through `alloc` (released in stream order).
Status kv_paged_decode_cuda(const Stream& stream, DeviceAllocator& alloc, int hq, int hkv, int d,
                            float scale, std::span<const KvDecodeSequence> seqs, const float* q,
                            float* o, float* lse);

}  // namespace tandem::kernels::cuda
