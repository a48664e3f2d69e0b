#pragma once

// Trainer checkpoints: <root>/step-NNNNNNNN/ holding
//   config.json, model.safetensors   the policy (load_pretrained() reads them)
//   optimizer.safetensors            AdamW moments: "exp_avg.<param>", "exp_avg_sq.<param>"
//   trainer_state.json               {"format_version", "step", "optimizer_steps", "version",
//                                     "data_cursor", "rng", "layout_fingerprint"}
// A checkpoint is written into a temporary directory and renamed, so a directory named step-*
// is always complete.

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "common/model/model_weights.h"
#include "common/model/optimizer.h"
#include "common/status.h"

namespace tandem::model {

struct TrainerState {
    int64_t step = 0;               // training steps completed
    int64_t version = 0;            // last published weight version
    uint64_t data_cursor = 0;       // next example index of the task stream
    std::array<uint64_t, 4> rng{};  // the trainer's random state
};

// The policy is a Hugging Face directory (hf_model.h: sharded above 2 GiB); the tokenizer files
// in `side_files_from` (when not empty) are copied beside it.
Result<std::string> save_checkpoint(const std::string& root, const TrainerState& state,
                                    const ModelWeights& weights, const Vocabulary* vocab,
                                    const AdamW& optimizer,
                                    const std::string& side_files_from = "");

struct LoadedCheckpoint {
    Pretrained model;
    std::vector<float> exp_avg, exp_avg_sq;  // flat, in the model's layout
    int64_t optimizer_steps = 0;
    TrainerState state;
};
Result<LoadedCheckpoint> load_checkpoint(const std::string& path);

// The newest complete checkpoint under `root`, or not_found.
Result<std::string> latest_checkpoint(const std::string& root);
// Removes all but the newest `keep_last` checkpoints.
Status prune_checkpoints(const std::string& root, int keep_last);

}  // namespace tandem::model
