#pragma once

// When generation of one text completion ends: an end-of-sequence id (the tokenizer's
// eos_token, the template's end-of-turn tokens, the model's generation eos ids), a stop string
// in the decoded text (rollout.sampling.stop), or max_new_tokens.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace tandem::rl {

enum class StopReason { kNone, kEos, kStopString, kLength };

struct StopConditions {
    std::vector<int32_t> eos_ids;  // sorted, unique
    std::vector<std::string> stop_strings;
    int max_new_tokens = 0;

    bool is_eos(int32_t id) const;
    // The decoded completion (special tokens skipped) cut before its first stop string and
    // before an end-of-sequence id.
    std::string completion_text(const tokenizer::Tokenizer& tok,
                                std::span<const int32_t> ids) const;
};

// Watches one completion as it grows. Owned by one generation; not thread-safe.
class StopChecker {
public:
    StopChecker(const StopConditions& conditions, const tokenizer::Tokenizer& tok);
    // Records the next generated id; the reason to stop after it, or kNone.
    StopReason push(int32_t id);
    const std::vector<int32_t>& ids() const { return ids_; }

private:
    const StopConditions& conditions_;
    const tokenizer::Tokenizer& tok_;
    std::vector<int32_t> ids_;
    size_t window_ = 0;  // tokens decoded to look for stop strings
};

}  // namespace tandem::rl
