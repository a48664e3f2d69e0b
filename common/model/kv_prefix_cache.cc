#include "common/model/kv_prefix_cache.h"

#include <algorithm>

#include "kernels/kv_quant.h"

namespace tandem::model {

void SystemPromptCache::invalidate(PagedKvCache& cache) {
    if (seq_) {
        cache.release(*seq_);
        seq_.reset();
        ++stats_.evictions;
        stats_.bytes = 0;
    }
}

void SystemPromptCache::set(std::vector<int32_t> tokens, int64_t version, PagedKvCache& cache) {
    if (tokens == tokens_ && version == version_ && version >= 0) return;
    invalidate(cache);
    tokens_ = std::move(tokens);
    version_ = version;
}

Status SystemPromptCache::ensure(InferenceEngine& engine, const float* params,
                                 PagedKvCache& cache) {
    if (seq_ || tokens_.empty()) return Status();
    const auto s = cache.create();
    cache.pin(s, true);
    logits_.resize(static_cast<size_t>(engine.config().vocab_size));
    const ForwardItem item{s, tokens_};
    if (Status st = engine.forward(params, cache, std::span(&item, 1), logits_.data()); !st.ok()) {
        cache.release(s);
        return st;
    }
    if (Status st = cache.seal_sequence(s, options_.dtype, options_.kivi); !st.ok()) {
        cache.release(s);
        return st;
    }
    seq_ = s;
    ++stats_.prefills;
    stats_.prefill_tokens += static_cast<int64_t>(tokens_.size());
    // Bytes of the prefix: its blocks, sealed at options().dtype (the last one possibly partial).
    int64_t bytes = 0;
    for (const auto& seg : cache.segments(s)) {
        bytes += cache.block_bytes(seg.block);
    }
    stats_.bytes = bytes;
    return Status();
}

Status SystemPromptCache::prepare(InferenceEngine& engine, const float* params, PagedKvCache& cache,
                                  std::span<const std::vector<int32_t>> prompts,
                                  const std::vector<int32_t>& explicit_tokens, int64_t version) {
    std::vector<int32_t> tokens = explicit_tokens;
    if (tokens.empty() && options_.auto_tokens > 0) {
        for (const auto& p : prompts) {
            if (static_cast<int64_t>(p.size()) > options_.auto_tokens) {
                tokens.assign(p.begin(), p.begin() + options_.auto_tokens);
                break;
            }
        }
    }
    set(std::move(tokens), version, cache);
    return ensure(engine, params, cache);
}

std::optional<int64_t> SystemPromptCache::find(std::span<const int32_t> prompt) const {
    const int64_t n = static_cast<int64_t>(tokens_.size());
    const int64_t len = static_cast<int64_t>(prompt.size());
    if (n == 0 || len <= n) return std::nullopt;
    const int64_t last = options_.rotate ? len - n - 1 : 0;
    for (int64_t off = 0; off <= last; ++off) {
        if (std::equal(tokens_.begin(), tokens_.end(), prompt.begin() + off)) return off;
    }
    return std::nullopt;
}

Result<PagedKvCache::SeqId> SystemPromptCache::start(InferenceEngine& engine, const float* params,
                                                     PagedKvCache& cache,
                                                     std::span<const int32_t> prompt,
                                                     int64_t offset) {
    if (!seq_) return invalid_argument("system-prompt cache: nothing cached");
    if (offset == 0) {
        ++stats_.hits;
        return cache.fork(*seq_);
    }
    const ModelConfig& c = engine.config();
    const int64_t n = static_cast<int64_t>(tokens_.size());
    const int64_t kvd = c.kv_dim();
    const auto s = cache.create();
    logits_.resize(static_cast<size_t>(c.vocab_size));
    const ForwardItem head{s, prompt.subspan(0, static_cast<size_t>(offset))};
    TANDEM_RETURN_IF_ERROR(engine.forward(params, cache, std::span(&head, 1), logits_.data()));
    // Every layer's cached prefix KV, keys turned by `offset` positions.
    k_.resize(static_cast<size_t>(c.num_layers * n * kvd));
    v_.resize(k_.size());
    const auto inv = rope_inv_freq(c.head_dim(), c.rope_theta, c.rope_scaling);
    for (int l = 0; l < c.num_layers; ++l) {
        float* kl = k_.data() + l * n * kvd;
        TANDEM_RETURN_IF_ERROR(cache.read_kv(*seq_, l, kl, v_.data() + l * n * kvd));
        kernels::rope_shift_keys(kl, n, c.num_kv_heads, c.head_dim(), inv, offset);
    }
    TANDEM_RETURN_IF_ERROR(cache.append_kv(
        s, n, [&](int l) { return k_.data() + l * n * kvd; },
        [&](int l) { return v_.data() + l * n * kvd; }));
    ++stats_.shifted_hits;
    return s;
}

}  // namespace tandem::model
