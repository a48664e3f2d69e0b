#pragma once

// What a rollout actor sends to the trainer for one completion, and how completions become
// scored trajectories.

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/generate.h"
#include "common/model/tasks.h"

namespace tandem::model {

struct Trajectory {
    std::vector<int32_t> prompt;            // [bos] + prompt tokens
    std::vector<int32_t> completion;        // sampled tokens (ending with eos when finished)
    std::vector<float> behaviour_logprobs;  // one per completion token
    double reward = 0;
    uint64_t group = 0;   // trajectories sampled from the same prompt share a group id
    int64_t version = 0;  // weight version that generated it
};

// Scores each completion against its example with the task's verifier and moves it into a
// trajectory. Completion c belongs to examples[c.prompt] / prompts[c.prompt]; its group id is
// first_group + c.prompt (use the data cursor of the first prompt, so ids are unique per job).
std::vector<Trajectory> score_completions(const Task& task, std::span<const Example> examples,
                                          std::span<const std::vector<int32_t>> prompts,
                                          std::vector<Completion> completions, uint64_t first_group,
                                          int64_t version);

}  // namespace tandem::model
