#pragma once

// A character-level vocabulary: three special tokens followed by one token per byte of a charset.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::model {

// Immutable value; safe to share between threads.
class Vocabulary {
public:
    static constexpr int32_t kPad = 0;
    static constexpr int32_t kBos = 1;
    static constexpr int32_t kEos = 2;
    static constexpr int32_t kFirstChar = 3;

    Vocabulary() : Vocabulary(std::string()) {}
    // `charset`: distinct bytes, any order (kept as given; token kFirstChar + i is charset[i]).
    static Result<Vocabulary> create(std::string charset);
    // The charset every built-in task uses: digits, '+' and '='.
    static Vocabulary builtin();

    int size() const { return kFirstChar + static_cast<int>(charset_.size()); }
    const std::string& charset() const { return charset_; }

    // Bytes of `text` as tokens; invalid_argument names the first byte not in the charset.
    Result<std::vector<int32_t>> encode(std::string_view text) const;
    // Appends the tokens of `text` to `out` (same errors as encode).
    Status encode_into(std::string_view text, std::vector<int32_t>& out) const;
    // Characters up to the first eos; pad and bos are skipped.
    std::string decode(std::span<const int32_t> tokens) const;

    friend bool operator==(const Vocabulary& a, const Vocabulary& b) {
        return a.charset_ == b.charset_;
    }

private:
    explicit Vocabulary(std::string charset);
    std::string charset_;
    int16_t index_[256];
};

}  // namespace tandem::model
