#pragma once

// Added tokens (special or not) found in text as transformers does by default: at each position
// the longest added token that starts there wins, scanning left to right; lstrip/rstrip tokens
// take the whitespace beside them.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer {

struct AddedToken {
    int32_t id;
    std::string content;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = false;
};

// A section of text: either an added token (id >= 0) or plain text to encode ([begin, end)).
struct Section {
    int32_t id;
    size_t begin;
    size_t end;
};

// Immutable after build(); safe to share between threads.
class AddedTokenMatcher {
public:
    void add(const std::string& content, int32_t id, bool lstrip, bool rstrip);
    bool empty() const { return nodes_.size() <= 1; }
    // Sections of `text` in order; plain sections may be empty after stripping and are dropped.
    void split(std::string_view text, std::vector<Section>& out) const;

private:
    struct Node {
        int32_t token = -1;  // index into tokens_ of the token ending here
        std::vector<std::pair<unsigned char, int32_t>> children;
    };
    struct Entry {
        int32_t id;
        size_t length;
        bool lstrip;
        bool rstrip;
    };
    int32_t child(int32_t node, unsigned char c) const;
    std::vector<Node> nodes_{1};
    std::vector<Entry> tokens_;
    bool first_byte_[256] = {};
};

}  // namespace tandem::tokenizer
