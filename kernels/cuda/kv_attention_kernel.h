#pragma once

// The device side of kv_paged_decode_cuda (kernels/cuda/kv_attention.h): the page table the
// kernel reads and its launcher. Plain C++17 (nvcc builds without C++20): no std::span and no
// kernels/kv_quant.h here; kv_attention.cc fills the table from KvPageRef and KvPageFormat.

#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda::detail {

// KvDType values as the kernel sees them (checked against the enum in kv_attention.cc).
enum KvCode : int32_t { kKvF32 = 0, kKvBF16 = 1, kKvInt8 = 2, kKvInt4 = 3, kKvInt2 = 4 };

// One page (64 bytes): rows [row0, row0 + rows) of the page at `page` (device memory), the
// first at position pos0; byte offsets of its sections (key codes start at 0).
struct KvPageDesc {
    const uint8_t* page;
    int64_t pos0;
    int64_t v_codes;
    int64_t k_scales;
    int64_t v_scales;
    int32_t row0;
    int32_t rows;
    int32_t dtype;  // KvCode
    int32_t kivi;   // keys per channel over the page, values per token in value_group channels
    int32_t value_group;
    int32_t pad;
};
static_assert(sizeof(KvPageDesc) == 64, "KvPageDesc is 64 bytes");

constexpr int kKvMaxD = 256;

// table: device memory holding the page descriptors of all sequences, then seq_begin [B + 1]
// (int64, index of a sequence's first descriptor) at byte offset begin_offset, then q_pos [B].
// grid (B, hq): one block per sequence and query head.
Status launch_kv_decode(const Stream& stream, const uint8_t* table, int64_t begin_offset, int64_t B,
                        int hq, int hkv, int d, float scale, const float* q, float* o, float* lse);

}  // namespace tandem::kernels::cuda::detail
