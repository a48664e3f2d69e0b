#pragma once

// The host side of one device generate call, over a backend that runs the device steps: checks
// the call, sizes the KV pool, prefills whole prompts in chunks, forks each prompt into its
// samples, then decodes every live sample one token a step in the smallest bucket of rows that
// holds them, ending samples at a stop id or max_new_tokens (model::GroupGenerator's rules).
// gpu::DeviceGenerator is the CUDA backend; tests/fakes/fake_generation_backend.h a host one that
// checks every page a step reads, so CI tests this loop without a device.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/gpu/paged_plan.h"
#include "common/model/config.h"
#include "common/model/generate.h"
#include "common/model/sampler.h"
#include "common/status.h"

namespace tandem::gpu {

// Prompts prefilled together: their rows packed back to back, each row's KV slot, and the
// first token of each of their samples (sample b of the batch reads prompt b / group's last row).
struct PrefillBatch {
    std::vector<int32_t> tokens, positions, slots;  // [rows]
    std::vector<int64_t> lens;                      // rows of each prompt
    int group = 1;
    std::vector<uint64_t> streams;  // [prompts x group]: sample_stream(seed, prompt, sample)
};

// The device steps. Every call returns its results on the host (it waits for the device).
class GenerationBackend {
public:
    virtual ~GenerationBackend() = default;
    // A pool of at least `blocks` KV blocks (block 0 included) and decode buffers for
    // `max_rows` rows with block tables `width` wide; the layout the step inputs follow.
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
};

struct GenerationCounts {
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;
    int64_t decode_steps = 0;
    int64_t peak_blocks = 0;
    std::vector<int64_t> bucket_steps;  // decode steps run at each bucket size, by size
};

// Checks the call (naming the job, prompt, token or field), then runs it on `backend`.
Result<std::vector<model::Completion>> run_generation(
    GenerationBackend& backend, const model::ModelConfig& config,
    const GenerationLoopOptions& options, std::span<const std::vector<int32_t>> prompts,
    int group_size, const model::SamplingOptions& sampling, GenerationCounts* counts = nullptr);

}  // namespace tandem::gpu
