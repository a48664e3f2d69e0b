#include "common/tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

// Length of the valid UTF-8 sequence at text[i], or 0 with `bad` set to the length of the maximal
// invalid subpart (at least 1) when the sequence is invalid.
size_t valid_sequence(std::string_view text, size_t i, size_t& bad) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char c = b(i);
    bad = 1;
    if (c < 0x80) return 1;
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t k = 1; k < n; ++k) {
        if (i + k >= text.size()) return 0;
        const unsigned char d = b(i + k);
        const unsigned char l = k == 1 ? lo : 0x80;
        const unsigned char h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) return 0;
        bad = k + 1;
    }
    return n;
}

}  // namespace

size_t first_invalid_utf8(std::string_view text) {
    size_t i = 0;
    while (i < text.size()) {
        if (static_cast<unsigned char>(text[i]) < 0x80) {
            ++i;
            continue;
        }
        size_t bad = 0;
        const size_t n = valid_sequence(text, i, bad);
        if (n == 0) return i;
        i += n;
    }
    return text.size();
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

std::string utf8_lossy(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    size_t i = 0;
    while (i < bytes.size()) {
        size_t bad = 0;
        const size_t n = valid_sequence(bytes, i, bad);
        if (n == 0) {
            // A truncated but well-started sequence counts once; anything else once per byte.
            out += "\xEF\xBF\xBD";
            i += bad;
            continue;
        }
        out.append(bytes.substr(i, n));
        i += n;
    }
    return out;
}

uint32_t next_code_point(std::string_view text, size_t& i) {
    const auto b = [&](size_t k) {
        return static_cast<uint32_t>(static_cast<unsigned char>(text[k]));
    };
    const uint32_t c = b(i);
    const size_t n = utf8_length(static_cast<unsigned char>(c));
    if (n == 1 || i + n > text.size()) {
        ++i;
        return c;
    }
    uint32_t cp = n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (b(i + k) & 0x3F);
    i += n;
    return cp;
}

void replace_all(std::string& text, const std::string& pattern, const std::string& with) {
    if (pattern.empty() || text.find(pattern) == std::string::npos) return;
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    for (size_t hit; (hit = text.find(pattern, pos)) != std::string::npos;
         pos = hit + pattern.size()) {
        out.append(text, pos, hit - pos);
        out += with;
    }
    out.append(text, pos);
    text = std::move(out);
}

bool is_unicode_space(uint32_t cp) {
    return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
    static const ByteLevelAlphabet alphabet;
    return alphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
    reverse_.fill(-1);
    uint32_t next = 256;
    for (int byte = 0; byte < 256; ++byte) {
        const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                               (byte >= 0xAE && byte <= 0xFF);
        const uint32_t cp = printable ? static_cast<uint32_t>(byte) : next++;
        append_utf8(chars_[byte], cp);
        reverse_[cp] = static_cast<int16_t>(byte);
    }
}

}  // namespace tandem::tokenizer
