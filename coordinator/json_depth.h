#pragma once

// A pre-check before nlohmann::json::parse, whose recursive parser would overflow the stack on a
// body of a million '['. Counts the nesting of [ and { outside strings; malformed JSON is left to
// the parser (this only bounds the depth it will recurse to).

#include <cstddef>
#include <string_view>

namespace tandem::coord {

inline bool json_depth_within(std::string_view text, size_t max_depth) {
    size_t depth = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) return false;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return true;
}

}  // namespace tandem::coord
