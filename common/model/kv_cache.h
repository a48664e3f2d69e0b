#pragma once

// A paged key/value cache. Keys and values live in fixed-size blocks of `block_tokens` positions,
// one pool per layer (block b of layer l holds [block_tokens, kv_heads, head_dim] keys and as
// many values). A sequence is an ordered list of segments (block, first slot, count, first
// position); blocks are reference counted, so fork() lets the G samples of a GRPO group share the
// prompt's blocks: the prompt is prefilled once, shared blocks are read-only, and each sample
// appends into blocks of its own (no copy-on-write).

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/config.h"
#include "common/status.h"

namespace tandem::model {

// Owned by one generation loop; not thread-safe.
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

    int block_tokens() const { return block_tokens_; }
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
    // the pools, so pointers from key()/value() are valid only until the next call.
    void append(SeqId seq, int64_t n, std::vector<Slot>& out);

    // Start of layer `layer`'s keys (values) in `block`: [block_tokens, kv_heads, head_dim].
    float* key(int layer, int32_t block) { return k_[layer].data() + block * block_floats_; }
    float* value(int layer, int32_t block) { return v_[layer].data() + block * block_floats_; }
    const float* key(int layer, int32_t block) const {
        return k_[layer].data() + block * block_floats_;
    }
    const float* value(int layer, int32_t block) const {
        return v_[layer].data() + block * block_floats_;
    }

    int64_t blocks_in_use() const { return in_use_; }
    int64_t blocks_allocated() const { return static_cast<int64_t>(refs_.size()); }
    int64_t live_sequences() const { return live_; }

private:
    struct Seq {
        bool live = false;
        int64_t length = 0;
        std::vector<Segment> segments;
    };
    int32_t allocate_block();
    void unref(int32_t block);

    int block_tokens_;
    int64_t block_floats_;
    int layers_;
    std::vector<std::vector<float>> k_, v_;
    std::vector<int32_t> refs_;  // per block
    std::vector<int32_t> fill_;  // slots written so far, per block
    std::vector<int32_t> free_;
    std::vector<Seq> seqs_;
    std::vector<SeqId> free_seqs_;
    int64_t in_use_ = 0;
    int64_t live_ = 0;
};

}  // namespace tandem::model
