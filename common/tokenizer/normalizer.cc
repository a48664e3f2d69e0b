#include "common/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <nlohmann/json.hpp>

#include "common/tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

const icu::Normalizer2* icu_normalizer(int kind) {
    UErrorCode ec = U_ZERO_ERROR;
    const icu::Normalizer2* n = nullptr;
    switch (kind) {
        case 0:
            n = icu::Normalizer2::getNFCInstance(ec);
            break;
        case 1:
            n = icu::Normalizer2::getNFDInstance(ec);
            break;
        case 2:
            n = icu::Normalizer2::getNFKCInstance(ec);
            break;
        default:
            n = icu::Normalizer2::getNFKDInstance(ec);
            break;
    }
    return U_SUCCESS(ec) ? n : nullptr;
}

bool is_ascii(const std::string& s) {
    for (char c : s) {
        if (static_cast<unsigned char>(c) >= 0x80) return false;
    }
    return true;
}

void unicode_normalize(std::string& text, int kind) {
    if (is_ascii(text)) return;  // every normalization form leaves ASCII alone
    const icu::Normalizer2* n = icu_normalizer(kind);
    if (n == nullptr) return;
    UErrorCode ec = U_ZERO_ERROR;
    const icu::StringPiece in(text.data(), static_cast<int32_t>(text.size()));
    if (n->isNormalizedUTF8(in, ec) && U_SUCCESS(ec)) return;
    ec = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    n->normalizeUTF8(0, in, sink, nullptr, ec);
    if (U_SUCCESS(ec)) text = std::move(out);
}

void lowercase(std::string& text) {
    if (is_ascii(text)) {
        for (char& c : text) {
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        }
        return;
    }
    UErrorCode ec = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    icu::CaseMap::utf8ToLower(
        "", 0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink, nullptr, ec);
    if (U_SUCCESS(ec)) text = std::move(out);
}

void strip(std::string& text, bool left, bool right) {
    if (left) {
        size_t i = 0, keep = 0;
        while (i < text.size() && is_unicode_space(next_code_point(text, i))) keep = i;
        text.erase(0, keep);
    }
    if (right) {
        size_t i = 0, last_non_space_end = 0;
        while (i < text.size()) {
            if (!is_unicode_space(next_code_point(text, i))) last_non_space_end = i;
        }
        text.resize(last_non_space_end);
    }
}

}  // namespace

Result<Normalizer> Normalizer::from_json(const nlohmann::json& json, const std::string& where) {
    Normalizer n;
    if (!json.is_null()) TANDEM_RETURN_IF_ERROR(n.add(json, where));
    return n;
}

Status Normalizer::add(const nlohmann::json& json, const std::string& where) {
    const std::string type = json.value("type", "");
    if (type == "Sequence") {
        const auto& list = json.value("normalizers", nlohmann::json::array());
        for (size_t i = 0; i < list.size(); ++i) {
            TANDEM_RETURN_IF_ERROR(add(list[i], where + ".normalizers[" + std::to_string(i) + "]"));
        }
        return Status::ok_status();
    }
    if (type == "NFC")
        steps_.push_back({Kind::kNfc});
    else if (type == "NFD")
        steps_.push_back({Kind::kNfd});
    else if (type == "NFKC")
        steps_.push_back({Kind::kNfkc});
    else if (type == "NFKD")
        steps_.push_back({Kind::kNfkd});
    else if (type == "Lowercase")
        steps_.push_back({Kind::kLowercase});
    else if (type == "Prepend")
        steps_.push_back({Kind::kPrepend, json.value("prepend", "")});
    else if (type == "Strip") {
        Step s{Kind::kStrip};
        s.left = json.value("strip_left", false);
        s.right = json.value("strip_right", false);
        steps_.push_back(s);
    } else if (type == "Replace") {
        const auto& pattern = json.value("pattern", nlohmann::json::object());
        if (!pattern.contains("String")) {
            return invalid_argument(where + ".pattern: only String patterns are supported in a " +
                                    "Replace normalizer, got " + pattern.dump());
        }
        steps_.push_back(
            {Kind::kReplace, pattern["String"].get<std::string>(), json.value("content", "")});
    } else {
        return invalid_argument(where + ".type: unsupported normalizer \"" + type + "\"");
    }
    return Status::ok_status();
}

void Normalizer::apply(std::string& text) const {
    for (const Step& s : steps_) {
        switch (s.kind) {
            case Kind::kNfc:
                unicode_normalize(text, 0);
                break;
            case Kind::kNfd:
                unicode_normalize(text, 1);
                break;
            case Kind::kNfkc:
                unicode_normalize(text, 2);
                break;
            case Kind::kNfkd:
                unicode_normalize(text, 3);
                break;
            case Kind::kLowercase:
                lowercase(text);
                break;
            case Kind::kPrepend:
                if (!text.empty()) text.insert(0, s.a);
                break;
            case Kind::kReplace:
                replace_all(text, s.a, s.b);
                break;
            case Kind::kStrip:
                strip(text, s.left, s.right);
                break;
        }
    }
}

}  // namespace tandem::tokenizer
