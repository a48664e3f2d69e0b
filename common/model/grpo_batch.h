#pragma once

// The parts of a GRPO training step that do not depend on where the model runs, shared by the
// CPU trainer (trainer.cc) and the device trainer (common/gpu/device_trainer.h): packing
// trajectories into forward passes, and turning recomputed log-probs into per-token loss weights
// and statistics. Pure functions; thread-safe.

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/grpo.h"
#include "common/model/trainer.h"
#include "common/model/trajectory.h"
#include "common/model/transformer.h"

namespace tandem::model {

// The loss options of a trainer (CPU or device) from its TrainerOptions: one place, so both
// trainers compute the same loss.
GrpoOptions grpo_options(const TrainerOptions& options);

// Checks every trajectory (a prompt, a completion, one behaviour log-prob per completion token,
// at most max_seq_len tokens; errors name the trajectory and its group) and fills st's batch
// figures (sequences, tokens, rewards, response length); total_tokens = completion tokens.
Status validate_trajectories(std::span<const Trajectory> batch, const ModelConfig& config,
                             TrainStats& st, int64_t& total_tokens);

// Group-normalised advantages of the trajectories (group_advantages over their rewards and
// groups); adds their absolute values to st.advantage_abs_mean.
std::vector<double> trajectory_advantages(std::span<const Trajectory> batch, bool scale_by_std,
                                          TrainStats& st);

// Packs batch[b0, b1) into `packed` (cleared first). With share_prompts, consecutive trajectories
// with the same prompt continue one prefix (PackedBatch::add_continuation); else each packs its
// own prompt. completion_begin[i - b0] is the row of trajectory i's first completion token.
void pack_trajectories(std::span<const Trajectory> batch, size_t b0, size_t b1, bool share_prompts,
                       PackedBatch& packed, std::vector<int64_t>& completion_begin);

// Counts over the evaluated completion tokens of one step.
struct GrpoTokenCounts {
    int64_t clipped = 0;
    int64_t evaluated = 0;
    int64_t tis_truncated = 0;  // tokens whose importance weight was cut to tis_cap
    double tis_weight_sum = 0;
};

// With grpo.tis_cap > 0 and several updates per step, the PPO ratio of a later mini-batch is
// taken against the trainer's log-probs before the step's first update: this holds them, one
// vector per trajectory of the batch (completion tokens). A trajectory without one (or an empty
// OldLogprobs: one update per step) uses its recomputed log-probs, which are the pre-update ones.
using OldLogprobs = std::vector<std::vector<float>>;

// Copies the recomputed log-probs logp of the completion tokens of batch[b0, b1), packed by
// pack_trajectories, into old[b0, b1) (old is resized to the batch).
void keep_old_logprobs(std::span<const Trajectory> batch, size_t b0, size_t b1,
                       std::span<const int64_t> completion_begin, const float* logp,
                       OldLogprobs& old);

// The GRPO losses of the completion tokens of batch[b0, b1), packed by pack_trajectories, from
// their recomputed log-probs logp and entropies (indexed like the packed tokens; ref_logp null
// when there is no KL term), the pre-update log-probs old (see OldLogprobs; empty: logp) and the
// advantages adv (indexed like batch): weight[row] =
// dloss/dlogp for every completion token (other rows untouched), and st gains the loss (token
// mean over total_tokens: the mini-batch of mb_tokens tokens weighted by its share), and the sums
// of kl, entropy, ratio and importance weight, the max ratio and the max |logp - behaviour|,
// which finish_grpo_stats turns into means.
void score_grpo_tokens(std::span<const Trajectory> batch, size_t b0, size_t b1,
                       std::span<const int64_t> completion_begin, const float* logp,
                       const float* ref_logp, const float* entropy, const OldLogprobs& old,
                       std::span<const double> adv, const GrpoOptions& grpo, int64_t mb_tokens,
                       int64_t total_tokens, float* weight, TrainStats& st,
                       GrpoTokenCounts& counts);

// Means over the evaluated tokens and trajectories (kl, entropy, ratio_mean, clip_fraction,
// tis_weight_mean, tis_truncated_fraction, advantage_abs_mean), once every mini-batch was scored.
void finish_grpo_stats(size_t trajectories, const GrpoTokenCounts& counts, TrainStats& st);

}  // namespace tandem::model
