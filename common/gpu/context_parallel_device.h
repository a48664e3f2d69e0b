#pragma once

// Context-parallel generation on devices: the device twin of model::ContextParallelGenerator
// (common/model/context_parallel.h) for a rollout group whose context exceeds one device. Each
// rank is one device, driven by one thread of its own process (or of a test), over the ring
// endpoint kernels::make_ring_endpoint chose (NCCL for GPUs of one host, UCX with host staging
// across hosts, an in-process ring for threads).
//
// The schedule is the CPU generator's, rank by rank (SPMD: every rank calls generate() with the
// same arguments):
// - prefill: positions [0, n - 1) of each group's prompt through kernels::DeviceRingAttention
//   (zigzag layout), layer by layer; each rank keeps its K/V rows of every layer;
// - decode: the step's tokens run through every layer replicated on every rank; each rank stores
//   the new K/V rows it owns under model::plan_context_shards, attends the queries to its shard
//   (one call per group's shared rows, one per sample tail, as the CPU generator), and the partials
//   are all-gathered and merged in rank order (kernels::device_allgather_merge_partials);
// - sampling: rank 0 computes the logits and samples with the callers' random streams; the tokens
//   and their log-probs are broadcast around the ring (one all-gather of rank 0's slot), so every
//   rank returns the same completions and no rank depends on the others' rounding.
// The layer arithmetic is behind ContextParallelRankOps (the CUDA one: DeviceModel's ops; the host
// fake on the CPU engine's layers: tests/fakes/host_context_parallel_ops.h), the attention and
// the KV rows behind kernels::RingDeviceOps. With the host fakes the completions equal
// model::ContextParallelGenerator's bitwise (tests/unit/model/context_parallel_device_test.cc).
// KV rows are held at the ring ops' dtype; quantized KV pages (rollout.kv_cache) are refused.

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/model/config.h"
#include "common/model/context_parallel.h"
#include "common/model/generate.h"
#include "common/model/rng.h"
#include "common/model/sampler.h"
#include "common/status.h"
#include "kernels/ring/device_ring.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::gpu {

// One rank's layer arithmetic, enqueued on ring().stream(). Pointers are in ring()'s memory unless
// named host; x is the fp32 residual stream [n, hidden]; q [n, hq, d], k and v [n, hkv, d] are of
// ring().dtype(); o [n, hq, d] fp32. Owned by the rank's thread.
class ContextParallelRankOps {
public:
    virtual ~ContextParallelRankOps() = default;
    virtual kernels::RingDeviceOps& ring() = 0;
    // x := the embedding rows of `tokens` (host).
    virtual Status embed(std::span<const int32_t> tokens, float* x) = 0;
    // Layer `layer`'s input norm, q/k/v projections (biases, Qwen3's q/k norm) and RoPE at the
    // host positions `pos` (pos.size() rows of x).
    virtual Status qkv(int layer, std::span<const int32_t> pos, const float* x, void* q, void* k,
                       void* v) = 0;
    // x += o_proj(o); x += mlp(post_norm(x)) for n rows.
    virtual Status finish_layer(int layer, int64_t n, const float* o, float* x) = 0;
    // host_logits [n, vocab] := lm_head(final_norm(x)); complete when it returns.
    virtual Status logits(int64_t n, const float* x, float* host_logits) = 0;
};

struct DeviceContextParallelOptions {
    kernels::RingLayout layout = kernels::RingLayout::kZigzag;
    std::chrono::milliseconds timeout{60000};  // each wait on a neighbour
};

// One rank of device context-parallel generation. Driven by one thread; the transport and the ops
// must outlive it. Neither copyable nor movable.
class DeviceContextParallelRank {
public:
    // Fails on a transport that moves host memory (wrap it with kernels::make_host_staged_ring)
    // and on a transport whose size or rank disagrees with itself.
    static Result<std::unique_ptr<DeviceContextParallelRank>> create(
        const model::ModelConfig& config, const DeviceContextParallelOptions& options,
        kernels::RingTransport& transport, ContextParallelRankOps& ops);
    ~DeviceContextParallelRank();
    DeviceContextParallelRank(const DeviceContextParallelRank&) = delete;
    DeviceContextParallelRank& operator=(const DeviceContextParallelRank&) = delete;

    int rank() const { return transport_.rank(); }
    int ranks() const { return transport_.size(); }

    // model::ContextParallelGenerator::generate's contract, called by every rank with the same
    // prompts, groups, options and stop ids. rngs are drawn from on rank 0 only; every rank's
    // `out` receives the same tokens and log-probs. Inputs are checked before any collective, so
    // a bad input fails on every rank alike.
    Status generate(std::span<const std::vector<int32_t>> prompts,
                    std::span<const model::ContextParallelGroup> groups,
                    const model::SamplingOptions& options, std::span<const int32_t> stop_ids,
                    std::span<model::Rng> rngs, std::span<model::Completion> out,
                    model::ContextParallelStats* stats);

private:
    struct Piece;  // K/V rows of one layer of one shard piece
    DeviceContextParallelRank(const model::ModelConfig& config,
                              const DeviceContextParallelOptions& options,
                              kernels::RingTransport& transport, ContextParallelRankOps& ops);
    Status prefill(const std::vector<int32_t>& prompt, const model::ContextShardPlan& plan,
                   std::vector<Piece>& shared);
    Status step(std::span<const model::ContextParallelItem> items,
                std::span<const model::ContextShardPlan> plans, float* host_logits);
    // Rank 0's [token, log-prob] pairs to every rank.
    Status broadcast(std::vector<model::SampledToken>& picks);
    // One piece per layer, of `capacity` rows (at least 1) each; `what` names them in errors.
    Result<std::vector<Piece>> new_pieces(int64_t capacity, const char* what);
    Result<float*> scratch(std::shared_ptr<void>& buf, size_t& have, size_t bytes,
                           const char* what);

    const model::ModelConfig config_;
    const DeviceContextParallelOptions options_;
    kernels::RingTransport& transport_;
    ContextParallelRankOps& ops_;
    size_t elem_ = 4;                         // bytes of one q/k/v element (ops.ring().dtype())
    std::vector<std::vector<Piece>> shared_;  // [group][layer]
    std::vector<std::vector<Piece>> tails_;   // [member][layer]
    std::shared_ptr<void> x_, q_, k_, v_, o_, lse_, table_, picks_;
    size_t x_bytes_ = 0, q_bytes_ = 0, k_bytes_ = 0, v_bytes_ = 0, o_bytes_ = 0, lse_bytes_ = 0,
           table_bytes_ = 0, picks_bytes_ = 0;
};

}  // namespace tandem::gpu
