#include "common/model/kv_cache.h"

#include <fmt/format.h>

namespace tandem::model {

PagedKvCache::PagedKvCache(const ModelConfig& config, int block_tokens)
    : block_tokens_(block_tokens < 1 ? 1 : block_tokens),
      block_floats_(static_cast<int64_t>(block_tokens_) * config.kv_dim()),
      layers_(config.num_layers),
      k_(static_cast<size_t>(config.num_layers)),
      v_(static_cast<size_t>(config.num_layers)) {}

PagedKvCache::SeqId PagedKvCache::create() {
    SeqId id;
    if (!free_seqs_.empty()) {
        id = free_seqs_.back();
        free_seqs_.pop_back();
    } else {
        id = static_cast<SeqId>(seqs_.size());
        seqs_.emplace_back();
    }
    Seq& s = seqs_[id];
    s.live = true;
    s.length = 0;
    s.segments.clear();
    ++live_;
    return id;
}

Result<PagedKvCache::SeqId> PagedKvCache::fork(SeqId parent) {
    if (parent < 0 || parent >= static_cast<SeqId>(seqs_.size()) || !seqs_[parent].live) {
        return invalid_argument(fmt::format("kv cache: fork of unknown sequence {}", parent));
    }
    const SeqId child = create();
    Seq& p = seqs_[parent];
    Seq& c = seqs_[child];
    c.length = p.length;
    c.segments = p.segments;
    for (const Segment& s : c.segments) ++refs_[s.block];
    return child;
}

void PagedKvCache::unref(int32_t block) {
    if (--refs_[block] == 0) {
        fill_[block] = 0;
        free_.push_back(block);
        --in_use_;
    }
}

void PagedKvCache::release(SeqId seq) {
    if (seq < 0 || seq >= static_cast<SeqId>(seqs_.size()) || !seqs_[seq].live) return;
    Seq& s = seqs_[seq];
    for (const Segment& seg : s.segments) unref(seg.block);
    s.segments.clear();
    s.length = 0;
    s.live = false;
    free_seqs_.push_back(seq);
    --live_;
}

void PagedKvCache::release_all() {
    for (SeqId i = 0; i < static_cast<SeqId>(seqs_.size()); ++i) release(i);
}

int32_t PagedKvCache::allocate_block() {
    int32_t b;
    if (!free_.empty()) {
        b = free_.back();
        free_.pop_back();
    } else {
        b = static_cast<int32_t>(refs_.size());
        refs_.push_back(0);
        fill_.push_back(0);
        for (int l = 0; l < layers_; ++l) {
            k_[l].resize(k_[l].size() + static_cast<size_t>(block_floats_));
            v_[l].resize(v_[l].size() + static_cast<size_t>(block_floats_));
        }
    }
    refs_[b] = 1;
    fill_[b] = 0;
    ++in_use_;
    return b;
}

void PagedKvCache::append(SeqId seq, int64_t n, std::vector<Slot>& out) {
    Seq& s = seqs_[seq];
    while (n > 0) {
        Segment* last = s.segments.empty() ? nullptr : &s.segments.back();
        // The last segment's block takes more only if this sequence alone holds it and nothing
        // was written after the segment.
        const bool extend = last && refs_[last->block] == 1 &&
                            fill_[last->block] == last->slot0 + last->count &&
                            fill_[last->block] < block_tokens_;
        if (!extend) {
            const int32_t b = allocate_block();
            s.segments.push_back({b, 0, 0, s.length});
            last = &s.segments.back();
        }
        const int32_t b = last->block;
        while (n > 0 && fill_[b] < block_tokens_) {
            out.push_back({b, fill_[b]});
            ++fill_[b];
            ++last->count;
            ++s.length;
            --n;
        }
    }
}

}  // namespace tandem::model
