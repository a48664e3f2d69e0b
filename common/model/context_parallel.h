#pragma once

// Context-parallel generation: the groups whose context (prompt + max_new_tokens) is longer than
// one device may hold run over `ranks` ranks of a ring (kernels/ring), each rank holding a shard of
// every such sequence's KV cache.
//
// - KV layout. Positions [0, n - 1) of an n-token prompt are prefilled with ring attention in the
//   zigzag layout (rank r holds chunks r and 2P - 1 - r of 2P). Every later position (the prompt's
//   last token, then the sampled tokens) is appended to one rank: ranks are filled in order up to
//   a quota of ceil(context / P) positions per rank, so each rank's appended positions are one
//   consecutive run and no rank ever holds more than ceil(context / P) positions of a sequence.
// - Prefix sharing. The prompt's positions (the ring prefill plus the last prompt token) are held
//   once per rank and shared read-only by the G samples of its group; each sample appends its
//   tokens to a tail of its own on the owning rank.
// - Decode. Every rank runs the embedding, projections, RoPE and MLP of the new tokens
//   (replicated), keeps the new K/V rows it owns, attends the queries to its shard (one kernel call
//   for a group's shared prompt rows, one per sample tail) and the partials are all-gathered around
//   the ring and merged by log-sum-exp (kernels::allgather_merge_partials), bitwise the same on
//   every rank. Rank 0 computes the logits; the driver samples and hands the tokens to the next
//   step.
// - The prompt's last token runs as the first decode step, so prefill produces no logits and
//   every rank leaves prefill with the same hidden state.
//
// Ranks are threads of this process over the in-process ring transport (one per device); rank 0
// runs on the calling thread.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/model/config.h"
#include "common/model/rng.h"
#include "common/model/sampler.h"
#include "common/status.h"
#include "kernels/kv_sequence.h"
#include "kernels/ring/ring_layout.h"

namespace tandem::model {

struct Completion;

struct ContextParallelOptions {
    int ranks = 2;  // 1 runs the same code without a ring partner (a baseline for benchmarks)
    kernels::RingLayout layout = kernels::RingLayout::kZigzag;
    std::chrono::milliseconds timeout{60000};  // each wait on a neighbour
    // rollout.kv_cache: unset, the shards hold f32 rows. Set, every shard piece (a group's shared
    // prompt rows, a sample's tail, per layer) is a kernels::KvPagedSequence: pages of
    // kv->sealed.page_tokens rows sealed at kv->sealed's format by the residual-window rule of
    // kernels/kv_sequence.h, read by kernels::kv_paged_attention_cpu (docs/kv-cache.md).
    std::optional<kernels::KvSequenceConfig> kv;
};

// Where the positions of one sequence live: [0, prefill_len) by the ring layout, then
// append_begin[r] .. append_end[r] - 1 on rank r.
struct ContextShardPlan {
    int ranks = 1;
    int64_t prefill_len = 0;
    int64_t context_len = 0;
    int64_t quota = 0;  // most positions of the sequence on one rank: ceil(context_len / ranks)
    std::vector<int64_t> prefill_rows, append_begin, append_end;

    int owner(int64_t pos) const;  // for positions >= prefill_len
    int64_t max_rows() const;      // most positions any rank holds at context_len
};
ContextShardPlan plan_context_shards(kernels::RingLayout layout, int64_t prompt_len,
                                     int64_t context_len, int ranks);

// One prompt and the completion slots that continue it (indices into the `out` and `rngs` spans
// of generate()). One member per group when prefixes are not shared.
struct ContextParallelGroup {
    int32_t prompt = 0;
    std::vector<int32_t> members;
};

// One token of a decode step, the same on every rank.
struct ContextParallelItem {
    int32_t token = 0;
    int32_t pos = 0;
    int32_t group = 0;  // index into the groups of generate()
    int32_t tail = -1;  // sample whose tail receives the token; -1: the group's shared rows
};

// The host-side bookkeeping of one generate() call, shared by ContextParallelGenerator and its
// device twin (gpu::DeviceContextParallelRank): the input checks, the shard plans, each step's
// items and what the sampled tokens do. A call runs items() through the model, samples one token
// per draws() entry (logits row `row` with slot `slot`'s random stream), hands them to record(),
// and repeats while !done(). Not thread-safe.
class ContextParallelRun {
public:
    struct Draw {
        int32_t slot = 0;  // completion slot (index into out and rngs)
        int32_t row = 0;   // logits row of the step just run
    };
    // Checks every prompt (non-empty, tokens in the vocabulary, prompt + max_new_tokens within
    // max_seq_len) and every member slot (< slots, not repeated), naming them; plans the shards.
    static Result<ContextParallelRun> create(const ModelConfig& config, kernels::RingLayout layout,
                                             int ranks,
                                             std::span<const std::vector<int32_t>> prompts,
                                             std::span<const ContextParallelGroup> groups,
                                             const SamplingOptions& options, size_t slots);

    const std::vector<ContextShardPlan>& plans() const { return plans_; }
    int32_t members() const { return members_; }
    int32_t tail_of(int32_t slot) const { return tail_of_[static_cast<size_t>(slot)]; }
    int64_t prompt_tokens() const { return prompt_tokens_; }
    // The step to run next: first each group's last prompt token (into its shared rows), then
    // each live sample's last token (into its tail).
    const std::vector<ContextParallelItem>& items() const { return items_; }
    const std::vector<Draw>& draws() const { return draws_; }
    // The tokens drawn for draws(), in order: appended to out (token, log-prob, finished at a
    // stop id or max_new_tokens); then items() and draws() describe the next step.
    void record(std::span<const SampledToken> picks, std::span<const int32_t> stop_ids,
                std::span<Completion> out);
    bool done() const { return draws_.empty(); }

private:
    std::span<const std::vector<int32_t>> prompts_;
    std::span<const ContextParallelGroup> groups_;
    int max_new_tokens_ = 0;
    std::vector<ContextShardPlan> plans_;
    std::vector<int32_t> group_of_, tail_of_, active_;
    int32_t members_ = 0;
    int64_t prompt_tokens_ = 0;
    std::vector<ContextParallelItem> items_;
    std::vector<Draw> draws_;
};

struct ContextParallelStats {
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;
    int64_t decode_steps = 0;
    int64_t sequences = 0;
    int64_t peak_tokens_per_rank = 0;  // most positions of one sequence held by one rank
    int64_t peak_kv_bytes = 0;         // most KV bytes all ranks' shards held together
    int64_t peak_kv_tokens = 0;        // positions (per layer) they held at that point
};

// Owns the rank threads, their transports and KV shards. The driver (generate()) is one thread;
// not thread-safe. Neither copyable nor movable (the rank threads refer to it).
class ContextParallelGenerator {
public:
    static Result<std::unique_ptr<ContextParallelGenerator>> create(
        const ModelConfig& config, const ContextParallelOptions& options);
    ~ContextParallelGenerator();
    ContextParallelGenerator(const ContextParallelGenerator&) = delete;
    ContextParallelGenerator& operator=(const ContextParallelGenerator&) = delete;

    int ranks() const;

    // Samples the completions of every member of `groups`: out[b] gets tokens and behaviour
    // log-probs drawn with rngs[b], exactly as single-device generation would (same sampler, same
    // random stream; attention differs only by the rounding of the log-sum-exp merge).
    // A sample ends at any of `stop_ids` (sorted). Positions must stay below the model's
    // max_seq_len (checked by the caller).
    Status generate(const float* params, std::span<const std::vector<int32_t>> prompts,
                    std::span<const ContextParallelGroup> groups, const SamplingOptions& options,
                    std::span<const int32_t> stop_ids, std::span<Rng> rngs,
                    std::span<Completion> out, ContextParallelStats* stats);

private:
    struct Impl;
    explicit ContextParallelGenerator(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::model
