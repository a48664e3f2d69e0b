#pragma once

// Quantized KV pages of device generation, the host side (plain C++, every build, so CI tests
// it): which page formats a job's rollout.kv_cache gives the device cache and their bytes per
// block, which blocks background compression requantizes at a decode step (the CPU compressor's
// rule), and how many key splits decode attention runs over long contexts (flash-decoding).
// The device side is kernels/cuda/paged_kv.h; gpu::DeviceKvPool (device_kv.h) wires them.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/kv_cache_spec.h"
#include "common/gpu/paged_plan.h"
#include "common/model/config.h"
#include "common/model/kv_cache.h"
#include "common/status.h"
#include "kernels/kv_quant.h"

namespace tandem::gpu {

// How the device stores a generator's KV cache.
struct DeviceKvPlan {
    // Format every block is written in. dtype f32 (the default): bf16 rows in one pool per layer
    // and K/V (kernels/cuda/paged_kv.h), no pages. Otherwise pages of the CPU engine's format
    // (kernels/kv_quant.h) with page_tokens = block_tokens, written row by row: bf16, int8 or
    // int4 per token (the CPU cache's sealed pages of the same rows, byte for byte); for the KIVI
    // dtypes (int2, int4 with kivi) bf16 pages, the residual window (exact for the device's bf16
    // keys and values, where the CPU keeps f32).
    kernels::KvPageFormat stored;
    // The second pool: a full block with at least compress_after_tokens positions of its row
    // written after it is requantized into `compressed` once, and read there. KIVI dtypes: their
    // format, after residual_tokens (the CPU cache's sealing, kv_page_sealable); per-token dtypes
    // with rollout.kv_cache.compress_after_tokens: compression's target (the CPU compressor's
    // rule: more than compress_after_tokens behind the newest token).
    bool compress = false;
    int64_t compress_after_tokens = 0;
    kernels::KvPageFormat compressed;
    bool kivi_window = false;  // KIVI: `compressed` is the dtype asked for, `stored` its window
    int block_tokens = 16;
    bool paged() const { return stored.dtype != kernels::KvDType::kF32; }
    bool compresses() const { return compress; }
};

// Why the device cache cannot hold `spec` ("" when it can): compression to f32, and KIVI dtypes
// compressed to another format (the KIVI pages are already the second pool).
std::string device_kv_unsupported(const config::KvCacheSpec& spec);

// The plan for `config` from rollout.kv_cache as model::KvCacheOptions::from_spec reads it
// (quantized: block_tokens = the spec's group, as on the CPU; f32: `options.block_tokens`).
// Errors name the job and the field: what device_kv_unsupported names, a page format the
// model's head shape does not allow.
Result<DeviceKvPlan> device_kv_plan(const model::ModelConfig& config,
                                    const model::KvCacheOptions& options, std::string_view job);

// Bytes of one block, every layer's keys and values, in `format` on the device: f32 means the
// bf16 rows (2 * layers * block_tokens * hkv * d * 2); pages take kv_page_bytes rounded up to
// 16 bytes (the copy kernel's unit) a layer.
int64_t device_kv_block_bytes(const kernels::KvPageFormat& format, int layers);
// kv_page_bytes rounded up to 16.
int64_t device_kv_page_stride(const kernels::KvPageFormat& format);

// Which blocks go to the second pool: model::PagedKvCache submits a sealed block to its
// compressor once its last position is more than compress_after_tokens behind its sequence's
// newest token, and seals a full KIVI block once residual_tokens follow it. On the device every
// full block is sealed (rows are quantized as they are written), so at a decode step a row that
// has written W positions before this step (context W + 1) has the block at table index i due
// when (i + 1) * block_tokens <= W - after_tokens, both rules. A block is requantized once,
// until it is written again from its first row (a freed block handed out anew). Owned by one
// generator; not thread-safe.
class KvCompressionSchedule {
public:
    // after_tokens < 0: off (nothing is ever due).
    KvCompressionSchedule(int block_tokens, int64_t after_tokens)
        : bt_(block_tokens), after_(after_tokens) {}

    // `blocks` blocks; all uncompressed when `reset` (a new, empty pool), else the existing
    // blocks keep their state.
    void resize(int64_t blocks, bool reset);
    // Keys and values were written to these slots (block * block_tokens + offset; negative:
    // none): a block written at its first row holds a new sequence's rows, uncompressed.
    void written(std::span<const int32_t> slots);
    // Destinations of copied block pairs (source, destination) hold a copy of an uncompressed
    // (partial) block.
    void copied(std::span<const int32_t> pairs);
    // The blocks due at a decode step of the first `live` rows of `step` (pack_step's layout),
    // ascending and each once; marks them compressed.
    std::vector<int32_t> due(const StepLayout& layout, int64_t live, std::span<const int32_t> step);

    // Per block: 1 when its pages are in the compressed pool (what the decode kernel reads).
    std::span<const int32_t> flags() const { return flags_; }
    // Whether flags() changed since the last call (then the device copy is stale).
    bool take_changed();
    int64_t compressions() const { return compressions_; }  // blocks requantized so far

private:
    int bt_;
    int64_t after_;
    std::vector<int32_t> flags_;
    bool changed_ = false;
    int64_t compressions_ = 0;
};

// Key splits of decode attention for `rows` rows of `hq` query heads over block tables holding
// up to `max_context` positions, on `sm_count` SMs. forced > 0: that many (tests; at most
// kMaxDecodeSplits). Otherwise 1 when rows * hq blocks fill the SMs once already; else enough
// splits for about two blocks per SM, each split at least kMinSplitTokens of the table's
// capacity. A pure function of its arguments (captured decode steps stay valid).
constexpr int kMaxDecodeSplits = 64;
constexpr int64_t kMinSplitTokens = 256;
int decode_splits(int64_t rows, int hq, int64_t max_context, int sm_count, int forced);

}  // namespace tandem::gpu
