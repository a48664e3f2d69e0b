// rollout.device: cuda with rollout.context_parallel > 1: the CUDA ranks of the context-parallel
// sampler (context_parallel_sampler.h), one thread per rank on its own device.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "common/gpu/context_parallel_cuda.h"
#include "common/gpu/device_model.h"
#include "common/model/params.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/ring/bootstrap.h"
#include "kernels/ring/ring_endpoint.h"
#include "rollout_node/context_parallel_plan.h"
#include "rollout_node/context_parallel_sampler.h"

namespace tandem::rollout {

namespace {

namespace kc = kernels::cuda;

// One rank's device state, created and used on the rank's thread (members in destruction order:
// the rank before its transport, the transport before the ops it stages through).
struct CudaRank {
    int device = 0;
    std::unique_ptr<kc::Stream> stream;
    std::unique_ptr<kc::DeviceAllocator> alloc;
    std::unique_ptr<kc::Gemm> gemm;
    std::unique_ptr<gpu::DeviceModel> model;
    std::unique_ptr<gpu::ContextParallelRankOps> ops;
    std::unique_ptr<kernels::RingBootstrap> bootstrap;
    std::unique_ptr<kernels::RingEndpoint> endpoint;
    std::unique_ptr<gpu::DeviceContextParallelRank> rank;
};

Status select_device(int device) {
    const cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) {
        return kc::cuda_status(err, fmt::format("cudaSetDevice({})", device));
    }
    return Status();
}

class CudaRanks final : public ContextParallelRanks {
public:
    explicit CudaRanks(int ranks) {
        for (int r = 0; r < ranks; ++r) ranks_.push_back(std::make_unique<CudaRank>());
    }
    // Each rank's state goes on its own thread with its device selected (the NCCL communicator,
    // streams and buffers of device r are released where they were made).
    ~CudaRanks() override {
        const Status s = run_on_ranks(size(), [this](int r) {
            (void)select_device(ranks_[static_cast<size_t>(r)]->device);
            ranks_[static_cast<size_t>(r)].reset();
            return Status();
        });
        (void)s;
    }

    // Collective: every rank's thread at once (make_ring_endpoint all-gathers the placements).
    Status create_rank(int r, const model::ModelConfig& config, const ContextParallelPlan& plan,
                       std::unique_ptr<kernels::RingBootstrap> bootstrap) {
        CudaRank& k = *ranks_[static_cast<size_t>(r)];
        const ContextParallelRankPlan& p = plan.ranks[static_cast<size_t>(r)];
        k.device = p.cuda_device;
        k.bootstrap = std::move(bootstrap);
        TANDEM_RETURN_IF_ERROR(select_device(k.device));
        TANDEM_ASSIGN_OR_RETURN(k.stream, kc::Stream::create(k.device));
        TANDEM_ASSIGN_OR_RETURN(k.alloc, kc::DeviceAllocator::create(k.device));
        TANDEM_ASSIGN_OR_RETURN(k.gemm, kc::Gemm::create(*k.alloc));
        TANDEM_ASSIGN_OR_RETURN(k.model,
                                gpu::DeviceModel::create(config, *k.alloc, *k.gemm, *k.stream));
        TANDEM_ASSIGN_OR_RETURN(
            k.ops, gpu::make_cuda_context_parallel_ops(*k.model, *k.alloc, *k.gemm, *k.stream));
        kernels::RingEndpointOptions eo;
        eo.placement = p.placement;
        eo.cuda_device = k.device;
        // nccl_stream left null: NCCL shifts on a stream of the transport's own, ordered against
        // the rank's stream by events (order_after / order_before), so the next block travels
        // while this one is attended, as the device ring's own tests run it.
        eo.ops = &k.ops->ring();
        TANDEM_ASSIGN_OR_RETURN(k.endpoint, kernels::make_ring_endpoint(*k.bootstrap, eo));
        TANDEM_ASSIGN_OR_RETURN(k.rank, gpu::DeviceContextParallelRank::create(
                                            config, {}, k.endpoint->transport(), *k.ops));
        return Status();
    }

    int size() const override { return static_cast<int>(ranks_.size()); }
    Status enter(int r) override { return select_device(ranks_[static_cast<size_t>(r)]->device); }
    gpu::DeviceContextParallelRank& rank(int r) override {
        return *ranks_[static_cast<size_t>(r)]->rank;
    }

    Status load_first(std::span<const DevicePiece> pieces) override {
        CudaRank& k = *ranks_[0];
        kc::Bf16* out = k.model->weights_bf16();
        for (const DevicePiece& p : pieces) {
            TANDEM_RETURN_IF_ERROR(kc::to_bf16(*k.stream, static_cast<int64_t>(p.bytes / 4),
                                               static_cast<const float*>(p.data),
                                               out + p.offset / 4));
        }
        TANDEM_RETURN_IF_ERROR(k.stream->synchronize("context parallel rank 0 weights"));
        k.model->set_loaded();
        return Status();
    }

    // Device to device (through the host where the GPUs have no peer access); rank 0's weights
    // are complete (load_first returned) and not written while this runs.
    Status copy_from_first(int r) override {
        CudaRank& k = *ranks_[static_cast<size_t>(r)];
        const CudaRank& first = *ranks_[0];
        const size_t bytes = static_cast<size_t>(k.model->index().elements) * sizeof(kc::Bf16);
        const cudaError_t err =
            cudaMemcpyPeerAsync(k.model->weights_bf16(), k.device, first.model->weights_bf16(),
                                first.device, bytes, static_cast<cudaStream_t>(k.stream->handle()));
        if (err != cudaSuccess) {
            return kc::cuda_status(err, fmt::format("cudaMemcpyPeerAsync of the weights from "
                                                    "device {} to device {}",
                                                    first.device, k.device));
        }
        TANDEM_RETURN_IF_ERROR(k.stream->synchronize("context parallel weights copy"));
        k.model->set_loaded();
        return Status();
    }

private:
    std::vector<std::unique_ptr<CudaRank>> ranks_;
};

}  // namespace

bool context_parallel_nccl_built() { return kernels::ring_nccl_built(); }

Result<std::unique_ptr<CompletionSampler>> make_cuda_context_parallel_sampler(
    const model::ModelConfig& config, const model::GeneratorOptions& options,
    const config::JobSpec& job, const ContextParallelPlan& plan) {
    const int P = static_cast<int>(plan.ranks.size());
    if (P < 1)
        return invalid_argument(fmt::format("job {}: context parallel plan has no rank", job.name));
    // The single-device generator on rank 0's GPU (make_cuda_sampler takes the current device 0).
    if (plan.ranks[0].cuda_device != 0) {
        return invalid_argument(
            fmt::format("job {}: context parallel rank 0 must be on CUDA "
                        "device 0, not {}",
                        job.name, plan.ranks[0].cuda_device));
    }
    TANDEM_ASSIGN_OR_RETURN(auto single, make_cuda_sampler(config, options, job));
    auto ranks = std::make_unique<CudaRanks>(P);
    auto bootstraps = kernels::make_in_process_bootstrap(P);
    TANDEM_RETURN_IF_ERROR(
        run_on_ranks(P,
                     [&](int r) {
                         return ranks->create_rank(r, config, plan,
                                                   std::move(bootstraps[static_cast<size_t>(r)]));
                     })
            .with_context(fmt::format("job {}: creating the context-parallel ranks ({})", job.name,
                                      plan.describe())));
    ContextParallelSamplerOptions o;
    o.max_tokens_per_device = options.max_tokens_per_device;
    o.eos_token = options.eos_token;
    o.stop_tokens = options.stop_tokens;
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, model::make_param_layout(config));
    o.total_bytes = layout.total_bytes();
    o.kv_f32_bytes_per_token = int64_t{2} * config.num_layers * config.kv_dim() * 4;
    o.job = job.name;
    return make_context_parallel_sampler(std::move(single), std::move(ranks), std::move(o));
}

}  // namespace tandem::rollout
