#pragma once

// What the built-in rollout generates with, on the device rollout.device resolved to: the CPU
// engine (model::GroupGenerator) or one CUDA device (gpu::DeviceGenerator,
// completion_sampler_cuda.cc; a build without CUDA has completion_sampler_no_cuda.cc). Same
// prompts in, same Completion format out (tokens, behaviour log-probs, finished), same stop ids.
// Owned by the rollout's generation thread; not thread-safe.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/config/job_spec.h"
#include "common/gpu/device_choice.h"
#include "common/model/generate.h"
#include "common/status.h"

namespace tandem::rollout {

class DeviceWeightSink;

class CompletionSampler {
public:
    virtual ~CompletionSampler() = default;
    // "cpu" or "cuda".
    virtual const char* device() const = 0;
    // group_size completions of each prompt with the weights of `version`: on the CPU those in
    // `params` (the reader's buffer: the flat fp32 layout); on the device those device_weights()
    // was loaded with (params unused, may be null; another version is an error). Stats as
    // model::GroupGenerator fills them (the device fills tokens, steps and its KV pool's peak).
    virtual Result<std::vector<model::Completion>> generate(
        const float* params, int64_t version, std::span<const std::vector<int32_t>> prompts,
        int group_size, const model::SamplingOptions& options, model::GenerateStats* stats) = 0;
    // Where device weights go (rollout_node/device_weights.h): the cuda sampler's generator;
    // null on the CPU.
    virtual DeviceWeightSink* device_weights() { return nullptr; }
};

std::unique_ptr<CompletionSampler> make_cpu_sampler(model::GroupGenerator gen);
// On CUDA device 0 of the process (the first of its CUDA_VISIBLE_DEVICES), with the job's
// stop ids (options.eos_token, options.stop_tokens). unavailable in a build without CUDA.
Result<std::unique_ptr<CompletionSampler>> make_cuda_sampler(const model::ModelConfig& config,
                                                             const model::GeneratorOptions& options,
                                                             const config::JobSpec& job);

// The rollout settings the device generator does not have (its KV cache is bf16 pages sized for
// the whole batch): "rollout.kv_cache.dtype int8" and the like, empty when it runs the job as is.
std::string cuda_generation_unsupported(const config::JobSpec& job);

// rollout.device resolved by gpu::resolve_device, then: auto falls back to cpu when the job uses
// a setting cuda_generation_unsupported names (the reason says which); cuda asked explicitly
// with such a setting is an invalid_argument naming the job and both fields.
Result<gpu::DeviceChoice> rollout_device(const config::JobSpec& job, const gpu::DeviceFacts& facts,
                                         std::string_view job_name);

}  // namespace tandem::rollout
