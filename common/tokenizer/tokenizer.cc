#include "common/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/tokenizer/added_tokens.h"
#include "common/tokenizer/bpe.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

using nlohmann::json;

Result<std::string> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return not_found(path.string() + ": cannot open");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// tokenizer_config.json writes a token as "text" or {"content": "text", ...}.
std::optional<std::string> config_token(const json& config, const char* key) {
    if (!config.contains(key)) return std::nullopt;
    const json& v = config[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        return v["content"].get<std::string>();
    }
    return std::nullopt;
}

std::string clean_up_spaces(std::string text) {
    static const std::pair<const char*, const char*> kRules[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kRules) {
        const std::string f(from), t(to);
        for (size_t pos = text.find(f); pos != std::string::npos;
             pos = text.find(f, pos + t.size())) {
            text.replace(pos, f.size(), t);
        }
    }
    return text;
}

}  // namespace

struct Tokenizer::Impl {
    Normalizer normalizer;
    PreTokenizer pre_tokenizer;
    std::unique_ptr<BpeModel> model;
    Decoder decoder;
    std::vector<AddedToken> added;
    std::unordered_map<int32_t, size_t> added_by_id;
    std::unordered_map<std::string, int32_t> added_by_content;
    AddedTokenMatcher raw_matcher;         // tokens with normalized=false, matched in the input
    AddedTokenMatcher normalized_matcher;  // tokens with normalized=true, matched after normalizing
    std::unordered_set<int32_t> special;
    std::vector<int32_t> prefix, suffix;
    std::optional<int32_t> bos, eos, pad;
    bool clean_up = true;
    int32_t vocab_size = 0;

    Status post_processor(const json& j, const std::string& where);
    void encode_plain(std::string_view text, bool first_section, std::string& work,
                      std::vector<Piece>& pieces, std::vector<int32_t>& out) const;
};

Status Tokenizer::Impl::post_processor(const json& j, const std::string& where) {
    if (j.is_null()) return Status::ok_status();
    const std::string type = j.value("type", "");
    if (type == "Sequence") {
        const auto& list = j.value("processors", json::array());
        for (size_t i = 0; i < list.size(); ++i) {
            TANDEM_RETURN_IF_ERROR(
                post_processor(list[i], where + ".processors[" + std::to_string(i) + "]"));
        }
        return Status::ok_status();
    }
    if (type == "ByteLevel") return Status::ok_status();  // offsets only
    if (type == "TemplateProcessing") {
        const auto& single = j.value("single", json::array());
        const auto& specials = j.value("special_tokens", json::object());
        bool after = false;
        for (size_t i = 0; i < single.size(); ++i) {
            const json& item = single[i];
            if (item.contains("Sequence")) {
                after = true;
                continue;
            }
            if (!item.contains("SpecialToken")) {
                return invalid_argument(
                    fmt::format("{}.single[{}]: expected Sequence or SpecialToken", where, i));
            }
            const std::string name = item["SpecialToken"].value("id", "");
            if (!specials.contains(name) || !specials[name].contains("ids")) {
                return invalid_argument(
                    fmt::format("{}.special_tokens: \"{}\" is not defined", where, name));
            }
            for (const auto& id : specials[name]["ids"]) {
                (after ? suffix : prefix).push_back(id.get<int32_t>());
            }
        }
        return Status::ok_status();
    }
    if (type == "BertProcessing" || type == "RobertaProcessing") {
        prefix.push_back(j.at("cls").at(1).get<int32_t>());
        suffix.push_back(j.at("sep").at(1).get<int32_t>());
        return Status::ok_status();
    }
    return invalid_argument(where + ".type: unsupported post-processor \"" + type + "\"");
}

Result<Tokenizer> Tokenizer::load(const std::filesystem::path& dir) {
    const auto tokenizer_path = dir / "tokenizer.json";
    auto tokenizer_json = read_file(tokenizer_path);
    if (!tokenizer_json.ok()) return tokenizer_json.status();
    std::string config_json = "{}";
    const auto config_path = dir / "tokenizer_config.json";
    if (std::filesystem::exists(config_path)) {
        auto c = read_file(config_path);
        if (!c.ok()) return c.status();
        config_json = std::move(*c);
    }
    auto tok = from_json(*tokenizer_json, config_json, tokenizer_path.string());
    if (!tok.ok()) return tok.status();
    return std::move(*tok);
}

Result<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json,
                                       std::string_view tokenizer_config_json,
                                       const std::string& origin) {
    json j, config;
    try {
        j = json::parse(tokenizer_json);
    } catch (const std::exception& e) {
        return invalid_argument(origin + ": not valid JSON: " + e.what());
    }
    try {
        config = json::parse(tokenizer_config_json);
    } catch (const std::exception& e) {
        return invalid_argument(origin + " (tokenizer_config.json): not valid JSON: " + e.what());
    }
    auto impl = std::make_unique<Impl>();
    try {
        const auto with_origin = [&](const Status& s) { return s.with_context(origin); };
        auto normalizer = Normalizer::from_json(j.value("normalizer", json()), "normalizer");
        if (!normalizer.ok()) return with_origin(normalizer.status());
        impl->normalizer = std::move(*normalizer);
        auto pre = PreTokenizer::from_json(j.value("pre_tokenizer", json()), "pre_tokenizer");
        if (!pre.ok()) return with_origin(pre.status());
        impl->pre_tokenizer = std::move(*pre);
        if (!j.contains("model")) return invalid_argument(origin + ": model: missing");
        auto model = BpeModel::from_json(j["model"], impl->pre_tokenizer.byte_level(), "model");
        if (!model.ok()) return with_origin(model.status());
        impl->model = std::move(*model);
        auto decoder = Decoder::from_json(j.value("decoder", json()), "decoder");
        if (!decoder.ok()) return with_origin(decoder.status());
        impl->decoder = std::move(*decoder);
        TANDEM_RETURN_IF_ERROR(
            with_origin(impl->post_processor(j.value("post_processor", json()), "post_processor")));

        impl->vocab_size = impl->model->max_id() + 1;
        const auto& added = j.value("added_tokens", json::array());
        for (size_t i = 0; i < added.size(); ++i) {
            const json& a = added[i];
            AddedToken t{a.at("id").get<int32_t>(), a.at("content").get<std::string>(),
                         a.value("special", false), a.value("lstrip", false),
                         a.value("rstrip", false),  a.value("normalized", false)};
            if (t.id < 0)
                return invalid_argument(
                    fmt::format("{}: added_tokens[{}].id: negative", origin, i));
            if (t.special) impl->special.insert(t.id);
            impl->added_by_id[t.id] = impl->added.size();
            impl->added_by_content[t.content] = t.id;
            if (t.normalized && !impl->normalizer.empty()) {
                std::string content = t.content;
                impl->normalizer.apply(content);
                impl->normalized_matcher.add(content, t.id, t.lstrip, t.rstrip);
            } else {
                impl->raw_matcher.add(t.content, t.id, t.lstrip, t.rstrip);
            }
            impl->vocab_size = std::max(impl->vocab_size, t.id + 1);
            impl->added.push_back(std::move(t));
        }

        Tokenizer tok(std::move(impl));
        Impl& m = *tok.impl_;
        for (const auto& s : config.value("additional_special_tokens", json::array())) {
            const std::string name = s.is_string() ? s.get<std::string>() : s.value("content", "");
            if (auto id = tok.token_to_id(name)) m.special.insert(*id);
        }
        const auto lookup = [&](const char* key) -> std::optional<int32_t> {
            const auto name = config_token(config, key);
            return name ? tok.token_to_id(*name) : std::nullopt;
        };
        m.bos = lookup("bos_token");
        m.eos = lookup("eos_token");
        m.pad = lookup("pad_token");
        if (config.contains("clean_up_tokenization_spaces") &&
            config["clean_up_tokenization_spaces"].is_boolean()) {
            m.clean_up = config["clean_up_tokenization_spaces"].get<bool>();
        }
        return tok;
    } catch (const std::exception& e) {
        return invalid_argument(origin + ": " + e.what());
    }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

void Tokenizer::Impl::encode_plain(std::string_view text, bool first_section, std::string& work,
                                   std::vector<Piece>& pieces, std::vector<int32_t>& out) const {
    work.assign(text);
    normalizer.apply(work);
    pre_tokenizer.split(work, first_section, pieces);
    for (const Piece& p : pieces) {
        model->encode_word(std::string_view(work).substr(p.begin, p.end - p.begin), out);
    }
}

Status Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const {
    const size_t bad = first_invalid_utf8(text);
    if (bad != text.size()) {
        return invalid_argument(fmt::format("text is not valid UTF-8 at byte {} (0x{:02X})", bad,
                                            static_cast<unsigned char>(text[bad])));
    }
    const Impl& m = *impl_;
    std::vector<Section> sections, inner;
    std::string work, normalized;
    std::vector<Piece> pieces;
    m.raw_matcher.split(text, sections);
    for (size_t i = 0; i < sections.size(); ++i) {
        const Section& s = sections[i];
        if (s.id >= 0) {
            out.push_back(s.id);
            continue;
        }
        const std::string_view plain = text.substr(s.begin, s.end - s.begin);
        const bool first = i == 0;
        if (m.normalized_matcher.empty()) {
            m.encode_plain(plain, first, work, pieces, out);
            continue;
        }
        // Tokens written in normalized form are found after normalizing; the text between them
        // is pre-tokenized and encoded as it is (already normalized).
        normalized.assign(plain);
        m.normalizer.apply(normalized);
        m.normalized_matcher.split(normalized, inner);
        for (const Section& n : inner) {
            if (n.id >= 0) {
                out.push_back(n.id);
                continue;
            }
            work.assign(normalized, n.begin, n.end - n.begin);
            m.pre_tokenizer.split(work, first, pieces);
            for (const Piece& p : pieces) {
                m.model->encode_word(std::string_view(work).substr(p.begin, p.end - p.begin), out);
            }
        }
    }
    return Status::ok_status();
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text,
                                               bool add_special_tokens) const {
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = impl_->prefix;
    TANDEM_RETURN_IF_ERROR(encode_into(text, ids));
    if (add_special_tokens) ids.insert(ids.end(), impl_->suffix.begin(), impl_->suffix.end());
    return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
    const Impl& m = *impl_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        if (options.skip_special_tokens && m.special.count(id)) continue;
        if (const auto it = m.added_by_id.find(id); it != m.added_by_id.end()) {
            tokens.push_back(m.added[it->second].content);
        } else if (const std::string* t = m.model->id_to_token(id)) {
            tokens.push_back(*t);
        }
    }
    std::string text = m.decoder.decode(std::move(tokens));
    if (options.clean_up_tokenization_spaces.value_or(m.clean_up))
        text = clean_up_spaces(std::move(text));
    return text;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    if (const auto it = impl_->added_by_content.find(std::string(token));
        it != impl_->added_by_content.end()) {
        return it->second;
    }
    return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
    if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
        return impl_->added[it->second].content;
    }
    if (const std::string* t = impl_->model->id_to_token(id)) return *t;
    return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const { return impl_->special.count(id) > 0; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<int32_t> Tokenizer::pad_id() const { return impl_->pad; }
const std::vector<int32_t>& Tokenizer::prefix_ids() const { return impl_->prefix; }
const std::vector<int32_t>& Tokenizer::suffix_ids() const { return impl_->suffix; }

std::string Tokenizer::describe() const {
    const Impl& m = *impl_;
    return fmt::format("{}BPE, {} tokens ({} added, {} special){}",
                       m.pre_tokenizer.byte_level() ? "byte-level " : "", m.vocab_size,
                       m.added.size(), m.special.size(),
                       m.normalizer.empty() ? "" : ", with normalizer");
}

}  // namespace tandem::tokenizer
