#include "common/gpu/paged_plan.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace tandem::gpu {

BlockPool::BlockPool(int64_t capacity)
    : refs_(static_cast<size_t>(std::max<int64_t>(1, capacity))) {
    refs_[0] = 1;  // the padding block is never handed out
    for (int64_t b = capacity - 1; b >= 1; --b) free_.push_back(static_cast<int32_t>(b));
}

Result<int32_t> BlockPool::allocate() {
    if (free_.empty()) {
        return unavailable(fmt::format(
            "device KV cache: all {} blocks in use (the pool is sized by worst_case_blocks)",
            capacity() - 1));
    }
    const int32_t b = free_.back();
    free_.pop_back();
    refs_[static_cast<size_t>(b)] = 1;
    peak_ = std::max(peak_, in_use());
    return b;
}

void BlockPool::retain(int32_t block) { ++refs_[static_cast<size_t>(block)]; }

void BlockPool::release(int32_t block) {
    if (block <= 0) return;
    if (--refs_[static_cast<size_t>(block)] == 0) free_.push_back(block);
}

Result<PagedSeq> PagedSequences::create(int64_t tokens, std::vector<int32_t>& slots) {
    PagedSeq seq;
    for (int64_t i = 0; i < tokens; ++i) {
        auto slot = append(seq);
        if (!slot.ok()) {
            release(seq);
            return slot.status();
        }
        slots.push_back(slot.value());
    }
    return seq;
}

Result<PagedSeq> PagedSequences::fork(const PagedSeq& parent, std::vector<int32_t>& copies) {
    PagedSeq child;
    child.tokens = parent.tokens;
    const int64_t full = parent.tokens / bt_;
    for (int64_t i = 0; i < full; ++i) {
        pool_.retain(parent.blocks[static_cast<size_t>(i)]);
        child.blocks.push_back(parent.blocks[static_cast<size_t>(i)]);
    }
    if (parent.tokens % bt_ != 0) {
        auto b = pool_.allocate();
        if (!b.ok()) {
            release(child);
            return b.status();
        }
        copies.push_back(parent.blocks[static_cast<size_t>(full)]);
        copies.push_back(b.value());
        child.blocks.push_back(b.value());
    }
    return child;
}

Result<int32_t> PagedSequences::append(PagedSeq& seq) {
    const int64_t off = seq.tokens % bt_;
    if (off == 0) {
        TANDEM_ASSIGN_OR_RETURN(int32_t b, pool_.allocate());
        seq.blocks.push_back(b);
    }
    const int32_t slot = seq.blocks.back() * bt_ + static_cast<int32_t>(off);
    ++seq.tokens;
    return slot;
}

void PagedSequences::release(PagedSeq& seq) {
    for (const int32_t b : seq.blocks) pool_.release(b);
    seq.blocks.clear();
    seq.tokens = 0;
}

int64_t worst_case_blocks(std::span<const std::vector<int32_t>> prompts, int group_size,
                          int max_new_tokens, int block_tokens, std::span<const int64_t> shared) {
    int64_t blocks = 1;  // padding
    for (size_t i = 0; i < prompts.size(); ++i) {
        const int64_t len = static_cast<int64_t>(prompts[i].size());
        const int64_t full = len / block_tokens;
        const int64_t held = shared.empty() ? 0 : shared[i] / block_tokens;  // the prefix's
        const int64_t prompt_blocks = (len + block_tokens - 1) / block_tokens - held;
        const int64_t per_sample = (len + max_new_tokens + block_tokens - 1) / block_tokens - full;
        blocks += prompt_blocks + int64_t{group_size} * per_sample;
    }
    return blocks;
}

int64_t decode_bucket(int64_t active, int64_t max_rows) {
    int64_t b = 1;
    while (b < active) b <<= 1;
    return std::min(b, max_rows);
}

Status pack_step(const StepLayout& L, int64_t rows, std::span<const StepRow> live,
                 std::vector<int32_t>& out) {
    if (rows > L.max_rows || static_cast<int64_t>(live.size()) > rows) {
        return invalid_argument(fmt::format(
            "device decode step: {} live rows in a bucket of {} (layout for at most {})",
            live.size(), rows, L.max_rows));
    }
    out.assign(static_cast<size_t>(L.size()), 0);
    for (int64_t r = 0; r < rows; ++r) {
        int32_t* table = out.data() + L.table() + r * L.width;
        uint64_t stream = 0;
        if (r < static_cast<int64_t>(live.size())) {
            const StepRow& row = live[static_cast<size_t>(r)];
            const PagedSeq& seq = *row.seq;
            if (static_cast<int64_t>(seq.blocks.size()) > L.width) {
                return invalid_argument(fmt::format(
                    "device decode step: row {} holds {} blocks, more than the table width {}", r,
                    seq.blocks.size(), L.width));
            }
            out[L.tokens() + r] = row.token;
            out[L.positions() + r] = static_cast<int32_t>(seq.tokens - 1);
            out[L.slots() + r] = row.slot;
            out[L.context_lens() + r] = static_cast<int32_t>(seq.tokens);
            out[L.steps() + r] = row.step;
            std::copy(seq.blocks.begin(), seq.blocks.end(), table);
            stream = row.stream;
        } else {
            out[L.context_lens() + r] = 1;  // attends its own key in block 0
        }
        std::memcpy(out.data() + L.streams() + 2 * r, &stream, sizeof stream);
    }
    return Status();
}

}  // namespace tandem::gpu
