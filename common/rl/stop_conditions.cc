#include "common/rl/stop_conditions.h"

#include <algorithm>

namespace tandem::rl {

bool StopConditions::is_eos(int32_t id) const {
    return std::binary_search(eos_ids.begin(), eos_ids.end(), id);
}

std::string StopConditions::completion_text(const tokenizer::Tokenizer& tok,
                                            std::span<const int32_t> ids) const {
    const auto eos = std::find_if(ids.begin(), ids.end(), [&](int32_t id) { return is_eos(id); });
    std::string text =
        tok.decode(ids.subspan(0, static_cast<size_t>(eos - ids.begin())),
                   {.skip_special_tokens = true, .clean_up_tokenization_spaces = false});
    size_t cut = text.size();
    for (const std::string& s : stop_strings) {
        if (!s.empty()) cut = std::min(cut, text.find(s));
    }
    text.resize(std::min(cut, text.size()));
    return text;
}

StopChecker::StopChecker(const StopConditions& conditions, const tokenizer::Tokenizer& tok)
    : conditions_(conditions), tok_(tok) {
    for (const std::string& s : conditions.stop_strings) window_ = std::max(window_, s.size() + 2);
}

StopReason StopChecker::push(int32_t id) {
    ids_.push_back(id);
    if (conditions_.is_eos(id)) return StopReason::kEos;
    if (window_ > 0) {
        // Every token decodes to at least one byte, so the last window_ tokens hold any stop
        // string that the newest token completed.
        const size_t from = ids_.size() > window_ ? ids_.size() - window_ : 0;
        const std::string tail = tok_.decode(std::span<const int32_t>(ids_).subspan(from),
                                             {.clean_up_tokenization_spaces = false});
        for (const std::string& s : conditions_.stop_strings) {
            if (!s.empty() && tail.find(s) != std::string::npos) return StopReason::kStopString;
        }
    }
    if (static_cast<int>(ids_.size()) >= conditions_.max_new_tokens) return StopReason::kLength;
    return StopReason::kNone;
}

}  // namespace tandem::rl
