#pragma once

// The host side of device generation's paged KV cache (kernels/cuda/paged_kv.h): which block
// holds which positions, block reference counts, and the per-step inputs a decode step reads.
// Plain C++ without CUDA, so CI tests it without a device (tests/unit/gpu).
//
// A prompt is prefilled once into its own blocks; fork() gives each of its G samples a block
// table that shares the prompt's full blocks (reference counted) and a private copy of its
// partial last block (the device copies it: the fork returns the pair), so samples append into
// blocks of their own and shared blocks stay read-only. Block 0 is reserved: padding rows of a
// decode bucket write their key/value there and attend to it alone.

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"

namespace tandem::gpu {

// Reference-counted blocks 1 .. capacity - 1 (block 0 is the padding block). Owned by one
// generation loop; not thread-safe.
class BlockPool {
public:
    explicit BlockPool(int64_t capacity = 1);
    int64_t capacity() const { return static_cast<int64_t>(refs_.size()); }
    int64_t in_use() const { return capacity() - 1 - static_cast<int64_t>(free_.size()); }
    int64_t peak() const { return peak_; }
    void reset_peak() { peak_ = in_use(); }
    // A free block with one reference; unavailable when none is left.
    Result<int32_t> allocate();
    void retain(int32_t block);
    void release(int32_t block);
    int32_t refs(int32_t block) const { return refs_[static_cast<size_t>(block)]; }

private:
    std::vector<int32_t> refs_;
    std::vector<int32_t> free_;  // a stack; lowest ids on top
    int64_t peak_ = 0;
};

// One sequence's blocks in position order and its length.
struct PagedSeq {
    std::vector<int32_t> blocks;
    int64_t tokens = 0;
};

// Sequences over a BlockPool. Not thread-safe.
class PagedSequences {
public:
    PagedSequences(int block_tokens, int64_t capacity) : bt_(block_tokens), pool_(capacity) {}
    int block_tokens() const { return bt_; }
    const BlockPool& pool() const { return pool_; }

    // A sequence holding `tokens` positions in fresh blocks; slots (block * bt + offset, one per
    // position) are appended to `slots`.
    Result<PagedSeq> create(int64_t tokens, std::vector<int32_t>& slots);
    // A sample continuing `parent`: shares its full blocks; its partial last block (if any) is a
    // fresh block whose (source, destination) pair is appended to `copies` for the device copy.
    Result<PagedSeq> fork(const PagedSeq& parent, std::vector<int32_t>& copies);
    // The slot of position seq.tokens (allocating a block at a block boundary); seq.tokens + 1.
    Result<int32_t> append(PagedSeq& seq);
    void release(PagedSeq& seq);
    void reset_peak() { pool_.reset_peak(); }

private:
    int bt_;
    BlockPool pool_;
};

// Blocks a generate call needs at most (padding block included): each prompt's blocks while its
// samples fork, plus each sample's own blocks for max_new_tokens more positions. shared[p]
// (empty: all 0) are the first tokens of prompt p held by a cached prefix's blocks: the prompt
// forks those (its full blocks shared, the partial last one copied), so it does not count them.
int64_t worst_case_blocks(std::span<const std::vector<int32_t>> prompts, int group_size,
                          int max_new_tokens, int block_tokens,
                          std::span<const int64_t> shared = {});

// The decode batch size for `active` rows: the smallest power of two >= active, capped by
// max_rows (itself when not a power of two). Each size is one CUDA graph.
int64_t decode_bucket(int64_t active, int64_t max_rows);

// The per-step inputs of a decode step for `rows` rows (a bucket), padded rows included, in one
// int32 array with a fixed layout for at most `max_rows` rows (so one captured graph reads the
// same addresses every step): tokens, positions, slots, context lengths, steps, stream ids (two
// int32 a row: low, high; 8-byte aligned), then the block table [rows, width].
struct StepLayout {
    int64_t max_rows = 0;
    int width = 0;  // block table width
    int64_t tokens() const { return 0; }
    int64_t positions() const { return max_rows; }
    int64_t slots() const { return 2 * max_rows; }
    int64_t context_lens() const { return 3 * max_rows; }
    int64_t steps() const { return 4 * max_rows; }
    int64_t streams() const { return 6 * max_rows; }  // uint64 [max_rows] at an even offset
    int64_t table() const { return 8 * max_rows; }
    int64_t size() const { return table() + max_rows * width; }
};

// A live sample's decode state for one step: its input token (the one sampled last), its pages
// (already holding the slot of this step's position), random stream and step count.
struct StepRow {
    int32_t token = 0;
    const PagedSeq* seq = nullptr;
    int32_t slot = 0;  // where this step's key/value go
    uint64_t stream = 0;
    int32_t step = 0;
};
// Fills `out` (layout.size() values) for `rows` rows: live[i] for i < live.size(), padding rows
// (token 0, position 0, slot 0 in block 0, context 1) after. Fails naming the row when a
// sequence holds more blocks than the table is wide.
Status pack_step(const StepLayout& layout, int64_t rows, std::span<const StepRow> live,
                 std::vector<int32_t>& out);

}  // namespace tandem::gpu
