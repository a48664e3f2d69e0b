#include "common/tokenizer/pre_tokenizer.h"

#include <nlohmann/json.hpp>

#include "common/tokenizer/regex.h"

namespace tandem::tokenizer {
namespace {

// GPT-2's pattern, used by ByteLevel with use_regex.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kIsolated, kRemoved };

// Splits every piece of `text` at the matches of `re`.
void split_by(const Regex& re, Behavior behavior, const std::string& text,
              std::vector<Piece>& pieces) {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const Piece& p : pieces) {
        const std::string_view subject(text.data() + p.begin, p.end - p.begin);
        size_t pos = 0, gap = 0, b = 0, e = 0;
        while (pos < subject.size() && re.find(subject, pos, b, e)) {
            if (e == b) {  // an empty match splits nothing; step over one character
                pos = b + 1;
                while (pos < subject.size() &&
                       (static_cast<unsigned char>(subject[pos]) & 0xC0) == 0x80)
                    ++pos;
                continue;
            }
            if (b > gap) out.push_back({p.begin + gap, p.begin + b});
            if (behavior == Behavior::kIsolated) out.push_back({p.begin + b, p.begin + e});
            pos = gap = e;
        }
        if (gap < subject.size()) out.push_back({p.begin + gap, p.end});
    }
    pieces.swap(out);
}

}  // namespace

struct PreTokenizer::Step {
    enum class Kind { kSplit, kByteLevel, kMetaspace } kind;
    std::unique_ptr<Regex> re;  // Split, ByteLevel with use_regex
    Behavior behavior = Behavior::kIsolated;
    bool add_prefix_space = false;  // ByteLevel
    std::string replacement;        // Metaspace
    enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
    bool split = true;  // Metaspace
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

Result<PreTokenizer> PreTokenizer::from_json(const nlohmann::json& json, const std::string& where) {
    PreTokenizer p;
    if (!json.is_null()) TANDEM_RETURN_IF_ERROR(p.add(json, where));
    return p;
}

Status PreTokenizer::add(const nlohmann::json& json, const std::string& where) {
    const std::string type = json.value("type", "");
    auto step = std::make_unique<Step>();
    if (type == "Sequence") {
        const auto& list = json.value("pretokenizers", nlohmann::json::array());
        for (size_t i = 0; i < list.size(); ++i) {
            TANDEM_RETURN_IF_ERROR(
                add(list[i], where + ".pretokenizers[" + std::to_string(i) + "]"));
        }
        return Status::ok_status();
    }
    if (type == "Split") {
        step->kind = Step::Kind::kSplit;
        const auto& pattern = json.value("pattern", nlohmann::json::object());
        const bool literal = pattern.contains("String");
        if (!literal && !pattern.contains("Regex")) {
            return invalid_argument(where +
                                    ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
        }
        auto re = Regex::compile(pattern[literal ? "String" : "Regex"].get<std::string>(), literal,
                                 where + ".pattern");
        if (!re.ok()) return re.status();
        step->re = std::make_unique<Regex>(std::move(*re));
        const std::string behavior = json.value("behavior", "Isolated");
        if (behavior == "Removed") {
            step->behavior = Behavior::kRemoved;
        } else if (behavior != "Isolated") {
            return invalid_argument(where + ".behavior: unsupported split behavior \"" + behavior +
                                    "\" (Isolated and Removed are supported)");
        }
        if (json.value("invert", false)) {
            return invalid_argument(where + ".invert: inverted splits are not supported");
        }
    } else if (type == "ByteLevel") {
        step->kind = Step::Kind::kByteLevel;
        step->add_prefix_space = json.value("add_prefix_space", false);
        if (json.value("use_regex", true)) {
            auto re = Regex::compile(kGpt2Pattern, false, where);
            if (!re.ok()) return re.status();
            step->re = std::make_unique<Regex>(std::move(*re));
        }
        byte_level_ = true;
    } else if (type == "Metaspace") {
        step->kind = Step::Kind::kMetaspace;
        step->replacement = json.value("replacement", "\xE2\x96\x81");
        step->split = json.value("split", true);
        std::string scheme = json.value("prepend_scheme", "");
        if (scheme.empty()) scheme = json.value("add_prefix_space", true) ? "always" : "never";
        if (scheme == "always")
            step->prepend = Step::Prepend::kAlways;
        else if (scheme == "first")
            step->prepend = Step::Prepend::kFirst;
        else if (scheme == "never")
            step->prepend = Step::Prepend::kNever;
        else
            return invalid_argument(where + ".prepend_scheme: unknown value \"" + scheme + "\"");
    } else {
        return invalid_argument(where + ".type: unsupported pre-tokenizer \"" + type + "\"");
    }
    steps_.push_back(std::move(step));
    return Status::ok_status();
}

void PreTokenizer::split(std::string& text, bool first_section, std::vector<Piece>& pieces) const {
    pieces.clear();
    if (text.empty()) return;
    pieces.push_back({0, text.size()});
    for (const auto& step : steps_) {
        switch (step->kind) {
            case Step::Kind::kSplit:
                split_by(*step->re, step->behavior, text, pieces);
                break;
            case Step::Kind::kByteLevel:
                if (step->add_prefix_space) {
                    std::string out;
                    std::vector<Piece> moved;
                    for (const Piece& p : pieces) {
                        const size_t begin = out.size();
                        if (text[p.begin] != ' ') out += ' ';
                        out.append(text, p.begin, p.end - p.begin);
                        moved.push_back({begin, out.size()});
                    }
                    text.swap(out);
                    pieces.swap(moved);
                }
                if (step->re) split_by(*step->re, Behavior::kIsolated, text, pieces);
                break;
            case Step::Kind::kMetaspace: {
                const std::string& r = step->replacement;
                std::string out;
                std::vector<Piece> moved;
                for (const Piece& p : pieces) {
                    const size_t begin = out.size();
                    const bool prepend =
                        step->prepend == Step::Prepend::kAlways ||
                        (step->prepend == Step::Prepend::kFirst && first_section && p.begin == 0);
                    if (prepend && text.compare(p.begin, r.size(), r) != 0 &&
                        text[p.begin] != ' ') {
                        out += r;
                    }
                    for (size_t i = p.begin; i < p.end; ++i) {
                        if (text[i] == ' ')
                            out += r;
                        else
                            out += text[i];
                    }
                    if (!step->split) {
                        moved.push_back({begin, out.size()});
                        continue;
                    }
                    // MergedWithNext: every replacement character starts a new word.
                    size_t start = begin;
                    for (size_t i = out.find(r, begin + 1); i != std::string::npos;
                         i = out.find(r, i + r.size())) {
                        if (i > start) moved.push_back({start, i});
                        start = i;
                    }
                    if (start < out.size()) moved.push_back({start, out.size()});
                }
                text.swap(out);
                pieces.swap(moved);
                break;
            }
        }
    }
}

}  // namespace tandem::tokenizer
