// DeviceTrainer's checkpoints: the CPU trainer's format (common/model/checkpoint.h), so either
// trainer resumes the other's. The masters and AdamW's moments are downloaded into host copies
// and written by model::save_checkpoint; restore reads with model::load_checkpoint and uploads.
#include <fmt/format.h>

#include "common/gpu/device_trainer.h"
#include "common/model/optimizer.h"
#include "kernels/cuda/ops.h"

namespace tandem::gpu {

using kernels::cuda::Stream;
namespace ops = kernels::cuda;

Result<std::string> DeviceTrainer::save_checkpoint(const Stream& s, const std::string& root,
                                                   const model::TrainerState& state,
                                                   const model::Vocabulary* vocab,
                                                   const std::string& side_files_from) const {
    TANDEM_ASSIGN_OR_RETURN(model::ModelWeights w, model::ModelWeights::zeros(config()));
    const size_t elements = static_cast<size_t>(index().elements);
    if (static_cast<size_t>(w.elements()) != elements) {
        return internal_error(
            fmt::format("device trainer checkpoint: the host model holds {} values, the device {}",
                        w.elements(), elements));
    }
    model::AdamW optimizer(options_.algorithm.optimizer, w.index(), total_updates_);
    TANDEM_RETURN_IF_ERROR(download_weights(s, w.data()));
    TANDEM_RETURN_IF_ERROR(
        download_moments(s, optimizer.exp_avg().data(), optimizer.exp_avg_sq().data()));
    optimizer.set_steps_taken(updates_);
    return model::save_checkpoint(root, state, w, vocab, optimizer, side_files_from);
}

Result<model::TrainerState> DeviceTrainer::restore(const Stream& s, const std::string& path) {
    TANDEM_ASSIGN_OR_RETURN(model::LoadedCheckpoint ck, model::load_checkpoint(path));
    if (!(ck.model.weights.config() == config())) {
        return invalid_argument(
            fmt::format("{}: the checkpoint's model config differs from the job's", path));
    }
    const size_t elements = static_cast<size_t>(index().elements);
    if (static_cast<size_t>(ck.model.weights.elements()) != elements ||
        ck.exp_avg.size() != elements || ck.exp_avg_sq.size() != elements) {
        return data_loss(fmt::format(
            "{}: {} weights, {} and {} optimizer moments; the model has {} parameters", path,
            ck.model.weights.elements(), ck.exp_avg.size(), ck.exp_avg_sq.size(), elements));
    }
    const size_t bytes = elements * sizeof(float);
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, master_.as(), ck.model.weights.data(), bytes));
    TANDEM_RETURN_IF_ERROR(policy_->load(s, ck.model.weights.data()));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, m_.as(), ck.exp_avg.data(), bytes));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, v_.as(), ck.exp_avg_sq.data(), bytes));
    // The host buffers are pageable and go out of scope: wait for the copies.
    TANDEM_RETURN_IF_ERROR(s.synchronize("device trainer restore"));
    updates_ = ck.optimizer_steps;
    steps_ = ck.state.step;
    return ck.state;
}

}  // namespace tandem::gpu
