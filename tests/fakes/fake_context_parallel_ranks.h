#pragma once

// Host fakes for the rollout's context-parallel sampler (rollout_node/context_parallel_sampler.h):
// FakeContextParallelRanks, P ranks of gpu::DeviceContextParallelRank over the host layer and ring
// fakes (host_context_parallel_ops.h) and an in-process ring that claims device memory, each
// rank's weights a host buffer; and FakeSingleSampler, the single-device sampler as the CPU
// engine (model::GroupGenerator without context parallelism) taking "device" pieces in host
// memory. With them the sampler's completions can be compared bitwise with model::GroupGenerator
// with context parallelism on the CPU. Test-only code.

#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "common/gpu/context_parallel_device.h"
#include "common/model/generate.h"
#include "common/model/params.h"
#include "kernels/ring/in_process_transport.h"
#include "rollout_node/context_parallel_sampler.h"
#include "tests/fakes/host_context_parallel_ops.h"

namespace tandem::rollout::fakes {

class FakeContextParallelRanks final : public ContextParallelRanks {
public:
    // Fails the test's way (a status) when the ranks cannot be made.
    static Result<std::unique_ptr<FakeContextParallelRanks>> create(
        const model::ModelConfig& config, int ranks, std::chrono::milliseconds timeout) {
        auto f = std::unique_ptr<FakeContextParallelRanks>(new FakeContextParallelRanks());
        TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, model::make_param_layout(config));
        TANDEM_ASSIGN_OR_RETURN(model::ParamIndex index, model::ParamIndex::create(config, layout));
        f->index_ = std::make_unique<model::ParamIndex>(std::move(index));
        kernels::InProcessRingOptions claim;
        claim.memory = kernels::RingMemory::kCuda;
        claim.name = "in_process_device_fake";
        claim.order_timeout = timeout;
        f->transports_ = kernels::make_in_process_ring(ranks, claim);
        gpu::DeviceContextParallelOptions o;
        o.timeout = timeout;
        for (int r = 0; r < ranks; ++r) {
            auto& w = f->weights_.emplace_back(
                std::make_unique<std::vector<float>>(layout.total_bytes() / 4, 0.0f));
            f->ops_.push_back(std::make_unique<gpu::fakes::HostContextParallelOps>(
                config, *f->index_, w->data(), r));
            TANDEM_ASSIGN_OR_RETURN(
                auto rank,
                gpu::DeviceContextParallelRank::create(
                    config, o, *f->transports_[static_cast<size_t>(r)], *f->ops_.back()));
            f->ranks_.push_back(std::move(rank));
        }
        f->entered_ = std::vector<std::atomic<int>>(static_cast<size_t>(ranks));
        return f;
    }

    int size() const override { return static_cast<int>(ranks_.size()); }
    Status enter(int r) override {
        entered_[static_cast<size_t>(r)].fetch_add(1);
        if (fail_enter) return unavailable("fake: rank " + std::to_string(r) + " has no device");
        return Status();
    }
    gpu::DeviceContextParallelRank& rank(int r) override { return *ranks_[static_cast<size_t>(r)]; }
    Status load_first(std::span<const DevicePiece> pieces) override {
        ++first_loads;
        std::vector<float>& w = *weights_[0];
        for (const DevicePiece& p : pieces) {
            std::memcpy(reinterpret_cast<char*>(w.data()) + p.offset, p.data, p.bytes);
        }
        return Status();
    }
    Status copy_from_first(int r) override {
        if (r < 1) return internal_error("fake: copy_from_first called for rank 0");
        if (r == fail_copy)
            return unavailable("fake: copy to rank " + std::to_string(r) + " failed");
        copies.fetch_add(1);
        *weights_[static_cast<size_t>(r)] = *weights_[0];
        return Status();
    }

    const std::vector<float>& weights(int r) const { return *weights_[static_cast<size_t>(r)]; }
    int entered(int r) const { return entered_[static_cast<size_t>(r)].load(); }
    int logits_calls(int r) const { return ops_[static_cast<size_t>(r)]->logits_calls(); }

    bool fail_enter = false;  // every enter() fails
    int fail_copy = -1;       // copy_from_first fails for this rank
    int first_loads = 0;
    std::atomic<int> copies{0};

private:
    FakeContextParallelRanks() = default;
    std::unique_ptr<model::ParamIndex> index_;
    std::vector<std::unique_ptr<kernels::RingTransport>> transports_;
    std::vector<std::unique_ptr<std::vector<float>>> weights_;
    std::vector<std::unique_ptr<gpu::fakes::HostContextParallelOps>> ops_;
    std::vector<std::unique_ptr<gpu::DeviceContextParallelRank>> ranks_;
    std::vector<std::atomic<int>> entered_;
};

// The single-device sampler on the CPU engine; its "device" weights are host pieces.
class FakeSingleSampler final : public CompletionSampler, public DeviceWeightSink {
public:
    FakeSingleSampler(model::GroupGenerator gen, uint64_t total_bytes)
        : gen_(std::move(gen)), weights_(total_bytes / 4, 0.0f) {}
    const char* device() const override { return "cuda"; }
    DeviceWeightSink* device_weights() override { return this; }
    Status load_device(Version version, std::span<const DevicePiece> pieces) override {
        for (const DevicePiece& p : pieces) {
            std::memcpy(reinterpret_cast<char*>(weights_.data()) + p.offset, p.data, p.bytes);
        }
        loaded_ = static_cast<int64_t>(version);
        return Status();
    }
    Result<std::vector<model::Completion>> generate(const float*, int64_t version,
                                                    std::span<const std::vector<int32_t>> prompts,
                                                    int group_size,
                                                    const model::SamplingOptions& options,
                                                    model::GenerateStats* stats) override {
        if (version != loaded_) return internal_error("fake single sampler: wrong version");
        ++calls;
        prompts_seen += static_cast<int>(prompts.size());
        return gen_.generate(weights_.data(), prompts, group_size, options, stats);
    }
    int calls = 0;
    int prompts_seen = 0;

private:
    model::GroupGenerator gen_;
    std::vector<float> weights_;
    int64_t loaded_ = -1;
};

}  // namespace tandem::rollout::fakes
