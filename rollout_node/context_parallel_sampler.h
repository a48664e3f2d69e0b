#pragma once

// rollout.device: cuda with rollout.context_parallel > 1: the device twin of model::GroupGenerator
// with a ContextParallelGenerator inside. A batch's prompts whose context fits
// rollout.max_tokens_per_device go to the single-device sampler (gpu::DeviceGenerator on rank 0's
// GPU); the longer ones to the P ranks of gpu::DeviceContextParallelRank, one thread per rank, all
// called with the same prompts, groups and options (SPMD). Rank 0's completions are returned
// (every rank holds the same: rank 0 samples and broadcasts); the others are checked against
// them. Sharded samples draw from the CPU generator's random streams (mix_seed(seed, prompt,
// sample)), the single-device ones as gpu::DeviceGenerator draws. A weights version arrives once,
// in device memory of rank 0's GPU (DeviceRolloutWeights); load_device converts it into the
// single-device generator and rank 0, then every other rank copies rank 0's weights. A failed
// collective leaves the ring unusable: every later call returns that error. Owned by the rollout's
// generation thread; not thread-safe.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/gpu/context_parallel_device.h"
#include "rollout_node/completion_sampler.h"
#include "rollout_node/device_weights.h"

namespace tandem::rollout {

// The P ranks: the CUDA ones (context_parallel_cuda.cc), host fakes in tests. Each method taking
// `r` is called on rank r's thread only, every rank's thread at once for generate and copy.
class ContextParallelRanks {
public:
    virtual ~ContextParallelRanks() = default;
    virtual int size() const = 0;
    // First call of each rank thread (CUDA: select the rank's device on the calling thread).
    virtual Status enter(int r) = 0;
    virtual gpu::DeviceContextParallelRank& rank(int r) = 0;
    // Rank 0's weights := the version's fp32 pieces (device memory of rank 0's GPU, checked by
    // check_device_pieces); returns once done.
    virtual Status load_first(std::span<const DevicePiece> pieces) = 0;
    // Rank r's weights (r >= 1) := rank 0's; returns once done.
    virtual Status copy_from_first(int r) = 0;
};

struct ContextParallelSamplerOptions {
    int64_t max_tokens_per_device = 0;  // rollout.max_tokens_per_device
    // The CPU generator's stop ids: a completion ends at eos_token or any of stop_tokens.
    int32_t eos_token = 2;
    std::vector<int32_t> stop_tokens;
    uint64_t total_bytes = 0;  // the layout's fp32 bytes (pieces are checked against it)
    // fp32 K and V bytes of one position over all layers (2 x layers x kv_dim x 4): the
    // kv_compression statistic is the shards' bytes per position against it.
    int64_t kv_f32_bytes_per_token = 0;
    std::string job;  // names the job in errors
};

// `single` must take device weights (device_weights() not null) on rank 0's GPU.
Result<std::unique_ptr<CompletionSampler>> make_context_parallel_sampler(
    std::unique_ptr<CompletionSampler> single, std::unique_ptr<ContextParallelRanks> ranks,
    ContextParallelSamplerOptions options);

struct ContextParallelPlan;  // rollout_node/context_parallel_plan.h

// The CUDA sampler for `plan`: rank r a thread on CUDA device plan.ranks[r].cuda_device with its
// stream, allocator, GEMM and gpu::DeviceModel, the ring made by kernels::make_ring_endpoint from
// the placements (collective over an in-process bootstrap), gpu::DeviceGenerator on rank 0's GPU
// for the contexts that fit one device. unavailable in a build without CUDA.
Result<std::unique_ptr<CompletionSampler>> make_cuda_context_parallel_sampler(
    const model::ModelConfig& config, const model::GeneratorOptions& options,
    const config::JobSpec& job, const ContextParallelPlan& plan);

// Whether the ring endpoint of this build has NCCL (kernels::ring_nccl_built; false without CUDA).
bool context_parallel_nccl_built();

// Runs fn(r) for r in [0, ranks) on a thread each; once every thread has returned, OK or the
// failures of every failing rank ("rank 1: ...; rank 0: ...") with the first one's code.
Status run_on_ranks(int ranks, const std::function<Status(int)>& fn);

}  // namespace tandem::rollout
