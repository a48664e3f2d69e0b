#pragma once

// Forward-only decoder over a paged KV cache: prefill (many tokens per sequence) and incremental
// decode (one token per sequence) are the same call. Projections and the MLP run as one sgemm over
// all rows of the call; attention runs per sequence and block through kernels/, merging blocks by
// log-sum-exp. Consecutive single-token items whose sequences share leading cache segments (the
// samples of one GRPO group) attend to the shared blocks in one kernel call.

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/config.h"
#include "common/model/decoder_layer.h"
#include "common/model/kv_cache.h"
#include "common/model/layers.h"
#include "common/model/params.h"
#include "common/model/stored_weights.h"
#include "common/status.h"

namespace tandem::model {

struct ForwardItem {
    PagedKvCache::SeqId seq = 0;
    std::span<const int32_t> tokens;  // appended to the sequence, in order
};

// Owns its workspace; reusing one engine allocates nothing once the largest call has been seen.
// Not thread-safe.
class InferenceEngine {
public:
    static Result<InferenceEngine> create(const ModelConfig& config);

    const ModelConfig& config() const { return config_; }
    const weights::Layout& layout() const { return layout_; }

    // Appends every item's tokens to its sequence in `cache` and runs the model on them.
    // `params` is the flat buffer laid out by layout(): fp32, or BF16/F16 with the same element
    // offsets (stored_weights.h), widened a layer at a time (the LM head in row chunks) into the
    // engine's workspace, so compute is fp32 either way. Writes logits [items, vocab] of the last
    // token of each item, or, when `all_rows`, [total tokens, vocab] in item order.
    Status forward(WeightView params, PagedKvCache& cache, std::span<const ForwardItem> items,
                   float* logits, bool all_rows = false);

    // When false, every sequence attends on its own even where blocks are shared (tests compare
    // both paths).
    void set_group_shared_attention(bool on) { group_shared_ = on; }

private:
    InferenceEngine() = default;
    Status attend(const PagedKvCache& cache, int layer, std::span<const ForwardItem> items);

    ModelConfig config_;
    weights::Layout layout_;
    ParamIndex index_;
    RopeTable<float> rope_;
    std::vector<std::pair<uint64_t, uint64_t>> layer_ranges_;  // element ranges of each layer
    bool group_shared_ = true;
    // Workspace.
    std::vector<int64_t> row0_;  // first row of each item
    std::vector<int32_t> pos_;
    std::vector<PagedKvCache::Slot> slots_;
    std::vector<int64_t> out_rows_;
    std::vector<float> x_, a_, q_, k_, v_, o_, lse_, g_, u_, xs_, rstd_, qg_, og_, lseg_;
    QkNormActs<float> qk_;
    std::vector<float> wide_layer_, wide_row_, wide_norm_, wide_head_;  // widened BF16/F16 weights
};

}  // namespace tandem::model
