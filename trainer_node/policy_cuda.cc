// The trainer actor's policy on one CUDA device: gpu::DeviceTrainer with its own stream,
// allocator and GEMM on device 0 of the process (the scheduler's CUDA_VISIBLE_DEVICES). The
// masters, AdamW's moments and the step live on the device; checkpoints download them into the
// CPU trainer's format; publishing copies the fp32 masters straight from device memory into the
// publisher's pinned slot (weights::Publisher::publish_from_device through a DeviceStaging on the
// actor's own stream, so the copies follow the optimizer's kernels), never through a host model.
#include <fmt/format.h>

#include "common/gpu/device_trainer.h"
#include "common/weights/device_staging.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runtime.h"
#include "trainer_node/policy.h"

namespace tandem::trainer {

namespace {

namespace cuda = kernels::cuda;

constexpr int kDevice = 0;  // the first of the actor's CUDA_VISIBLE_DEVICES

class CudaPolicy final : public Policy {
public:
    CudaPolicy(const model::ModelWeights& initial, const model::TrainerOptions& options)
        : layout_(initial.layout()), options_(options) {}
    ~CudaPolicy() override {
        // The trainer's buffers go back to the allocator, which goes before its stream.
        trainer_.reset();
        gemm_.reset();
        alloc_.reset();
        staging_.reset();
        stream_.reset();
    }

    Status init(const model::ModelWeights& initial) {
        TANDEM_ASSIGN_OR_RETURN(stream_, cuda::Stream::create(kDevice));
        TANDEM_ASSIGN_OR_RETURN(alloc_, cuda::DeviceAllocator::create(kDevice));
        TANDEM_ASSIGN_OR_RETURN(gemm_, cuda::Gemm::create(*alloc_));
        TANDEM_ASSIGN_OR_RETURN(
            trainer_, gpu::DeviceTrainer::create(initial, options_, *alloc_, *gemm_, *stream_));
        if (trainer_->master_bytes() != layout_.total_bytes()) {
            return internal_error(fmt::format(
                "the trainer on cuda: the device masters hold {} bytes, the weight layout {}",
                trainer_->master_bytes(), layout_.total_bytes()));
        }
        return Status();
    }

    const char* device() const override { return "cuda"; }
    Result<model::TrainStats> step(std::span<const model::Trajectory> batch) override {
        return trainer_->step(*stream_, batch);
    }
    Result<model::TrainStats> supervised_step(std::span<const model::Trajectory> batch) override {
        return trainer_->supervised_step(*stream_, batch);
    }
    Result<model::ModelWeights> weights() const override {
        TANDEM_ASSIGN_OR_RETURN(model::ModelWeights w,
                                model::ModelWeights::zeros(trainer_->config()));
        TANDEM_RETURN_IF_ERROR(trainer_->download_weights(*stream_, w.data()));
        return w;
    }
    const weights::Layout& layout() const override { return layout_; }
    Status publish(weights::Publisher& publisher, Version version) override {
        if (!staging_) {
            TANDEM_ASSIGN_OR_RETURN(
                staging_, weights::DeviceStaging::create_on_stream(kDevice, stream_->handle()));
        }
        // The chunk copies into the pinned slot are enqueued on the actor's stream, after the
        // optimizer's kernels that wrote the masters: no synchronisation of the stream first.
        // The publisher waits for each chunk's copy (to checksum it) and for the last before it
        // returns, so the next step's kernels cannot overwrite masters still being copied.
        const auto* masters = static_cast<const std::byte*>(trainer_->master_device());
        return publisher.publish_from_device(version, masters + publisher.shard_range().begin,
                                             *staging_);
    }
    Result<std::string> save_checkpoint(const std::string& root, const model::TrainerState& state,
                                        const model::Vocabulary* vocab) override {
        return trainer_->save_checkpoint(*stream_, root, state, vocab, options_.side_files_from);
    }
    Result<model::TrainerState> restore(const std::string& path) override {
        return trainer_->restore(*stream_, path);
    }

private:
    weights::Layout layout_;
    model::TrainerOptions options_;
    std::unique_ptr<cuda::Stream> stream_;
    std::unique_ptr<cuda::DeviceAllocator> alloc_;
    std::unique_ptr<cuda::Gemm> gemm_;
    std::unique_ptr<gpu::DeviceTrainer> trainer_;
    // On stream_, made at the first publish; goes before stream_.
    std::unique_ptr<weights::DeviceStaging> staging_;
};

}  // namespace

Result<std::unique_ptr<Policy>> make_cuda_policy(const model::ModelWeights& initial,
                                                 const model::TrainerOptions& options) {
    auto p = std::make_unique<CudaPolicy>(initial, options);
    if (Status st = p->init(initial); !st.ok()) {
        return Status(st.code(), "the trainer on cuda: " + st.message());
    }
    return std::unique_ptr<Policy>(std::move(p));
}

}  // namespace tandem::trainer
