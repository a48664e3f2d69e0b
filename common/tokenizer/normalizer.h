#pragma once

// The `normalizer` of tokenizer.json: a flat list of steps applied in order to each text section
// that is not an added token. Supported: NFC, NFD, NFKC, NFKD (ICU), Lowercase, Prepend,
// Replace with a string pattern, Strip, Sequence of these.

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace tandem::tokenizer {

// Immutable after creation; safe to share between threads.
class Normalizer {
public:
    // `json` may be null (no normalization). `where` names the key in errors ("normalizer").
    static Result<Normalizer> from_json(const nlohmann::json& json, const std::string& where);

    bool empty() const { return steps_.empty(); }
    // Normalizes `text` in place (valid UTF-8 in, valid UTF-8 out).
    void apply(std::string& text) const;

private:
    enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kPrepend, kReplace, kStrip };
    struct Step {
        Kind kind;
        std::string a;                     // Prepend: the prefix; Replace: the pattern
        std::string b;                     // Replace: the replacement
        bool left = false, right = false;  // Strip
    };
    Status add(const nlohmann::json& json, const std::string& where);
    std::vector<Step> steps_;
};

}  // namespace tandem::tokenizer
