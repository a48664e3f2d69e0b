#include "common/rl/prompt_template.h"

#include <fmt/format.h>

namespace tandem::rl {

Result<std::vector<PromptTemplate::Part>> PromptTemplate::parse_parts(std::string_view spec) {
    std::vector<Part> parts;
    std::string text;
    bool has_prompt = false;
    for (size_t i = 0; i < spec.size(); ++i) {
        const char c = spec[i];
        if ((c == '{' || c == '}') && i + 1 < spec.size() && spec[i + 1] == c) {
            text += c;
            ++i;
            continue;
        }
        if (c == '}') {
            return invalid_argument(
                fmt::format("template: unmatched '}}' at offset {} (write }}}} "
                            "for a brace)",
                            i));
        }
        if (c != '{') {
            text += c;
            continue;
        }
        const size_t close = spec.find('}', i);
        const std::string_view name =
            close == std::string_view::npos ? spec.substr(i) : spec.substr(i, close - i + 1);
        Part::Kind kind;
        if (name == "{system}") {
            kind = Part::Kind::kSystem;
        } else if (name == "{prompt}") {
            kind = Part::Kind::kPrompt;
            has_prompt = true;
        } else {
            return invalid_argument(
                fmt::format("template: unknown placeholder \"{}\" at offset {} "
                            "(use {{system}}, {{prompt}}, or {{{{ and }}}} for "
                            "braces)",
                            name.substr(0, 40), i));
        }
        if (!text.empty()) parts.push_back({Part::Kind::kText, std::move(text)});
        text.clear();
        parts.push_back({kind, {}});
        i = close;
    }
    if (!text.empty()) parts.push_back({Part::Kind::kText, std::move(text)});
    if (!has_prompt) return invalid_argument("template: has no {prompt} placeholder");
    return parts;
}

Result<PromptTemplate> PromptTemplate::parse(std::string_view spec) {
    std::string with, without;
    PromptTemplate t;
    if (spec == "chatml") {
        without = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n";
        with = "<|im_start|>system\n{system}<|im_end|>\n" + without;
        t.end_of_turn_ = {"<|im_end|>", "<|endoftext|>"};
    } else if (spec == "llama3") {
        const std::string turns =
            "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n";
        without = "<|begin_of_text|>" + turns;
        with = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>" +
               turns;
        t.has_bos_ = true;
        t.end_of_turn_ = {"<|eot_id|>", "<|end_of_text|>"};
    } else if (spec == "plain") {
        with = without = "{prompt}";
    } else {
        with = without = std::string(spec);
    }
    TANDEM_ASSIGN_OR_RETURN(t.with_system_, parse_parts(with));
    TANDEM_ASSIGN_OR_RETURN(t.without_system_, parse_parts(without));
    return t;
}

std::string PromptTemplate::render(std::string_view system, std::string_view prompt) const {
    std::string out;
    for (const Part& p : system.empty() ? without_system_ : with_system_) {
        switch (p.kind) {
            case Part::Kind::kText:
                out += p.text;
                break;
            case Part::Kind::kSystem:
                out += system;
                break;
            case Part::Kind::kPrompt:
                out += prompt;
                break;
        }
    }
    return out;
}

}  // namespace tandem::rl
