#pragma once

// System-prompt KV cache: a prefix shared by many prompts (a job's system prompt) is prefilled
// once per weight version and kept in the rollout's PagedKvCache as a pinned sequence, sealed at
// its own (possibly heavier) format since it is paid once. A prompt that starts with the prefix
// forks it (its blocks are shared: the memory is counted once per engine, not per sequence). A
// prompt that holds the prefix at offset delta > 0 (tool text inserted before it) either reuses
// the cached KV with its keys re-rotated by delta (RoPE composes additively: exact for the
// position, approximate for the content, which was computed without the inserted text) or
// prefills everything again (shift: recompute).

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/status.h"

namespace tandem::model {

struct PrefixCacheOptions {
    int64_t auto_tokens = 0;  // > 0: the first auto_tokens tokens of a batch's first prompt
    kernels::KvDType dtype = kernels::KvDType::kInt8;
    bool kivi = false;
    bool rotate = true;  // false: a shifted prefix is prefilled again

    bool enabled() const { return auto_tokens > 0; }
};

struct PrefixCacheStats {
    int64_t prefills = 0;        // times the prefix was computed
    int64_t prefill_tokens = 0;  // tokens prefilled for it
    int64_t hits = 0;            // prompts that forked the prefix at offset 0
    int64_t shifted_hits = 0;    // prompts that reused it re-rotated
    int64_t evictions = 0;       // cached prefixes dropped (new version or new prefix)
    int64_t bytes = 0;           // KV bytes of the cached prefix (once per engine)
};

// Owned by one generation loop (with its cache and engine); not thread-safe.
class SystemPromptCache {
public:
    explicit SystemPromptCache(PrefixCacheOptions options) : options_(options) {}

    const PrefixCacheOptions& options() const { return options_; }
    const PrefixCacheStats& stats() const { return stats_; }
    std::span<const int32_t> tokens() const { return tokens_; }

    // The prefix and the weights version its KV must come from. New tokens or a new version drop
    // the cached KV (an eviction); it is prefilled again at the next ensure(). version < 0: the
    // version is unknown, so the KV is valid for one generate call only (invalidate()).
    void set(std::vector<int32_t> tokens, int64_t version, PagedKvCache& cache);
    void invalidate(PagedKvCache& cache);

    // Before a batch: the prefix is `explicit_tokens` when not empty, otherwise (auto_tokens > 0)
    // the first auto_tokens tokens of the first prompt longer than that; then set() and ensure().
    Status prepare(InferenceEngine& engine, const float* params, PagedKvCache& cache,
                   std::span<const std::vector<int32_t>> prompts,
                   const std::vector<int32_t>& explicit_tokens, int64_t version);

    // Prefills the prefix when nothing valid is cached: one forward, then its blocks are sealed
    // at options().dtype and pinned.
    Status ensure(InferenceEngine& engine, const float* params, PagedKvCache& cache);

    // Where the prefix starts in `prompt` with at least one token after it, or nullopt. Offset 0
    // is preferred; a later offset only when rotate is on.
    std::optional<int64_t> find(std::span<const int32_t> prompt) const;

    // A new sequence holding prompt[0, offset + prefix length): a fork of the cached prefix
    // (offset 0), or prompt[0, offset) prefilled and the prefix's keys re-rotated by `offset`
    // appended after it. The caller prefills the rest.
    Result<PagedKvCache::SeqId> start(InferenceEngine& engine, const float* params,
                                      PagedKvCache& cache, std::span<const int32_t> prompt,
                                      int64_t offset);

private:
    PrefixCacheOptions options_;
    PrefixCacheStats stats_;
    std::vector<int32_t> tokens_;
    int64_t version_ = -1;
    std::optional<PagedKvCache::SeqId> seq_;  // the cached prefix, when valid
    std::vector<float> k_, v_, logits_;
};

}  // namespace tandem::model
