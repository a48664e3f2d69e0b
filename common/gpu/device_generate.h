#pragma once

// GRPO rollout generation on one CUDA device: G sampled completions per prompt, like
// model::GroupGenerator (same Completion format, same stop conditions), with the KV cache in
// device memory. Each prompt is prefilled once (batched, through the decoder's layers with the
// existing attention forward) into paged bf16 KV blocks (kernels/cuda/paged_kv.h); its samples
// fork it (the prompt's full blocks are shared, refcounted: common/gpu/paged_plan.h), then every
// live sample decodes one token a step: one GEMM per weight for the whole batch, decode attention
// over pages, sampling on the device (kernels/cuda/sampling.h: Philox per (sample, step), so a
// sample's tokens do not depend on batching). Decode steps run in batch buckets (powers of two);
// with cuda_graphs each bucket's step is captured once (at its second use) and replayed.
// Never run on a GPU yet (docs/gpu.md).

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/gpu/device_kv.h"
#include "common/gpu/device_model.h"
#include "common/gpu/generate_loop.h"
#include "common/gpu/paged_plan.h"
#include "common/model/generate.h"
#include "common/model/sampler.h"
#include "common/model/stored_weights.h"
#include "common/status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/graph.h"
#include "kernels/cuda/paged_kv.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/sampling.h"

namespace tandem::gpu {

struct DeviceGenerateOptions {
    int block_tokens = 16;
    // Capture each decode bucket's step as a CUDA graph (false: every step is launched op by op).
    bool cuda_graphs = true;
    // As model::GeneratorOptions: a completion ends at eos_token or any of stop_tokens.
    int32_t eos_token = 2;
    std::vector<int32_t> stop_tokens;
    // Prompt tokens per prefill forward (whole prompts; a longer prompt goes alone).
    int64_t max_prefill_tokens = 8192;
    std::string job;  // names the job in errors
    // rollout.kv_cache.prefix_tokens: the system-prompt cache (GenerationLoop): the prefix's KV
    // kept in the pool's pages across calls of one weights version, forked by the prompts that
    // start with it. rollout.kv_cache.budget_bytes: > 0, prompts admitted in waves whose
    // worst-case KV bytes fit (model::admission_waves over block_bytes()).
    int64_t prefix_tokens = 0;
    int64_t kv_budget_bytes = 0;
    // rollout.kv_cache's format and compression (model::KvCacheOptions::from_spec): f32 keeps
    // bf16 rows in blocks of block_tokens; bf16, int8 and int4 per token are pages of the CPU
    // engine's format in blocks of kv_cache.block_tokens (the spec's group); compression
    // requantizes old full blocks (common/gpu/kv_pages.h). KIVI dtypes are refused.
    model::KvCacheOptions kv_cache;
    // Key splits of decode attention: 0 chooses from the rows, the context and the SM count
    // (decode_splits); > 0 forces that many (tests).
    int decode_splits = 0;
};

struct DeviceGenerateStats {
    int64_t prompt_tokens = 0;  // prefilled once per prompt
    int64_t generated_tokens = 0;
    int64_t decode_steps = 0;
    int64_t graph_launches = 0;  // decode steps replayed from a captured graph
    int64_t graph_captures = 0;
    std::string graph_note;  // why graphs are off or a capture failed; empty otherwise
    int64_t peak_blocks = 0;
    int64_t kv_pool_bytes = 0;
    int64_t device_peak_bytes = 0;  // the allocator's peak during the call
    // As model::GenerateStats's kv_waves, kv_admission_waits, kv_prefix_hits, kv_prefix_bytes,
    // kv_evictions (GenerationCounts).
    int64_t waves = 1;
    int64_t admission_waits = 0;
    int64_t prefix_hits = 0;
    int64_t prefix_bytes = 0;
    int64_t evictions = 0;
    DeviceKvStats kv;  // format, bytes per block by dtype, compressions, last split count
};

// fp32 values [first, first + count) of the model's flat parameter buffer, at `data` in device
// memory (a trainer's slot opened through CUDA IPC, a fetch_to_device buffer).
struct DeviceF32Piece {
    const float* data = nullptr;
    int64_t first = 0;
    int64_t count = 0;
};

// Owns the device (stream, allocator, GEMM, weights) of one rollout actor. Not thread-safe.
class DeviceGenerator final : private GenerationBackend {
public:
    static Result<std::unique_ptr<DeviceGenerator>> create(const model::ModelConfig& config,
                                                           DeviceGenerateOptions options,
                                                           int device = 0);
    ~DeviceGenerator();
    DeviceGenerator(const DeviceGenerator&) = delete;
    DeviceGenerator& operator=(const DeviceGenerator&) = delete;

    const model::ModelConfig& config() const { return model_->config(); }
    const kernels::cuda::Gemm& gemm() const { return *gemm_; }
    const kernels::cuda::DeviceAllocator& allocator() const { return *alloc_; }

    // Uploads a weights version (the flat buffer of the model's layout, fp32 or as
    // stored_weights.h holds it) as bf16. Waits for the upload.
    Status load(model::WeightView params);
    // Converts a version already in device memory into the bf16 weights with a device kernel on
    // the generator's stream, no host copy. The pieces must cover the flat buffer once, in order.
    // Waits for the conversion, so the pieces may be closed or rewritten when it returns.
    Status load_device(std::span<const DeviceF32Piece> pieces);

    // System-prompt cache (GenerationLoop): the weights version the next calls run with (a new
    // one, or a load, drops the cached prefix) and an explicit prefix (empty: prefix_tokens of
    // each call's first prompt longer than that).
    void set_weights_version(int64_t version) { loop_->set_weights_version(version); }
    void set_system_prompt(std::vector<int32_t> tokens) {
        loop_->set_system_prompt(std::move(tokens));
    }
    const model::PrefixCacheStats& prefix_stats() const { return loop_->prefix_stats(); }
    // Bytes of one KV block of the pool, every layer's keys and values (the budget's unit).
    int64_t block_bytes() const;

    // Samples `group_size` completions of each prompt, ordered by (prompt, sample). Sample g of
    // prompt p draws from the stream sample_stream(options.seed, p, g) (sampling_reference.h).
    Result<std::vector<model::Completion>> generate(std::span<const std::vector<int32_t>> prompts,
                                                    int group_size,
                                                    const model::SamplingOptions& options,
                                                    DeviceGenerateStats* stats = nullptr);

private:
    struct Work;
    // Activation buffers for `rows` rows and sampling outputs for `logit_rows`.
    static Status allocate_work(kernels::cuda::DeviceAllocator& alloc, const model::ModelConfig& c,
                                int64_t rows, int64_t logit_rows, bool lse, Work* w);
    explicit DeviceGenerator(DeviceGenerateOptions options);

    // GenerationBackend (common/gpu/generate_loop.h): the device steps of run_generation.
    // reserve: the pool, the decode workspace and the step layout (captured steps are dropped
    // when any of them is reallocated).
    Result<StepLayout> reserve(int64_t blocks, int64_t max_rows, int width) override;
    Status prefill(const PrefillBatch& batch, std::vector<int32_t>& tokens,
                   std::vector<float>& logprobs) override;
    Status copy_blocks(std::span<const int32_t> pairs) override;
    Status decode(int64_t rows, std::span<const int32_t> step, int64_t live,
                  std::vector<int32_t>& tokens, std::vector<float>& logprobs) override;

    // Where rows attend over pages: their block tables [n, width] and context lengths [n].
    struct PagedRows {
        const int32_t* tables = nullptr;
        int width = 0;
        const int32_t* context_lens = nullptr;
    };
    // The decoder's layers over n rows whose keys and values go to `slots`, then the final norm
    // into w.f; `paged`: each row attends over its pages (a decode step, or prompts continuing
    // the cached prefix), else causal attention within each prompt of `lens` (packed back to
    // back).
    Status layers(Work& w, int64_t n, const int32_t* tokens, const int32_t* positions,
                  const int32_t* slots, const PagedRows* paged, std::span<const int64_t> lens);
    // One decode step of `rows` rows (enqueue only): layers, LM head, sampling.
    Status decode_step(int64_t rows);

    DeviceGenerateOptions options_;
    std::unique_ptr<kernels::cuda::Stream> stream_;
    std::unique_ptr<kernels::cuda::DeviceAllocator> alloc_;
    std::unique_ptr<kernels::cuda::Gemm> gemm_;
    std::unique_ptr<DeviceModel> model_;
    kernels::cuda::DeviceBuffer cos_, sin_;  // RoPE tables [max_seq_len, head_dim / 2] fp32
    std::unique_ptr<DeviceKvPool> kv_;       // the KV cache (stored and compressed pages)
    std::unique_ptr<Work> decode_;  // workspace of the decode step, sized for layout_.max_rows
    StepLayout layout_;
    kernels::cuda::DeviceBuffer step_;  // int32 [layout_.size()]
    kernels::cuda::DeviceSampling sampling_;
    std::map<int64_t, std::unique_ptr<kernels::cuda::CapturedGraph>> graphs_;  // by bucket
    std::map<int64_t, int> bucket_uses_;
    bool graphs_failed_ = false;
    std::string graph_note_;
    int64_t graph_launches_ = 0, graph_captures_ = 0;  // this call's
    std::unique_ptr<GenerationLoop> loop_;
};

}  // namespace tandem::gpu
