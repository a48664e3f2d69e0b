#include "common/model/vocab.h"

#include <fmt/format.h>

namespace tandem::model {

Vocabulary::Vocabulary(std::string charset) : charset_(std::move(charset)) {
    for (auto& i : index_) i = -1;
    for (size_t i = 0; i < charset_.size(); ++i) {
        index_[static_cast<unsigned char>(charset_[i])] = static_cast<int16_t>(i);
    }
}

Result<Vocabulary> Vocabulary::create(std::string charset) {
    bool seen[256] = {};
    for (const char c : charset) {
        const auto b = static_cast<unsigned char>(c);
        if (seen[b]) {
            return invalid_argument(fmt::format("vocabulary: byte 0x{:02x} appears twice", b));
        }
        seen[b] = true;
    }
    return Vocabulary(std::move(charset));
}

Vocabulary Vocabulary::builtin() { return Vocabulary("0123456789+="); }

Status Vocabulary::encode_into(std::string_view text, std::vector<int32_t>& out) const {
    for (size_t i = 0; i < text.size(); ++i) {
        const int16_t idx = index_[static_cast<unsigned char>(text[i])];
        if (idx < 0) {
            return invalid_argument(
                fmt::format("vocabulary: byte 0x{:02x} at offset {} of \"{}\" is not in the "
                            "charset \"{}\"",
                            static_cast<unsigned char>(text[i]), i, text, charset_));
        }
        out.push_back(kFirstChar + idx);
    }
    return Status();
}

Result<std::vector<int32_t>> Vocabulary::encode(std::string_view text) const {
    std::vector<int32_t> out;
    out.reserve(text.size());
    TANDEM_RETURN_IF_ERROR(encode_into(text, out));
    return out;
}

std::string Vocabulary::decode(std::span<const int32_t> tokens) const {
    std::string out;
    for (const int32_t t : tokens) {
        if (t == kEos) break;
        if (t < kFirstChar || t >= size()) continue;
        out.push_back(charset_[static_cast<size_t>(t - kFirstChar)]);
    }
    return out;
}

}  // namespace tandem::model
