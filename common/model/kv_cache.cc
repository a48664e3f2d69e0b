#include "common/model/kv_cache.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/model/layers.h"
#include "kernels/kv_sequence.h"

namespace tandem::model {

kernels::KvDType to_kernel_dtype(config::KvCacheDType dtype) {
    switch (dtype) {
        case config::KvCacheDType::kF32:
            return kernels::KvDType::kF32;
        case config::KvCacheDType::kBF16:
            return kernels::KvDType::kBF16;
        case config::KvCacheDType::kInt8:
            return kernels::KvDType::kInt8;
        case config::KvCacheDType::kInt4:
            return kernels::KvDType::kInt4;
        case config::KvCacheDType::kInt2:
            return kernels::KvDType::kInt2;
    }
    return kernels::KvDType::kF32;
}

KvCacheOptions KvCacheOptions::from_spec(const config::KvCacheSpec& spec, int block_tokens) {
    KvCacheOptions o;
    o.dtype = to_kernel_dtype(spec.dtype);
    o.kivi = spec.kivi;
    o.residual_tokens = spec.residual_tokens;
    o.value_group = spec.group;
    o.block_tokens = o.dtype == kernels::KvDType::kF32 ? block_tokens : spec.group;
    o.compress_after_tokens = spec.compress_after_tokens;
    o.compress_dtype = to_kernel_dtype(spec.compress_dtype);
    return o;
}

namespace {

kernels::KvPageFormat page_format(const ModelConfig& config, int block_tokens, kernels::KvDType dt,
                                  bool kivi, int value_group) {
    kernels::KvPageFormat f;
    f.dtype = dt;
    f.scheme = (dt == kernels::KvDType::kInt2 || (dt == kernels::KvDType::kInt4 && kivi))
                   ? kernels::KvScheme::kKivi
                   : kernels::KvScheme::kPerToken;
    f.hkv = config.num_kv_heads;
    f.d = config.head_dim();
    f.page_tokens = block_tokens;
    f.value_group = std::min(value_group, f.d);
    return f;
}

}  // namespace

kernels::KvSequenceConfig kv_sequence_config(const ModelConfig& config,
                                             const KvCacheOptions& options) {
    kernels::KvSequenceConfig c;
    c.sealed =
        page_format(config, options.block_tokens, options.dtype, options.kivi, options.value_group);
    c.residual_tokens = options.residual_tokens;
    return c;
}

PagedKvCache::PagedKvCache(const ModelConfig& config, int block_tokens)
    : block_tokens_(block_tokens < 1 ? 1 : block_tokens),
      block_floats_(static_cast<int64_t>(block_tokens_) * config.kv_dim()),
      layers_(config.num_layers),
      k_(static_cast<size_t>(config.num_layers)),
      v_(static_cast<size_t>(config.num_layers)) {
    config_ = config;
    options_.block_tokens = block_tokens_;
    sealed_format_ = page_format(config, block_tokens_, kernels::KvDType::kF32, false, 32);
}

Result<PagedKvCache> PagedKvCache::create(const ModelConfig& config,
                                          const KvCacheOptions& options) {
    PagedKvCache c(config, options.block_tokens);
    c.options_ = options;
    c.options_.block_tokens = c.block_tokens_;
    c.sealed_format_ =
        page_format(config, c.block_tokens_, options.dtype, options.kivi, options.value_group);
    if (Status s = kernels::validate(c.sealed_format_); !s.ok()) {
        return invalid_argument(fmt::format("rollout.kv_cache: {}", s.message()));
    }
    if (options.residual_tokens < 0) {
        return invalid_argument("rollout.kv_cache.residual_tokens must be >= 0");
    }
    if (options.compress_after_tokens > 0 && options.dtype != kernels::KvDType::kF32) {
        const auto target = page_format(config, c.block_tokens_, options.compress_dtype,
                                        /*kivi=*/true, options.value_group);
        if (Status s = kernels::validate(target); !s.ok()) {
            return invalid_argument(
                fmt::format("rollout.kv_cache.compress_dtype: {}", s.message()));
        }
        c.compressor_ = std::make_unique<KvCompressor>(target, c.layers_);
    }
    return c;
}

PagedKvCache::PagedKvCache(PagedKvCache&& o) noexcept
    : block_tokens_(o.block_tokens_),
      block_floats_(o.block_floats_),
      layers_(o.layers_),
      options_(o.options_),
      sealed_format_(o.sealed_format_),
      config_(o.config_),
      k_(std::move(o.k_)),
      v_(std::move(o.v_)),
      refs_(std::move(o.refs_)),
      fill_(std::move(o.fill_)),
      fslot_(std::move(o.fslot_)),
      sealed_(std::move(o.sealed_)),
      submitted_(std::move(o.submitted_)),
      slots_(std::move(o.slots_)),
      free_(std::move(o.free_)),
      free_fslots_(std::move(o.free_fslots_)),
      fslots_(o.fslots_),
      seqs_(std::move(o.seqs_)),
      free_seqs_(std::move(o.free_seqs_)),
      in_use_(o.in_use_),
      live_(o.live_),
      compressor_(std::move(o.compressor_)) {}

PagedKvCache& PagedKvCache::operator=(PagedKvCache&& o) noexcept {
    if (this == &o) return *this;
    compressor_.reset();  // joins the worker before the slots it may hold go away
    block_tokens_ = o.block_tokens_;
    block_floats_ = o.block_floats_;
    layers_ = o.layers_;
    options_ = o.options_;
    sealed_format_ = o.sealed_format_;
    config_ = o.config_;
    k_ = std::move(o.k_);
    v_ = std::move(o.v_);
    refs_ = std::move(o.refs_);
    fill_ = std::move(o.fill_);
    fslot_ = std::move(o.fslot_);
    sealed_ = std::move(o.sealed_);
    submitted_ = std::move(o.submitted_);
    slots_ = std::move(o.slots_);
    free_ = std::move(o.free_);
    free_fslots_ = std::move(o.free_fslots_);
    fslots_ = o.fslots_;
    seqs_ = std::move(o.seqs_);
    free_seqs_ = std::move(o.free_seqs_);
    in_use_ = o.in_use_;
    live_ = o.live_;
    compressor_ = std::move(o.compressor_);
    return *this;
}

PagedKvCache::~PagedKvCache() { compressor_.reset(); }  // stop the worker before the slots go

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
    s.sealed_upto = 0;
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
    c.sealed_upto = p.sealed_upto;
    for (const Segment& s : c.segments) ++refs_[s.block];
    return child;
}

void PagedKvCache::unref(int32_t block) {
    if (--refs_[block] == 0) {
        fill_[block] = 0;
        if (sealed_[block]) {
            // Release: a compressor result for the old block now fails its compare-exchange.
            slots_[static_cast<size_t>(block)].store(nullptr, std::memory_order_release);
            sealed_[block] = 0;
        } else {
            free_fslots_.push_back(fslot_[block]);
        }
        fslot_[block] = -1;
        submitted_[block] = 0;
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
    s.sealed_upto = 0;
    s.live = false;
    s.pinned = false;
    free_seqs_.push_back(seq);
    --live_;
}

void PagedKvCache::release_all() {
    for (SeqId i = 0; i < static_cast<SeqId>(seqs_.size()); ++i) {
        if (!seqs_[i].pinned) release(i);
    }
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
        fslot_.push_back(-1);
        sealed_.push_back(0);
        submitted_.push_back(0);
        slots_.emplace_back();
    }
    if (!free_fslots_.empty()) {
        fslot_[b] = free_fslots_.back();
        free_fslots_.pop_back();
    } else {
        fslot_[b] = fslots_++;
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

Status PagedKvCache::seal(int32_t block, const kernels::KvPageFormat& format) {
    TANDEM_ASSIGN_OR_RETURN(auto sealed,
                            seal_block(
                                format, layers_, fill_[block], [&](int l) { return key(l, block); },
                                [&](int l) { return value(l, block); }));
    // Release: publishes the sealed bytes to the compressor's worker (which loads with acquire
    // through its compare-exchange) and to attention calls on this thread.
    slots_[static_cast<size_t>(block)].store(std::move(sealed), std::memory_order_release);
    sealed_[block] = 1;
    free_fslots_.push_back(fslot_[block]);
    fslot_[block] = -1;
    return Status();
}

Status PagedKvCache::seal_ready(Seq& s) {
    if (options_.dtype == kernels::KvDType::kF32) return Status();
    kernels::KvSequenceConfig policy;
    policy.sealed = sealed_format_;
    policy.residual_tokens = options_.residual_tokens;
    while (s.sealed_upto < s.segments.size()) {
        const Segment& seg = s.segments[s.sealed_upto];
        if (!sealed_[seg.block]) {
            const bool closed =
                fill_[seg.block] == block_tokens_ || s.sealed_upto + 1 < s.segments.size();
            const int64_t after = s.length - (seg.pos0 + seg.count);
            if (!kernels::kv_page_sealable(policy, closed, after)) break;
            TANDEM_RETURN_IF_ERROR(seal(seg.block, sealed_format_));
        }
        ++s.sealed_upto;
    }
    return Status();
}

void PagedKvCache::submit_old(const Seq& s) {
    if (!compressor_) return;
    for (size_t i = 0; i < s.sealed_upto; ++i) {
        const Segment& seg = s.segments[i];
        if (seg.pos0 + seg.count > s.length - options_.compress_after_tokens) break;
        if (submitted_[seg.block]) continue;
        KvBlockSlot& slot = slots_[static_cast<size_t>(seg.block)];
        // Acquire: pairs with the release that published the block (this thread's seal, or the
        // worker's swap), so the block handed over is fully written.
        auto current = slot.load(std::memory_order_acquire);
        if (!current || current->format == compressor_->target()) continue;
        submitted_[seg.block] = 1;
        compressor_->submit(&slot, std::move(current));
    }
}

Status PagedKvCache::append(SeqId seq, int64_t n, std::vector<Slot>& out) {
    Seq& s = seqs_[seq];
    TANDEM_RETURN_IF_ERROR(seal_ready(s));
    submit_old(s);
    while (n > 0) {
        Segment* last = s.segments.empty() ? nullptr : &s.segments.back();
        // The last segment's block takes more only if this sequence alone holds it, nothing
        // was written after the segment and it is not sealed.
        const bool extend = last && refs_[last->block] == 1 && !sealed_[last->block] &&
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
    return Status();
}

Status PagedKvCache::attend_segment(const kernels::AttentionParams& p, int layer,
                                    const Segment& seg, const float* q, float* o,
                                    float* lse) const {
    if (!sealed_[seg.block]) {
        kernels::AttentionParams pp = p;
        pp.tk = seg.count;
        pp.k_pos0 = seg.pos0;
        const int64_t kvd = sealed_format_.row_elems();
        return attention_forward<float>(pp, q, key(layer, seg.block) + seg.slot0 * kvd,
                                        value(layer, seg.block) + seg.slot0 * kvd, o, lse);
    }
    // Acquire: pairs with the release of seal() or of the compressor's swap; the shared_ptr
    // keeps this version alive for the call even if the worker swaps the slot meanwhile.
    const auto block = slots_[static_cast<size_t>(seg.block)].load(std::memory_order_acquire);
    const kernels::KvPageRef ref{&block->format, block->page(layer), seg.slot0, seg.count,
                                 seg.pos0};
    return kernels::kv_paged_attention_cpu(p, std::span(&ref, 1), q, o, lse);
}

Status PagedKvCache::seal_sequence(SeqId seq, kernels::KvDType dtype, bool kivi) {
    const auto format = page_format(config_, block_tokens_, dtype, kivi, options_.value_group);
    TANDEM_RETURN_IF_ERROR(kernels::validate(format));
    Seq& s = seqs_[seq];
    for (const Segment& seg : s.segments) {
        if (sealed_[seg.block] || dtype == kernels::KvDType::kF32) continue;
        TANDEM_RETURN_IF_ERROR(seal(seg.block, format));
    }
    s.sealed_upto = dtype == kernels::KvDType::kF32 ? 0 : s.segments.size();
    return Status();
}

Status PagedKvCache::read_kv(SeqId seq, int layer, float* k, float* v) const {
    const int64_t kvd = sealed_format_.row_elems();
    for (const Segment& seg : seqs_[seq].segments) {
        float* kd = k + seg.pos0 * kvd;
        float* vd = v + seg.pos0 * kvd;
        if (!sealed_[seg.block]) {
            std::copy_n(key(layer, seg.block) + seg.slot0 * kvd, seg.count * kvd, kd);
            std::copy_n(value(layer, seg.block) + seg.slot0 * kvd, seg.count * kvd, vd);
            continue;
        }
        // Acquire: pairs with the release that published the block (seal or compressor swap).
        const auto blk = slots_[static_cast<size_t>(seg.block)].load(std::memory_order_acquire);
        TANDEM_RETURN_IF_ERROR(kernels::kv_dequantize_page(blk->format, blk->page(layer), seg.slot0,
                                                           seg.count, kd, vd));
    }
    return Status();
}

Status PagedKvCache::append_kv(SeqId seq, int64_t n, const std::function<const float*(int)>& k,
                               const std::function<const float*(int)>& v) {
    std::vector<Slot> slots;
    TANDEM_RETURN_IF_ERROR(append(seq, n, slots));
    const int64_t kvd = sealed_format_.row_elems();
    for (int l = 0; l < layers_; ++l) {
        const float* kl = k(l);
        const float* vl = v(l);
        for (int64_t r = 0; r < n; ++r) {
            const Slot s = slots[static_cast<size_t>(r)];
            std::copy_n(kl + r * kvd, kvd, key(l, s.block) + s.slot * kvd);
            std::copy_n(vl + r * kvd, kvd, value(l, s.block) + s.slot * kvd);
        }
    }
    return Status();
}

int64_t PagedKvCache::f32_block_bytes() const {
    return 2 * block_floats_ * static_cast<int64_t>(sizeof(float)) * layers_;
}

int64_t PagedKvCache::block_bytes(int32_t block) const {
    if (!sealed_[block]) return f32_block_bytes();
    // Acquire: the block as last published.
    return static_cast<int64_t>(
        slots_[static_cast<size_t>(block)].load(std::memory_order_acquire)->bytes.size());
}

int64_t PagedKvCache::sealed_block_bytes() const {
    return kernels::kv_page_bytes(sealed_format_) * layers_;
}

KvCacheStats PagedKvCache::stats() const {
    KvCacheStats st;
    for (size_t b = 0; b < refs_.size(); ++b) {
        if (refs_[b] == 0) continue;
        st.tokens += fill_[b];
        if (!sealed_[b]) {
            ++st.f32_blocks;
            st.bytes += f32_block_bytes();
            continue;
        }
        // Acquire: the block's format and size as last published.
        const auto blk = slots_[b].load(std::memory_order_acquire);
        ++st.sealed_blocks[static_cast<int>(blk->format.dtype)];
        st.bytes += static_cast<int64_t>(blk->bytes.size());
    }
    st.compressed = compressor_ ? compressor_->swapped() : 0;
    return st;
}

void PagedKvCache::drain_compressor() {
    if (compressor_) compressor_->drain();
}

}  // namespace tandem::model
