#include "common/tokenizer/added_tokens.h"

#include "common/tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

// Bytes of whitespace that end text[begin, end) / start it.
size_t trailing_space(std::string_view text, size_t begin, size_t end) {
    size_t i = begin, keep = begin;
    while (i < end) {
        if (!is_unicode_space(next_code_point(text, i))) keep = i;
    }
    return end - keep;
}

size_t leading_space(std::string_view text, size_t begin, size_t end) {
    size_t i = begin, keep = begin;
    while (i < end && is_unicode_space(next_code_point(text, i))) keep = i;
    return keep - begin;
}

}  // namespace

int32_t AddedTokenMatcher::child(int32_t node, unsigned char c) const {
    for (const auto& [byte, next] : nodes_[static_cast<size_t>(node)].children) {
        if (byte == c) return next;
    }
    return -1;
}

void AddedTokenMatcher::add(const std::string& content, int32_t id, bool lstrip, bool rstrip) {
    if (content.empty()) return;
    int32_t node = 0;
    for (unsigned char c : content) {
        int32_t next = child(node, c);
        if (next < 0) {
            next = static_cast<int32_t>(nodes_.size());
            nodes_[static_cast<size_t>(node)].children.push_back({c, next});
            nodes_.emplace_back();
        }
        node = next;
    }
    nodes_[static_cast<size_t>(node)].token = static_cast<int32_t>(tokens_.size());
    tokens_.push_back({id, content.size(), lstrip, rstrip});
    first_byte_[static_cast<unsigned char>(content[0])] = true;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Section>& out) const {
    out.clear();
    size_t start = 0, i = 0;
    bool strip_next = false;
    const auto push_text = [&](size_t b, size_t e, bool rstrip_before, bool lstrip_after) {
        if (rstrip_before) b += leading_space(text, b, e);
        if (lstrip_after) e -= trailing_space(text, b, e);
        if (e > b) out.push_back({-1, b, e});
    };
    while (i < text.size()) {
        if (!first_byte_[static_cast<unsigned char>(text[i])]) {
            ++i;
            continue;
        }
        int32_t node = 0, match = -1;
        size_t j = i;
        while (j < text.size() && (node = child(node, static_cast<unsigned char>(text[j]))) >= 0) {
            ++j;
            if (nodes_[static_cast<size_t>(node)].token >= 0)
                match = nodes_[static_cast<size_t>(node)].token;
        }
        if (match < 0) {
            ++i;
            continue;
        }
        const Entry& e = tokens_[static_cast<size_t>(match)];
        push_text(start, i, strip_next, e.lstrip);
        out.push_back({e.id, i, i + e.length});
        strip_next = e.rstrip;
        i += e.length;
        start = i;
    }
    push_text(start, text.size(), strip_next, false);
}

}  // namespace tandem::tokenizer
