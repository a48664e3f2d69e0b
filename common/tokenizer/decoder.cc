#include "common/tokenizer/decoder.h"

#include <nlohmann/json.hpp>

#include "common/tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

// "<0xAB>" -> 0xAB, or -1.
int byte_token(const std::string& t) {
    if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
    const auto hex = [](char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    const auto flush = [&] {
        if (count == 0) return;
        if (first_invalid_utf8(bytes) == bytes.size()) {
            out.push_back(bytes);
        } else {
            for (size_t i = 0; i < count; ++i) out.emplace_back("\xEF\xBF\xBD");
        }
        bytes.clear();
        count = 0;
    };
    for (std::string& t : tokens) {
        const int b = byte_token(t);
        if (b >= 0) {
            bytes += static_cast<char>(b);
            ++count;
        } else {
            flush();
            out.push_back(std::move(t));
        }
    }
    flush();
    return out;
}

void strip(std::string& t, const std::string& content, size_t start, size_t stop) {
    for (size_t i = 0; i < start && t.compare(0, content.size(), content) == 0 && !content.empty();
         ++i) {
        t.erase(0, content.size());
    }
    for (size_t i = 0; i < stop && t.size() >= content.size() && !content.empty() &&
                       t.compare(t.size() - content.size(), content.size(), content) == 0;
         ++i) {
        t.resize(t.size() - content.size());
    }
}

}  // namespace

Result<Decoder> Decoder::from_json(const nlohmann::json& json, const std::string& where) {
    Decoder d;
    if (!json.is_null()) {
        d.present_ = true;
        TANDEM_RETURN_IF_ERROR(d.add(json, where));
    }
    return d;
}

Status Decoder::add(const nlohmann::json& json, const std::string& where) {
    const std::string type = json.value("type", "");
    if (type == "Sequence") {
        const auto& list = json.value("decoders", nlohmann::json::array());
        for (size_t i = 0; i < list.size(); ++i) {
            TANDEM_RETURN_IF_ERROR(add(list[i], where + ".decoders[" + std::to_string(i) + "]"));
        }
        return Status::ok_status();
    }
    Step s{};
    if (type == "ByteLevel") {
        s.kind = Kind::kByteLevel;
    } else if (type == "Metaspace") {
        s.kind = Kind::kMetaspace;
        s.a = json.value("replacement", "\xE2\x96\x81");
        std::string scheme = json.value("prepend_scheme", "");
        if (scheme.empty()) scheme = json.value("add_prefix_space", true) ? "always" : "never";
        s.prepend = scheme != "never";
    } else if (type == "Replace") {
        s.kind = Kind::kReplace;
        const auto& pattern = json.value("pattern", nlohmann::json::object());
        if (!pattern.contains("String")) {
            return invalid_argument(where + ".pattern: only String patterns are supported in a " +
                                    "Replace decoder, got " + pattern.dump());
        }
        s.a = pattern["String"].get<std::string>();
        s.b = json.value("content", "");
    } else if (type == "ByteFallback") {
        s.kind = Kind::kByteFallback;
    } else if (type == "Fuse") {
        s.kind = Kind::kFuse;
    } else if (type == "Strip") {
        s.kind = Kind::kStrip;
        s.a = json.value("content", " ");
        s.start = json.value("start", size_t{0});
        s.stop = json.value("stop", size_t{0});
    } else {
        return invalid_argument(where + ".type: unsupported decoder \"" + type + "\"");
    }
    steps_.push_back(std::move(s));
    return Status::ok_status();
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
    if (!present_) {
        std::string joined;
        for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
        return joined;
    }
    for (const Step& s : steps_) {
        switch (s.kind) {
            case Kind::kByteLevel: {
                const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
                std::string bytes;
                for (const std::string& t : tokens) {
                    for (size_t i = 0; i < t.size();) {
                        const size_t at = i;
                        const int b = alphabet.byte_of(next_code_point(t, i));
                        if (b >= 0)
                            bytes += static_cast<char>(b);
                        else
                            bytes.append(t, at, i - at);
                    }
                }
                tokens.assign(1, utf8_lossy(bytes));
                break;
            }
            case Kind::kMetaspace:
                for (size_t i = 0; i < tokens.size(); ++i) {
                    replace_all(tokens[i], s.a, " ");
                    if (i == 0 && s.prepend && !tokens[i].empty() && tokens[i][0] == ' ') {
                        tokens[i].erase(0, 1);
                    }
                }
                break;
            case Kind::kReplace:
                for (std::string& t : tokens) replace_all(t, s.a, s.b);
                break;
            case Kind::kByteFallback:
                tokens = byte_fallback(std::move(tokens));
                break;
            case Kind::kFuse: {
                std::string fused;
                for (const std::string& t : tokens) fused += t;
                tokens.assign(1, std::move(fused));
                break;
            }
            case Kind::kStrip:
                for (std::string& t : tokens) strip(t, s.a, s.start, s.stop);
                break;
        }
    }
    std::string text;
    for (const std::string& t : tokens) text += t;
    return utf8_lossy(text);
}

}  // namespace tandem::tokenizer
