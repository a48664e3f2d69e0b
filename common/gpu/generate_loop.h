#pragma once

// The host side of device generate calls, over a backend that runs the device steps: checks
// the call, sizes the KV pool, prefills whole prompts in chunks, forks each prompt into its
// samples, then decodes every live sample one token a step in the smallest bucket of rows that
// holds them, ending samples at a stop id or max_new_tokens (model::GroupGenerator's rules).
// Across calls it keeps the system-prompt cache: the prefix's KV in refcounted pages of the
// pool, prefilled once per weights version, which prompts starting with it fork instead of
// prefilling it (model::SystemPromptCache's rules, offset 0 only). With a KV budget it admits
// prompts in waves planned by model::admission_waves (the CPU engine's planning) over the
// device's block bytes.
// gpu::DeviceGenerator is the CUDA backend; tests/fakes/fake_generation_backend.h a host one that
// checks every page a step reads, so CI tests this loop without a device.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/gpu/paged_plan.h"
#include "common/model/config.h"
#include "common/model/generate.h"
#include "common/model/kv_prefix_cache.h"
#include "common/model/sampler.h"
#include "common/status.h"

namespace tandem::gpu {

// Prompts prefilled together: their rows packed back to back, each row's KV slot, and the
// first token of each of their samples (sample b of the batch reads prompt b / group's last row).
struct PrefillBatch {
    std::vector<int32_t> tokens, positions, slots;  // [rows]
    std::vector<int64_t> lens;                      // rows of each prompt
    int group = 1;
    // [prompts x group]: sample_stream(seed, prompt, sample). Empty: nothing is sampled (the
    // system prompt's own prefill).
    std::vector<uint64_t> streams;
    // Empty: each prompt's rows attend causally to the rows of that prompt in the batch (they
    // start at position 0). Otherwise the prompts continue a cached prefix: tables [prompts,
    // width] are their block tables, and a row at position i attends to positions 0 .. i of its
    // prompt through the table (the prefix's pages, then the batch's rows, written first).
    int width = 0;
    std::vector<int32_t> tables;
};

// The device steps. Every call returns its results on the host (it waits for the device).
class GenerationBackend {
public:
    virtual ~GenerationBackend() = default;
    // A pool of at least `blocks` KV blocks (block 0 included) and decode buffers for
    // `max_rows` rows with block tables `width` wide; the layout the step inputs follow. A pool
    // that holds `blocks` already is kept with its contents; a larger one starts empty.
    virtual Result<StepLayout> reserve(int64_t blocks, int64_t max_rows, int width) = 0;
    // Writes the prompts' keys and values to their slots and samples each sample's first token
    // (Philox step 0): tokens and logprobs [prompts x group].
    virtual Status prefill(const PrefillBatch& batch, std::vector<int32_t>& tokens,
                           std::vector<float>& logprobs) = 0;
    // Copies block pairs (source, destination), every layer's keys and values.
    virtual Status copy_blocks(std::span<const int32_t> pairs) = 0;
    // One decode step of `rows` rows whose inputs are `step` (the reserved layout, pack_step);
    // tokens and logprobs of the first `live` rows.
    virtual Status decode(int64_t rows, std::span<const int32_t> step, int64_t live,
                          std::vector<int32_t>& tokens, std::vector<float>& logprobs) = 0;
};

struct GenerationLoopOptions {
    int block_tokens = 16;
    int64_t max_prefill_tokens = 8192;  // prompt rows per prefill (a longer prompt goes alone)
    std::vector<int32_t> stop_ids;      // sorted, unique, >= 0
    std::string job;                    // names the job in errors
    // rollout.kv_cache.prefix_tokens: > 0, the first prefix_tokens tokens of the call's first
    // prompt longer than that are the system prompt (unless set_system_prompt named one).
    int64_t prefix_tokens = 0;
    // rollout.kv_cache.budget_bytes: > 0, prompts are admitted in waves whose worst-case KV
    // bytes (block_bytes a block) fit, the cached prefix's blocks included.
    int64_t budget_bytes = 0;
    int64_t block_bytes = 0;  // one block of the backend's pool: every layer's keys and values
};

struct GenerationCounts {
    int64_t prompt_tokens = 0;  // rows prefilled for the prompts (a cached prefix's not counted)
    int64_t generated_tokens = 0;
    int64_t decode_steps = 0;
    int64_t peak_blocks = 0;            // the cached prefix's blocks included
    std::vector<int64_t> bucket_steps;  // decode steps run at each bucket size, by size
    // As model::GenerateStats: kv_waves, kv_admission_waits, kv_prefix_hits, kv_prefix_bytes,
    // kv_evictions (this call's).
    std::vector<int64_t> wave_prompts;  // prompts of each admission wave, in order
    int64_t admission_waits = 0;        // prompts after the first wave
    int64_t prefix_hits = 0;            // prompts that forked the cached prefix
    int64_t prefix_bytes = 0;           // the cached prefix's blocks (block_bytes each)
    int64_t evictions = 0;              // cached prefixes dropped
};

// The host state of one device generator across calls: the pool's block bookkeeping and the
// system-prompt cache. The cached prefix is dropped (an eviction) when its tokens or the weights
// version change, when weights_changed() is called, when the pool has to grow (a larger pool
// starts empty) or after a call that failed. Not thread-safe.
class GenerationLoop {
public:
    explicit GenerationLoop(GenerationLoopOptions options) : options_(std::move(options)) {}
    const GenerationLoopOptions& options() const { return options_; }
    // As model::GroupGenerator::set_weights_version: the version the next calls run with;
    // unset (< 0), a cached prefix lives for one call.
    void set_weights_version(int64_t version) { version_ = version; }
    // An explicit system prompt (empty: options().prefix_tokens of each call's first prompt).
    void set_system_prompt(std::vector<int32_t> tokens) { system_prompt_ = std::move(tokens); }
    // The backend's weights were replaced: a cached prefix is stale.
    void weights_changed() { stale_ = true; }
    // prefills, prefill_tokens, hits, evictions and bytes of the cache so far (shifted_hits 0:
    // a prefix found later in a prompt is not reused, the prompt is prefilled whole).
    const model::PrefixCacheStats& prefix_stats() const { return stats_; }
    // The cached prefix's sequence (no blocks when none is cached) and the pool (tests).
    const PagedSeq& prefix() const { return prefix_; }
    const PagedSequences* sequences() const { return seqs_.get(); }

    // Checks the call (naming the job, prompt, token or field), then runs it on `backend`.
    Result<std::vector<model::Completion>> run(GenerationBackend& backend,
                                               const model::ModelConfig& config,
                                               std::span<const std::vector<int32_t>> prompts,
                                               int group_size,
                                               const model::SamplingOptions& sampling,
                                               GenerationCounts* counts = nullptr);

private:
    struct Call;
    // Prompts [first, first + count) of the call, to completion.
    Status run_wave(GenerationBackend& backend, Call& call, int64_t first, int64_t count);
    void drop_prefix();

    GenerationLoopOptions options_;
    std::unique_ptr<PagedSequences> seqs_;
    int64_t capacity_ = 0;  // blocks of the pool the backend holds (0: none yet)
    PagedSeq prefix_;
    bool cached_ = false;
    std::vector<int32_t> prefix_tokens_, system_prompt_;
    int64_t version_ = -1, prefix_version_ = -1;
    bool stale_ = false;
    bool clean_ = true;  // false while a call runs, and after one failed
    model::PrefixCacheStats stats_;
};

// One call with a fresh GenerationLoop (no prefix cache across calls).
Result<std::vector<model::Completion>> run_generation(
    GenerationBackend& backend, const model::ModelConfig& config,
    const GenerationLoopOptions& options, std::span<const std::vector<int32_t>> prompts,
    int group_size, const model::SamplingOptions& sampling, GenerationCounts* counts = nullptr);

}  // namespace tandem::gpu
