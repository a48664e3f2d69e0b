#pragma once

// What the built-in trainer actor trains, on the device trainer.device resolved to
// (gpu::resolve_device): the CPU engine (model::GrpoTrainer) or one CUDA device
// (gpu::DeviceTrainer, policy_cuda.cc; a build without CUDA has policy_no_cuda.cc). Same inputs,
// same TrainStats, same checkpoint format, so a job resumes on either device from the other's
// checkpoint. Publishing takes the weights from where they live: the CPU buffer, or device
// memory copied into the publisher's pinned slot (weights::Publisher::publish_from_device).
// Owned by the trainer thread; not thread-safe.

#include <memory>
#include <span>
#include <string>

#include "common/ids.h"
#include "common/model/checkpoint.h"
#include "common/model/model_weights.h"
#include "common/model/trainer.h"
#include "common/status.h"
#include "common/weights/layout.h"
#include "common/weights/publisher.h"

namespace tandem::trainer {

class Policy {
public:
    virtual ~Policy() = default;
    // "cpu" or "cuda".
    virtual const char* device() const = 0;
    // One GRPO step, as model::GrpoTrainer::step.
    virtual Result<model::TrainStats> step(std::span<const model::Trajectory> batch) = 0;
    // One supervised update (the warm start), as model::GrpoTrainer::supervised_step.
    virtual Result<model::TrainStats> supervised_step(std::span<const model::Trajectory> batch) = 0;
    // The current weights on the host (the warm start hands them to the RL policy).
    virtual Result<model::ModelWeights> weights() const = 0;
    // The layout of the published bytes (the CPU engine's flat fp32 buffer on both devices).
    virtual const weights::Layout& layout() const = 0;
    // Writes the current weights into a slot of `publisher` as `version` and commits it.
    virtual Status publish(weights::Publisher& publisher, Version version) = 0;
    // Checkpoints in model::save_checkpoint's format, and resuming one.
    virtual Result<std::string> save_checkpoint(const std::string& root,
                                                const model::TrainerState& state,
                                                const model::Vocabulary* vocab) = 0;
    virtual Result<model::TrainerState> restore(const std::string& path) = 0;
};

Result<std::unique_ptr<Policy>> make_cpu_policy(model::ModelWeights initial,
                                                const model::TrainerOptions& options);
// On CUDA device 0 of the process (the first of its CUDA_VISIBLE_DEVICES). unavailable in a
// build without CUDA; the device's error (naming the op) when it cannot be set up.
Result<std::unique_ptr<Policy>> make_cuda_policy(const model::ModelWeights& initial,
                                                 const model::TrainerOptions& options);

}  // namespace tandem::trainer
