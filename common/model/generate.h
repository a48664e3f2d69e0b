#pragma once

// GRPO rollout generation: G sampled completions per prompt. Each prompt is prefilled once into
// the paged cache; its G samples fork the prompt's sequence and share its blocks, then decode
// together, one sgemm per layer for every live sample of every prompt.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/kv_prefix_cache.h"
#include "common/model/sampler.h"
#include "common/status.h"

namespace tandem::model {

struct Completion {
    int32_t prompt = 0;           // index into the prompts passed to generate()
    int32_t sample = 0;           // 0 .. group_size - 1
    std::vector<int32_t> tokens;  // sampled tokens, ending with a stop id when finished
    std::vector<float> logprobs;  // behaviour log-prob of each token
    bool finished = false;        // ended with a stop id (false: stopped at max_new_tokens)
};

struct GenerateStats {
    int64_t prompt_tokens = 0;  // prefilled once per prompt
    int64_t generated_tokens = 0;
    int64_t decode_steps = 0;  // single-device and context-parallel steps
    int64_t peak_blocks = 0;
    int64_t sharded_sequences = 0;     // samples generated with a sharded KV cache
    int64_t peak_tokens_per_rank = 0;  // most positions of one sharded sequence on one rank
    // KV memory (single-device path; docs/kv-cache.md), at the step that held the most bytes.
    int64_t kv_peak_bytes = 0;
    double kv_bytes_per_token = 0.0;   // bytes / positions held at that step
    int64_t kv_f32_blocks = 0;         // blocks in f32 (residual window, unfilled) at that step
    int64_t kv_sealed_blocks[5] = {};  // quantized blocks by kernels::KvDType at that step
    int64_t kv_compressed = 0;         // blocks the background compressor requantized
    int64_t kv_waves = 0;              // admission waves (prompts admitted under budget_bytes)
    int64_t kv_evictions = 0;          // cached prefixes dropped (new version, budget)
    // Job metrics (kv/*, docs/kv-cache.md): at the peak step, bytes per position against the f32
    // bytes of a position (1 for f32 with full blocks); the pinned system-prompt prefix's bytes
    // (inside kv_peak_bytes); prompts that forked or re-rotated it; prompts admitted after the
    // first wave (they waited for an earlier wave to finish under budget_bytes).
    double kv_compression = 0.0;
    int64_t kv_prefix_bytes = 0;
    int64_t kv_prefix_hits = 0;
    int64_t kv_admission_waits = 0;
};

struct GeneratorOptions {
    int block_tokens = 16;
    // false: every sample prefills its own copy of the prompt (the reference for tests).
    bool share_prefix = true;
    // A completion ends at eos_token or any of stop_tokens (a model's list of eos ids, as in
    // config.json / generation_config.json; model_eos_ids in hf_model.h). Negative ids never match.
    int32_t eos_token = 2;
    std::vector<int32_t> stop_tokens;
    // A prompt whose context (prompt + max_new_tokens) is longer than max_tokens_per_device runs
    // with its KV cache sharded over `context_parallel` ranks (common/model/context_parallel.h);
    // longer than context_parallel x max_tokens_per_device is an error. 0: no limit.
    int context_parallel = 1;
    int64_t max_tokens_per_device = 0;
    std::string job;  // names the job in errors
    // rollout.kv_cache (block_tokens applies when dtype is f32). budget_bytes > 0: prompts are
    // admitted in waves whose worst-case KV bytes fit (PagedKvCache::worst_case_bytes).
    KvCacheOptions kv;
    int64_t kv_budget_bytes = 0;
    // rollout.kv_cache.prefix_*: the system-prompt cache (common/model/kv_prefix_cache.h).
    PrefixCacheOptions prefix;

    // rollout.context_parallel, rollout.max_tokens_per_device and the job's name.
    static GeneratorOptions from_job(const config::JobSpec& job);
};

class ContextParallelGenerator;

// Owns the engine, the cache and the sampler; reuse it across batches. Not thread-safe.
class GroupGenerator {
public:
    static Result<GroupGenerator> create(const ModelConfig& config, GeneratorOptions options = {});
    GroupGenerator(GroupGenerator&&) noexcept;
    GroupGenerator& operator=(GroupGenerator&&) noexcept;
    ~GroupGenerator();

    const InferenceEngine& engine() const { return engine_; }

    // System-prompt cache: the weights version the next batches run with (the cached prefix is
    // recomputed when it changes; unset, once per generate call) and an explicit prefix (empty:
    // options.prefix.auto_tokens of the batch's first prompt). Stats null when it is off.
    void set_weights_version(int64_t version) { weights_version_ = version; }
    void set_system_prompt(std::vector<int32_t> tokens);
    const PrefixCacheStats* prefix_stats() const { return prefix_ ? &prefix_->stats() : nullptr; }

    // Samples `group_size` completions of each prompt with the weights in `params` (the flat
    // buffer of the model's layout: fp32, or BF16/F16 as stored_weights.h keeps them; those run
    // without the system-prompt cache and context parallelism, which need fp32). The random
    // stream of sample g of prompt p depends only on (options.seed, p, g), so the result does not
    // depend on batching or prefix sharing.
    // Completions come back ordered by (prompt, sample).
    Result<std::vector<Completion>> generate(WeightView params,
                                             std::span<const std::vector<int32_t>> prompts,
                                             int group_size, const SamplingOptions& options,
                                             GenerateStats* stats = nullptr);

private:
    GroupGenerator(InferenceEngine engine, PagedKvCache cache, GeneratorOptions options,
                   std::unique_ptr<ContextParallelGenerator> sharded);
    // One admission wave: prompts are numbered from `prompt0` for the random streams.
    Result<std::vector<Completion>> generate_wave(WeightView params,
                                                  std::span<const std::vector<int32_t>> prompts,
                                                  int64_t prompt0, int group_size,
                                                  const SamplingOptions& options,
                                                  GenerateStats& stats);

    InferenceEngine engine_;
    PagedKvCache cache_;
    GeneratorOptions options_;
    std::unique_ptr<ContextParallelGenerator> sharded_;  // null when context_parallel == 1
    Sampler sampler_;
    std::vector<int32_t> stop_ids_;  // eos_token and stop_tokens, sorted, unique, >= 0
    std::vector<Rng> rngs_;
    std::vector<PagedKvCache::SeqId> seqs_;
    std::vector<int32_t> active_;
    std::vector<int32_t> last_tok_;
    std::vector<ForwardItem> items_;
    std::vector<float> logits_;
    std::unique_ptr<SystemPromptCache> prefix_;  // null when the system-prompt cache is off
    std::vector<int32_t> system_prompt_;
    int64_t weights_version_ = -1;
};

}  // namespace tandem::model
