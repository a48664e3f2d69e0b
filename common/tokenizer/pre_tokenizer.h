#pragma once

// The `pre_tokenizer` of tokenizer.json: splits a normalized text section into words that the
// model encodes one by one. Supported: Split (regex or string pattern; Isolated or Removed),
// ByteLevel (with or without the GPT-2 regex), Metaspace, Sequence of these. Regexes run on
// PCRE2 in UTF + UCP mode (Unicode classes), JIT-compiled where the platform allows.

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace tandem::tokenizer {

// A word: bytes [begin, end) of the pre-tokenizer's working text.
struct Piece {
    size_t begin;
    size_t end;
};

// Immutable after creation; safe to share between threads (match data is per call).
class PreTokenizer {
public:
    static Result<PreTokenizer> from_json(const nlohmann::json& json, const std::string& where);
    PreTokenizer();  // no splitting: the whole section is one word
    PreTokenizer(PreTokenizer&&) noexcept;
    PreTokenizer& operator=(PreTokenizer&&) noexcept;
    ~PreTokenizer();

    // Whether words are byte-level (a ByteLevel step is present): the model maps bytes to GPT-2
    // characters and the decoder must map them back.
    bool byte_level() const { return byte_level_; }

    // Splits `text` (valid UTF-8; rewritten in place when a step inserts or replaces characters)
    // into `pieces`. `first_section`: whether this is the first section of the input (Metaspace
    // prepend_scheme "first").
    void split(std::string& text, bool first_section, std::vector<Piece>& pieces) const;

private:
    struct Step;
    Status add(const nlohmann::json& json, const std::string& where);
    std::vector<std::unique_ptr<Step>> steps_;
    bool byte_level_ = false;
};

}  // namespace tandem::tokenizer
