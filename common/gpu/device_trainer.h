#pragma once

// The GRPO trainer's step on one CUDA device: the same step as model::GrpoTrainer::step (packing,
// advantages, clipped-ratio loss with dual clip and the optional k3 KL term through
// common/model/grpo_batch.h, mini-batches and micro-batches), with the forward and backward of
// gpu::DeviceModel and AdamW on fp32 master weights in device memory (global-norm clipping read
// on the device, the bf16 compute copy rewritten in the same pass). The loss weights are formed
// on the host from the log-probs the forward returns (a few bytes per token). Results match the
// CPU trainer up to bf16 rounding; tests/gpu/train_cuda_test.cc states the tolerances.
// Supervised steps (the warm start) as model::GrpoTrainer::supervised_step. Checkpoints are the
// CPU trainer's format (device_checkpoint.cc): a CPU trainer resumes a device checkpoint and the
// other way round (tests/gpu/trainer_device_cuda_test.cc).

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "common/gpu/device_model.h"
#include "common/model/checkpoint.h"
#include "common/model/grpo.h"
#include "common/model/model_weights.h"
#include "common/model/trainer.h"
#include "common/status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runtime.h"

namespace tandem::gpu {

// Owns the policy (and, with a KL term, the reference) on the device, the fp32 masters, their
// gradients and AdamW's moments. Every method takes the actor's stream; step() and the downloads
// wait for it. Not thread-safe: one trainer actor thread drives it; the allocator and gemm must
// outlive it.
class DeviceTrainer {
public:
    // `initial` is the version-0 policy and the KL reference, as for model::GrpoTrainer.
    static Result<std::unique_ptr<DeviceTrainer>> create(const model::ModelWeights& initial,
                                                         const model::TrainerOptions& options,
                                                         kernels::cuda::DeviceAllocator& alloc,
                                                         kernels::cuda::Gemm& gemm,
                                                         const kernels::cuda::Stream& s);
    ~DeviceTrainer();
    DeviceTrainer(const DeviceTrainer&) = delete;
    DeviceTrainer& operator=(const DeviceTrainer&) = delete;

    // One training step on `batch` (whole groups), as model::GrpoTrainer::step.
    Result<model::TrainStats> step(const kernels::cuda::Stream& s,
                                   std::span<const model::Trajectory> batch);

    // One supervised update on `batch` (warm start), as model::GrpoTrainer::supervised_step:
    // the token-mean negative log-likelihood of the completions. Counts as a training step.
    Result<model::TrainStats> supervised_step(const kernels::cuda::Stream& s,
                                              std::span<const model::Trajectory> batch);

    // <root>/step-NNNNNNNN/ in model::save_checkpoint's format: the masters, AdamW's moments and
    // its step count downloaded (device_checkpoint.cc). Waits for the stream; needs host memory
    // for three copies of the parameters while it writes.
    Result<std::string> save_checkpoint(const kernels::cuda::Stream& s, const std::string& root,
                                        const model::TrainerState& state,
                                        const model::Vocabulary* vocab,
                                        const std::string& side_files_from = "") const;
    // Uploads a checkpoint (written by this class or by model::GrpoTrainer): masters, the bf16
    // copy, moments, AdamW's step, steps_taken(); the KL reference stays the initial policy, as
    // on the CPU. Its config must be this model's. Waits for the stream.
    Result<model::TrainerState> restore(const kernels::cuda::Stream& s, const std::string& path);

    // The fp32 master weights (index().elements values) into host memory. Waits for the stream.
    Status download_weights(const kernels::cuda::Stream& s, float* out) const;
    // The gradients of the last optimizer update, before clipping (the CPU trainer clips its
    // buffer in place; the device never modifies it). Waits for the stream.
    Status download_gradients(const kernels::cuda::Stream& s, float* out) const;

    // AdamW's first and second moments (index().elements values each). Waits for the stream.
    Status download_moments(const kernels::cuda::Stream& s, float* exp_avg,
                            float* exp_avg_sq) const;

    // The fp32 masters in device memory, laid out as the CPU engine's flat buffer (the weight
    // layout's bytes): what the trainer publishes. Valid until the next step on the stream.
    const void* master_device() const { return master_.as(); }
    size_t master_bytes() const { return master_.bytes(); }

    const model::ParamIndex& index() const { return policy_->index(); }
    const model::ModelConfig& config() const { return policy_->config(); }
    int64_t steps_taken() const { return steps_; }
    int64_t optimizer_steps() const { return updates_; }
    DeviceModel& policy() { return *policy_; }

private:
    DeviceTrainer(const model::TrainerOptions& options, kernels::cuda::DeviceAllocator& alloc)
        : options_(options), alloc_(alloc) {}
    // One AdamW update from grads_; returns the global gradient norm and the learning rate.
    Result<std::pair<double, double>> update(const kernels::cuda::Stream& s);

    model::TrainerOptions options_;
    model::GrpoOptions grpo_;
    kernels::cuda::DeviceAllocator& alloc_;
    std::unique_ptr<DeviceModel> policy_, reference_;
    kernels::cuda::DeviceBuffer master_, grads_, m_, v_;  // fp32 [elements]
    kernels::cuda::DeviceBuffer sum_sq_;                  // fp64 [1]
    // [begin, end) element ranges with and without weight decay (2-D weights / the rest).
    std::vector<std::pair<uint64_t, uint64_t>> decay_ranges_, plain_ranges_;
    int64_t total_updates_ = 1;
    int64_t updates_ = 0;  // optimizer updates taken (AdamW's t)
    int64_t steps_ = 0;
    model::PackedBatch packed_;
    std::vector<float> logp_, entropy_, ref_logp_, weight_;
    std::vector<int64_t> completion_begin_;
};

}  // namespace tandem::gpu
