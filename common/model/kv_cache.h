#pragma once

// A paged key/value cache. Keys and values live in fixed-size blocks of `block_tokens` positions
// (block b of layer l holds [block_tokens, kv_heads, head_dim] keys and as many values). A
// sequence is an ordered list of segments (block, first slot, count, first position); blocks are
// reference counted, so fork() lets the G samples of a GRPO group share the prompt's blocks: the
// prompt is prefilled once, shared blocks are read-only, and each sample appends into blocks of
// its own (no copy-on-write).
//
// Quantized KV (options.dtype other than f32, docs/kv-cache.md): new tokens are written to f32
// blocks; at the next append of a sequence, its blocks that the residual-window policy of
// kernels/kv_sequence.h allows are sealed: quantized (all layers at once) into an immutable
// KvSealedBlock, their f32 storage returned to the pool. Attention reads sealed blocks through
// kernels::kv_paged_attention_cpu. With compression on, a background KvCompressor requantizes
// sealed blocks that fell more than compress_after_tokens behind a sequence's newest token.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/config/kv_cache_spec.h"
#include "common/model/config.h"
#include "common/model/kv_compressor.h"
#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/kv_quant.h"
#include "kernels/kv_sequence.h"

namespace tandem::model {

struct KvCacheOptions {
    int block_tokens = 16;
    kernels::KvDType dtype = kernels::KvDType::kF32;
    bool kivi = false;                  // int4: KIVI instead of per token
    int64_t residual_tokens = 0;        // KIVI formats only
    int value_group = 32;               // KIVI value channels per scale (clamped to head_dim)
    int64_t compress_after_tokens = 0;  // 0: no background compression
    kernels::KvDType compress_dtype = kernels::KvDType::kInt2;

    // rollout.kv_cache: dtype, kivi, residual_tokens, group (block_tokens and value_group when
    // quantized; f32 keeps `block_tokens`), compression.
    static KvCacheOptions from_spec(const config::KvCacheSpec& spec, int block_tokens);
};

kernels::KvDType to_kernel_dtype(config::KvCacheDType dtype);
// The sealed page format and residual window of `options` for `config`'s kv heads, as the
// context-parallel shards store them (kernels::KvPagedSequence).
kernels::KvSequenceConfig kv_sequence_config(const ModelConfig& config,
                                             const KvCacheOptions& options);

// Memory held by the cache, counted once per block however many sequences share it.
struct KvCacheStats {
    int64_t bytes = 0;              // f32 blocks in use + sealed blocks
    int64_t tokens = 0;             // positions held by blocks in use
    int64_t f32_blocks = 0;         // blocks in use not sealed
    int64_t sealed_blocks[5] = {};  // by kernels::KvDType
    int64_t compressed = 0;         // blocks the background compressor swapped so far
    double bytes_per_token() const { return tokens ? static_cast<double>(bytes) / tokens : 0.0; }
};

// Owned by one generation loop; not thread-safe (the compressor's worker touches only sealed
// blocks' slots, see kv_compressor.h).
class PagedKvCache {
public:
    using SeqId = int32_t;
    struct Segment {
        int32_t block = 0;
        int32_t slot0 = 0;  // first slot of the block used by this segment
        int32_t count = 0;  // positions held
        int64_t pos0 = 0;   // sequence position of slot0
    };
    struct Slot {
        int32_t block;
        int32_t slot;
    };

    PagedKvCache(const ModelConfig& config, int block_tokens = 16);
    // Fails on a format the model's head shape does not allow (int4/int2 need whole bytes per
    // head, value_group dividing head_dim).
    static Result<PagedKvCache> create(const ModelConfig& config, const KvCacheOptions& options);
    PagedKvCache(PagedKvCache&&) noexcept;
    PagedKvCache& operator=(PagedKvCache&&) noexcept;
    ~PagedKvCache();

    int block_tokens() const { return block_tokens_; }
    const KvCacheOptions& options() const { return options_; }
    // A new, empty sequence.
    SeqId create();
    // A new sequence that shares every position of `parent` (both see the same blocks, which
    // become read-only; later appends go to fresh blocks).
    Result<SeqId> fork(SeqId parent);
    // Drops the sequence and its block references; blocks with no reference return to the pool.
    void release(SeqId seq);
    void release_all();

    int64_t length(SeqId seq) const { return seqs_[seq].length; }
    std::span<const Segment> segments(SeqId seq) const { return seqs_[seq].segments; }

    // Reserves the next `n` positions of `seq` and appends their (block, slot) to `out`. May grow
    // the pools, so pointers from key()/value() are valid only until the next call. Seals the
    // sequence's blocks the residual-window policy allows first (their rows are all written by
    // then: a forward writes every reserved slot before the next append).
    Status append(SeqId seq, int64_t n, std::vector<Slot>& out);

    // Start of layer `layer`'s keys (values) in `block`: [block_tokens, kv_heads, head_dim].
    // Only for blocks not sealed (every slot append() hands out is in one).
    float* key(int layer, int32_t block) {
        return k_[layer].data() + fslot_[block] * block_floats_;
    }
    float* value(int layer, int32_t block) {
        return v_[layer].data() + fslot_[block] * block_floats_;
    }
    const float* key(int layer, int32_t block) const {
        return k_[layer].data() + fslot_[block] * block_floats_;
    }
    const float* value(int layer, int32_t block) const {
        return v_[layer].data() + fslot_[block] * block_floats_;
    }
    bool sealed(int32_t block) const { return sealed_[block] != 0; }

    // Attention of queries q [p.tq, hq, d] against `seg` of layer `layer`, with p's query side,
    // masking and accumulate flag (p.tk and p.k_pos0 come from the segment). f32 blocks run the
    // fp32 kernel on the block in place; sealed ones kv_paged_attention_cpu.
    Status attend_segment(const kernels::AttentionParams& p, int layer, const Segment& seg,
                          const float* q, float* o, float* lse) const;

    // System-prompt cache support (common/model/kv_prefix_cache.h).
    // A pinned sequence survives release_all() (release() still drops it).
    void pin(SeqId seq, bool pinned) { seqs_[seq].pinned = pinned; }
    // Seals every block of `seq` (its last, partial block too) in `dtype` (kivi: int4 as KIVI),
    // whatever the residual window: for a finished prefix that is only read from now on.
    Status seal_sequence(SeqId seq, kernels::KvDType dtype, bool kivi);
    // Layer `layer`'s keys and values of every position of `seq`, dequantized: k, v
    // [length, kv_heads, head_dim].
    Status read_kv(SeqId seq, int layer, float* k, float* v) const;
    // Appends n positions to `seq` with the given keys and values, layer by layer:
    // k(l), v(l) point at [n, kv_heads, head_dim].
    Status append_kv(SeqId seq, int64_t n, const std::function<const float*(int)>& k,
                     const std::function<const float*(int)>& v);

    int64_t blocks_in_use() const { return in_use_; }
    int64_t blocks_allocated() const { return static_cast<int64_t>(refs_.size()); }
    int64_t live_sequences() const { return live_; }
    KvCacheStats stats() const;
    // Bytes one block takes in f32, and sealed in the live format.
    int64_t f32_block_bytes() const;
    int64_t sealed_block_bytes() const;
    // Bytes `block` takes now (sealed: its current format).
    int64_t block_bytes(int32_t block) const;
    // Waits for the background compressor to finish what it was given (tests, benchmarks).
    void drain_compressor();
    KvCompressor* compressor() { return compressor_.get(); }

private:
    struct Seq {
        bool live = false;
        bool pinned = false;
        int64_t length = 0;
        size_t sealed_upto = 0;  // segments before this index are sealed
        std::vector<Segment> segments;
    };
    int32_t allocate_block();
    void unref(int32_t block);
    Status seal_ready(Seq& s);
    Status seal(int32_t block, const kernels::KvPageFormat& format);
    void submit_old(const Seq& s);

    int block_tokens_;
    int64_t block_floats_;
    int layers_;
    KvCacheOptions options_;
    kernels::KvPageFormat sealed_format_;
    ModelConfig config_;
    std::vector<std::vector<float>> k_, v_;  // f32 storage, per layer, by f32 slot
    std::vector<int32_t> refs_;              // per block
    std::vector<int32_t> fill_;              // slots written so far, per block
    std::vector<int32_t> fslot_;             // per block: its f32 slot, -1 when sealed
    std::vector<char> sealed_;               // per block
    std::vector<char> submitted_;            // per block: given to the compressor
    std::deque<KvBlockSlot> slots_;          // per block: the sealed block (stable addresses)
    std::vector<int32_t> free_;
    std::vector<int32_t> free_fslots_;
    int32_t fslots_ = 0;
    std::vector<Seq> seqs_;
    std::vector<SeqId> free_seqs_;
    int64_t in_use_ = 0;
    int64_t live_ = 0;
    std::unique_ptr<KvCompressor> compressor_;  // null when compression is off
};

}  // namespace tandem::model
