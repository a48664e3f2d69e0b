#pragma once

// The trainer side of GRPO: one optimizer step from a batch of scored trajectories.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/checkpoint.h"
#include "common/model/grpo.h"
#include "common/model/model_weights.h"
#include "common/model/optimizer.h"
#include "common/model/trajectory.h"
#include "common/model/transformer.h"
#include "common/status.h"

namespace tandem::model {

struct TrainerOptions {
    config::AlgorithmSpec algorithm;
    double temperature = 1.0;  // the rollouts' sampling temperature (0 counts as 1)
    int micro_batch = 64;      // sequences per forward/backward pass (gradient accumulation)
    // Optimizer updates per step: the batch is split into this many mini-batches (whole
    // trajectories, in order) and each takes one AdamW update, PPO-style; later mini-batches see
    // importance ratios != 1 and the clip matters. 1: one update on the whole batch.
    int mini_batches = 1;
    bool scale_advantages_by_std = true;  // false: centred advantages only ("Dr. GRPO")
    // Consecutive trajectories with the same prompt (a group) share the prompt's rows in the
    // forward and backward (PackedBatch::add_continuation). false: every trajectory packs its own
    // copy of the prompt.
    bool share_prompts = true;
    // Checkpoints copy the tokenizer files found here (hf_side_files()): the job's model.init
    // directory; empty for a random init.
    std::string side_files_from;

    static TrainerOptions from_job(const config::JobSpec& job);
};

struct TrainStats {
    int64_t step = 0;  // training steps taken after this one (= the version to publish)
    int updates = 0;   // optimizer updates in this step
    int64_t sequences = 0;
    int64_t tokens = 0;  // completion tokens
    double loss = 0;
    double kl = 0;       // mean k3 estimate over tokens (0 when kl_coef is 0)
    double entropy = 0;  // mean policy entropy over completion tokens
    double grad_norm = 0;
    double lr = 0;
    double clip_fraction = 0;
    // Truncated importance sampling (algorithm.tis_cap > 0): mean weight min(exp(logp_trainer -
    // logp_behaviour), cap) over the completion tokens, and the fraction cut to the cap.
    double tis_weight_mean = 1;
    double tis_truncated_fraction = 0;
    double ratio_mean = 0;
    double ratio_max = 0;
    double logprob_diff_max = 0;  // max |recomputed - behaviour| log-prob
    double advantage_abs_mean = 0;
    double reward_mean = 0, reward_min = 0, reward_max = 0;
    double response_length_mean = 0;
    double forward_s = 0, backward_s = 0, optimizer_s = 0;
};

// Owns the policy weights, their gradient buffer, the reference (initial) weights when a KL
// penalty is on, and AdamW. Not thread-safe: one trainer actor thread drives it.
class GrpoTrainer {
public:
    // `initial` is the version-0 policy; it is also the KL reference.
    static Result<std::unique_ptr<GrpoTrainer>> create(ModelWeights initial,
                                                       const TrainerOptions& options);

    // One optimizer step on `batch` (whole groups; advantages are normalised per group).
    Result<TrainStats> step(std::span<const Trajectory> batch);

    // One supervised update (warm start): minimises the token-mean negative log-likelihood of the
    // completions (behaviour log-probs, rewards and groups are ignored). Counts as a training
    // step. stats.loss is the mean NLL.
    Result<TrainStats> supervised_step(std::span<const Trajectory> batch);

    const ModelWeights& weights() const { return weights_; }
    // Training steps taken (one per step() call; the weight version the trainer publishes).
    int64_t steps_taken() const { return steps_; }
    const AdamW& optimizer() const { return optimizer_; }

    // <root>/step-NNNNNNNN/ with the weights, optimizer moments and `state`.
    Result<std::string> save_checkpoint(const std::string& root, const TrainerState& state,
                                        const Vocabulary* vocab) const;
    // Restores weights and optimizer from a checkpoint directory; returns its state.
    Result<TrainerState> restore(const std::string& path);

private:
    Status validate(std::span<const Trajectory> batch, TrainStats& st, int64_t& total_tokens) const;
    // Packs batch[b0, b1) into packed_; completion_begin_[i - b0] is the row of trajectory i's
    // first completion token.
    void pack(std::span<const Trajectory> batch, size_t b0, size_t b1);
    GrpoTrainer(ModelWeights weights, Transformer<float> policy, const TrainerOptions& options);

    TrainerOptions options_;
    GrpoOptions grpo_;
    ModelWeights weights_;
    std::vector<float> grads_;
    std::unique_ptr<ModelWeights> reference_;
    Transformer<float> policy_;
    std::unique_ptr<Transformer<float>> reference_model_;
    AdamW optimizer_;
    PackedBatch packed_;
    std::vector<float> logp_, entropy_, ref_logp_, weight_;
    std::vector<int64_t> completion_begin_;
    int64_t steps_ = 0;
};

}  // namespace tandem::model
