#include "common/model/trajectory.h"

namespace tandem::model {

std::vector<Trajectory> score_completions(const Task& task, std::span<const Example> examples,
                                          std::span<const std::vector<int32_t>> prompts,
                                          std::vector<Completion> completions, uint64_t first_group,
                                          int64_t version) {
    std::vector<Trajectory> out(completions.size());
    for (size_t i = 0; i < completions.size(); ++i) {
        Completion& c = completions[i];
        Trajectory& t = out[i];
        t.prompt = prompts[c.prompt];
        t.reward = task.score(examples[c.prompt], task.vocab().decode(c.tokens));
        t.completion = std::move(c.tokens);
        t.behaviour_logprobs = std::move(c.logprobs);
        t.group = first_group + static_cast<uint64_t>(c.prompt);
        t.version = version;
    }
    return out;
}

}  // namespace tandem::model
