#pragma once

// UTF-8 helpers and the GPT-2 byte <-> character table of byte-level BPE (internal to
// tandem_tokenizer).

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::tokenizer {

// Offset of the first byte that is not part of valid UTF-8, or text.size() when all is valid.
size_t first_invalid_utf8(std::string_view text);

// Length of the UTF-8 sequence that starts with `lead` (1 for a stray continuation byte).
inline size_t utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead >> 5) == 0x6) return 2;
    if ((lead >> 4) == 0xE) return 3;
    if ((lead >> 3) == 0x1E) return 4;
    return 1;
}

void append_utf8(std::string& out, uint32_t code_point);

// `bytes` with every maximal invalid subsequence replaced by U+FFFD (as String::from_utf8_lossy
// and TextDecoder do).
std::string utf8_lossy(std::string_view bytes);

// GPT-2's reversible map from bytes to printable characters (as UTF-8 strings) and back.
class ByteLevelAlphabet {
public:
    static const ByteLevelAlphabet& get();
    const std::string& char_of(uint8_t byte) const { return chars_[byte]; }
    // The byte of code point `cp`, or -1 when `cp` is not in the alphabet.
    int byte_of(uint32_t cp) const { return cp < reverse_.size() ? reverse_[cp] : -1; }

private:
    ByteLevelAlphabet();
    std::array<std::string, 256> chars_;
    std::array<int16_t, 512> reverse_;
};

// Replaces every occurrence of `pattern` (non-empty) in `text`.
void replace_all(std::string& text, const std::string& pattern, const std::string& with);

// Unicode White_Space (what JavaScript's trim() and Rust's char::is_whitespace remove).
bool is_unicode_space(uint32_t cp);

// Decodes the code point at text[i] (valid UTF-8 assumed) and advances i.
uint32_t next_code_point(std::string_view text, size_t& i);

}  // namespace tandem::tokenizer
