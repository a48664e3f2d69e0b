#pragma once

// The `decoder` of tokenizer.json: turns the token strings of ids back into text. Supported:
// ByteLevel, Metaspace, Replace (string pattern), ByteFallback, Fuse, Strip, Sequence of these.
// Without a decoder, tokens are joined with spaces (as transformers does).

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace tandem::tokenizer {

// Immutable after creation; safe to share between threads.
class Decoder {
public:
    static Result<Decoder> from_json(const nlohmann::json& json, const std::string& where);

    // The decoded text of `tokens` (token strings as tokenizer.json spells them); always valid
    // UTF-8 (invalid byte sequences become U+FFFD).
    std::string decode(std::vector<std::string> tokens) const;

private:
    enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip };
    struct Step {
        Kind kind;
        std::string a;               // Replace: pattern; Metaspace: replacement; Strip: content
        std::string b;               // Replace: content
        bool prepend = true;         // Metaspace: strip the first token's leading space
        size_t start = 0, stop = 0;  // Strip
    };
    Status add(const nlohmann::json& json, const std::string& where);
    std::vector<Step> steps_;
    bool present_ = false;
};

}  // namespace tandem::tokenizer
