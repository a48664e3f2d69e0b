#pragma once

// The prompt format of a text task (task.template): a named preset or a template string.
//   chatml  <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n
//           <|im_start|>assistant\n            (Qwen2/Qwen3; the system turn only when set)
//   llama3  <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
//           <|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>
//           <|start_header_id|>assistant<|end_header_id|>\n\n   (the system turn only when set)
//   plain   {prompt}
// A template string uses {system} and {prompt}; {{ and }} stand for braces. Special tokens
// written in a template are matched as tokens when the prompt is encoded.

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::rl {

// Immutable value; safe to share between threads.
class PromptTemplate {
public:
    // A preset name or a template string (which must contain {prompt}); errors name the
    // placeholder and its offset.
    static Result<PromptTemplate> parse(std::string_view spec);

    std::string render(std::string_view system, std::string_view prompt) const;
    // Whether the rendered text starts with its own BOS (then the tokenizer's post-processor
    // prefix must not be added again).
    bool has_bos() const { return has_bos_; }
    // Special tokens that end the assistant's turn in this format ("<|im_end|>"), for stopping.
    const std::vector<std::string>& end_of_turn() const { return end_of_turn_; }

private:
    struct Part {
        enum class Kind { kText, kSystem, kPrompt } kind;
        std::string text;
    };
    static Result<std::vector<Part>> parse_parts(std::string_view spec);
    std::vector<Part> with_system_, without_system_;
    bool has_bos_ = false;
    std::vector<std::string> end_of_turn_;
};

}  // namespace tandem::rl
