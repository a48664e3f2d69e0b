#include "common/model/config.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tandem::model {

Status ModelConfig::validate() const {
    auto bad = [](std::string m) { return invalid_argument("model config: " + m); };
    if (vocab_size < 1) return bad(fmt::format("vocab_size must be positive, got {}", vocab_size));
    if (hidden_size < 1 || num_layers < 1 || num_heads < 1 || num_kv_heads < 1 ||
        intermediate_size < 1) {
        return bad(
            "hidden_size, num_layers, num_heads, num_kv_heads and intermediate_size must "
            "be positive");
    }
    if (hidden_size % num_heads != 0) {
        return bad(
            fmt::format("num_heads ({}) must divide hidden_size ({})", num_heads, hidden_size));
    }
    if (num_heads % num_kv_heads != 0) {
        return bad(
            fmt::format("num_kv_heads ({}) must divide num_heads ({})", num_kv_heads, num_heads));
    }
    const int d = head_dim();
    if (d % 2 != 0 || d > 256) {
        return bad(fmt::format("head_dim ({}) must be even and at most 256", d));
    }
    if (max_seq_len < 2) return bad(fmt::format("max_seq_len must be >= 2, got {}", max_seq_len));
    if (!(rope_theta > 0.0)) return bad("rope_theta must be positive");
    if (!(rms_norm_eps >= 0.0)) return bad("rms_norm_eps must be non-negative");
    return Status();
}

Result<ModelConfig> ModelConfig::from_spec(const config::ModelSpec& spec, int vocab_size) {
    ModelConfig c;
    c.vocab_size = vocab_size;
    c.hidden_size = spec.hidden_size;
    c.num_layers = spec.num_layers;
    c.num_heads = spec.num_heads;
    c.num_kv_heads = spec.num_kv_heads;
    c.intermediate_size = spec.intermediate_size;
    c.max_seq_len = spec.max_seq_len;
    c.rope_theta = spec.rope_theta;
    c.rms_norm_eps = spec.rms_norm_eps;
    c.tie_embeddings = spec.tie_embeddings;
    TANDEM_RETURN_IF_ERROR(c.validate());
    return c;
}

nlohmann::json to_hf_config(const ModelConfig& c, const Vocabulary* vocab) {
    nlohmann::json j;
    j["architectures"] = {"LlamaForCausalLM"};
    j["model_type"] = "llama";
    j["hidden_act"] = "silu";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim();
    j["max_position_embeddings"] = c.max_seq_len;
    j["rms_norm_eps"] = c.rms_norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["rope_scaling"] = nullptr;
    j["tie_word_embeddings"] = c.tie_embeddings;
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["initializer_range"] = 0.02;
    j["torch_dtype"] = "float32";
    if (vocab) {
        j["bos_token_id"] = Vocabulary::kBos;
        j["eos_token_id"] = Vocabulary::kEos;
        j["pad_token_id"] = Vocabulary::kPad;
        j["tandem_charset"] = vocab->charset();
    }
    return j;
}

namespace {

template <typename T>
Status get_field(const nlohmann::json& j, std::string_view what, const char* key, T& out,
                 bool required) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        if (required) return invalid_argument(fmt::format("{}: missing field \"{}\"", what, key));
        return Status();
    }
    try {
        out = it->get<T>();
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(fmt::format("{}: field \"{}\": {}", what, key, e.what()));
    }
    return Status();
}

}  // namespace

Result<HfConfig> from_hf_config(const nlohmann::json& j, std::string_view what) {
    if (!j.is_object()) return invalid_argument(fmt::format("{}: not a JSON object", what));
    std::string model_type = "llama";
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "model_type", model_type, false));
    if (model_type != "llama") {
        return invalid_argument(
            fmt::format("{}: model_type \"{}\" is not supported (only llama)", what, model_type));
    }
    std::string act = "silu";
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "hidden_act", act, false));
    if (act != "silu") {
        return invalid_argument(fmt::format("{}: hidden_act \"{}\" is not supported", what, act));
    }
    for (const char* key : {"attention_bias", "mlp_bias"}) {
        bool flag = false;
        TANDEM_RETURN_IF_ERROR(get_field(j, what, key, flag, false));
        if (flag) return invalid_argument(fmt::format("{}: {} is not supported", what, key));
    }
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
        return invalid_argument(fmt::format("{}: rope_scaling is not supported", what));
    }
    HfConfig out;
    ModelConfig& c = out.model;
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "vocab_size", c.vocab_size, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "hidden_size", c.hidden_size, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "intermediate_size", c.intermediate_size, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "num_hidden_layers", c.num_layers, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "num_attention_heads", c.num_heads, true));
    c.num_kv_heads = c.num_heads;
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "num_key_value_heads", c.num_kv_heads, false));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "max_position_embeddings", c.max_seq_len, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "rms_norm_eps", c.rms_norm_eps, false));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "rope_theta", c.rope_theta, false));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "tie_word_embeddings", c.tie_embeddings, false));
    if (c.num_heads > 0) {
        int head_dim = c.hidden_size / c.num_heads;
        TANDEM_RETURN_IF_ERROR(get_field(j, what, "head_dim", head_dim, false));
        if (head_dim * c.num_heads != c.hidden_size) {
            return invalid_argument(fmt::format(
                "{}: head_dim {} * num_attention_heads {} != hidden_size {} is not supported", what,
                head_dim, c.num_heads, c.hidden_size));
        }
    }
    if (Status s = c.validate(); !s.ok()) return s.with_context(what);
    if (j.contains("tandem_charset")) {
        std::string charset;
        TANDEM_RETURN_IF_ERROR(get_field(j, what, "tandem_charset", charset, true));
        auto vocab = Vocabulary::create(std::move(charset));
        if (!vocab.ok()) return vocab.status().with_context(what);
        if (vocab->size() != c.vocab_size) {
            return invalid_argument(
                fmt::format("{}: tandem_charset gives {} tokens but vocab_size is {}", what,
                            vocab->size(), c.vocab_size));
        }
        for (const auto& [key, expect] : {std::pair{"bos_token_id", Vocabulary::kBos},
                                          std::pair{"eos_token_id", Vocabulary::kEos},
                                          std::pair{"pad_token_id", Vocabulary::kPad}}) {
            int id = expect;
            TANDEM_RETURN_IF_ERROR(get_field(j, what, key, id, false));
            if (id != expect) {
                return invalid_argument(fmt::format(
                    "{}: {} must be {} for a tandem vocabulary, got {}", what, key, expect, id));
            }
        }
        out.vocab = std::move(vocab).value();
    }
    return out;
}

Status write_hf_config(const std::string& path, const ModelConfig& config,
                       const Vocabulary* vocab) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::trunc);
        if (!f) return unavailable(fmt::format("{}: cannot open for writing", tmp));
        f << to_hf_config(config, vocab).dump(2) << "\n";
        if (!f.flush()) return unavailable(fmt::format("{}: write failed", tmp));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        return unavailable(fmt::format("{}: rename from {} failed", path, tmp));
    }
    return Status();
}

Result<HfConfig> read_hf_config(const std::string& path) {
    std::ifstream f(path);
    if (!f) return not_found(fmt::format("{}: cannot open", path));
    std::stringstream ss;
    ss << f.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return invalid_argument(fmt::format("{}: not valid JSON", path));
    return from_hf_config(j, path);
}

}  // namespace tandem::model
