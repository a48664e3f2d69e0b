#include "common/model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tandem::model {

std::string_view architecture_name(Architecture a) {
    switch (a) {
        case Architecture::kLlama:
            return "LlamaForCausalLM";
        case Architecture::kQwen2:
            return "Qwen2ForCausalLM";
        case Architecture::kQwen3:
            return "Qwen3ForCausalLM";
    }
    return "?";
}

std::string_view model_type_name(Architecture a) {
    switch (a) {
        case Architecture::kLlama:
            return "llama";
        case Architecture::kQwen2:
            return "qwen2";
        case Architecture::kQwen3:
            return "qwen3";
    }
    return "?";
}

std::string_view rope_type_name(RopeScaling::Type t) {
    switch (t) {
        case RopeScaling::Type::kDefault:
            return "default";
        case RopeScaling::Type::kLinear:
            return "linear";
        case RopeScaling::Type::kLlama3:
            return "llama3";
    }
    return "?";
}

std::vector<double> rope_inv_freq(int head_dim, double theta, const RopeScaling& r) {
    const int half = head_dim / 2;
    std::vector<double> inv(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) inv[i] = std::pow(theta, -2.0 * i / head_dim);
    if (r.type == RopeScaling::Type::kLinear) {
        for (double& f : inv) f /= r.factor;
    } else if (r.type == RopeScaling::Type::kLlama3) {
        // transformers' _compute_llama3_parameters: long wavelengths are divided by the factor,
        // short ones kept, the band between interpolated smoothly.
        const double old_len = r.original_max_position_embeddings;
        const double low_wavelen = old_len / r.low_freq_factor;
        const double high_wavelen = old_len / r.high_freq_factor;
        for (double& f : inv) {
            const double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / r.factor;
            } else if (wavelen >= high_wavelen) {
                const double smooth = (old_len / wavelen - r.low_freq_factor) /
                                      (r.high_freq_factor - r.low_freq_factor);
                f = (1.0 - smooth) * f / r.factor + smooth * f;
            }
        }
    }
    return inv;
}

Status ModelConfig::validate() const {
    auto bad = [](std::string m) { return invalid_argument("model config: " + m); };
    if (vocab_size < 1) return bad(fmt::format("vocab_size must be positive, got {}", vocab_size));
    if (hidden_size < 1 || num_layers < 1 || num_heads < 1 || num_kv_heads < 1 ||
        intermediate_size < 1 || explicit_head_dim < 0) {
        return bad(
            "hidden_size, num_layers, num_heads, num_kv_heads and intermediate_size must "
            "be positive");
    }
    if (explicit_head_dim == 0 && hidden_size % num_heads != 0) {
        return bad(
            fmt::format("num_heads ({}) must divide hidden_size ({})", num_heads, hidden_size));
    }
    if (num_heads % num_kv_heads != 0) {
        return bad(
            fmt::format("num_kv_heads ({}) must divide num_heads ({})", num_kv_heads, num_heads));
    }
    const int d = head_dim();
    if (d % 2 != 0 || d > 256 || d < 2) {
        return bad(fmt::format("head_dim ({}) must be even and at most 256", d));
    }
    if (max_seq_len < 2) return bad(fmt::format("max_seq_len must be >= 2, got {}", max_seq_len));
    if (!(rope_theta > 0.0)) return bad("rope_theta must be positive");
    if (!(rms_norm_eps >= 0.0)) return bad("rms_norm_eps must be non-negative");
    const RopeScaling& r = rope_scaling;
    if (r.type != RopeScaling::Type::kDefault && !(r.factor > 0.0)) {
        return bad(fmt::format("rope scaling factor must be positive, got {}", r.factor));
    }
    if (r.type == RopeScaling::Type::kLlama3 &&
        (!(r.low_freq_factor > 0.0) || !(r.high_freq_factor > r.low_freq_factor) ||
         r.original_max_position_embeddings < 1)) {
        return bad(
            "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and a positive "
            "original_max_position_embeddings");
    }
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
    j["architectures"] = {std::string(architecture_name(c.architecture))};
    j["model_type"] = std::string(model_type_name(c.architecture));
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
    const RopeScaling& r = c.rope_scaling;
    if (r.type == RopeScaling::Type::kDefault) {
        j["rope_scaling"] = nullptr;
    } else {
        nlohmann::json rs{{"rope_type", std::string(rope_type_name(r.type))}, {"factor", r.factor}};
        if (r.type == RopeScaling::Type::kLlama3) {
            rs["low_freq_factor"] = r.low_freq_factor;
            rs["high_freq_factor"] = r.high_freq_factor;
            rs["original_max_position_embeddings"] = r.original_max_position_embeddings;
        }
        j["rope_scaling"] = rs;
    }
    j["tie_word_embeddings"] = c.tie_embeddings;
    switch (c.architecture) {
        case Architecture::kLlama:
            j["attention_bias"] = c.qkv_bias;
            j["mlp_bias"] = c.mlp_bias;
            break;
        case Architecture::kQwen2:
            j["use_sliding_window"] = false;
            break;
        case Architecture::kQwen3:
            j["attention_bias"] = c.qkv_bias;
            j["use_sliding_window"] = false;
            break;
    }
    j["initializer_range"] = 0.02;
    j["torch_dtype"] = "float32";
    if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
    if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
    if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
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

Result<Architecture> parse_architecture(const nlohmann::json& j, std::string_view what) {
    std::string model_type = "llama";
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "model_type", model_type, false));
    Architecture arch;
    if (model_type == "llama") {
        arch = Architecture::kLlama;
    } else if (model_type == "qwen2") {
        arch = Architecture::kQwen2;
    } else if (model_type == "qwen3") {
        arch = Architecture::kQwen3;
    } else {
        return invalid_argument(fmt::format(
            "{}: model_type \"{}\" is not supported (llama, qwen2, qwen3)", what, model_type));
    }
    if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
        if (!it->is_array() || it->size() != 1 || !(*it)[0].is_string()) {
            return invalid_argument(
                fmt::format("{}: architectures must list one name, got {}", what, it->dump()));
        }
        const std::string name = (*it)[0].get<std::string>();
        if (name != architecture_name(arch)) {
            return invalid_argument(fmt::format(
                "{}: architectures \"{}\" is not supported for model_type \"{}\" (expected {})",
                what, name, model_type, architecture_name(arch)));
        }
    }
    return arch;
}

// Fields that would change the computation in ways the engine does not implement.
Status refuse_unsupported(const nlohmann::json& j, std::string_view what) {
    std::string act = "silu";
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "hidden_act", act, false));
    if (act != "silu") {
        return invalid_argument(
            fmt::format("{}: hidden_act \"{}\" is not supported (silu)", what, act));
    }
    bool sliding = false;
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "use_sliding_window", sliding, false));
    if (sliding) {
        return invalid_argument(
            fmt::format("{}: use_sliding_window: sliding-window attention is not supported", what));
    }
    if (auto it = j.find("layer_types"); it != j.end() && it->is_array()) {
        for (size_t i = 0; i < it->size(); ++i) {
            if ((*it)[i] != "full_attention") {
                return invalid_argument(fmt::format(
                    "{}: layer_types[{}] is {}: only full_attention layers are supported", what, i,
                    (*it)[i].dump()));
            }
        }
    }
    for (const char* key : {"num_experts", "num_local_experts", "n_routed_experts",
                            "num_experts_per_tok", "moe_intermediate_size"}) {
        if (auto it = j.find(key);
            it != j.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0.0)) {
            return invalid_argument(
                fmt::format("{}: {}: mixture-of-experts models are not supported", what, key));
        }
    }
    if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null()) {
        return invalid_argument(
            fmt::format("{}: quantization_config: quantized checkpoints are not supported", what));
    }
    double partial = 1.0;
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "partial_rotary_factor", partial, false));
    if (partial != 1.0) {
        return invalid_argument(
            fmt::format("{}: partial_rotary_factor {} is not supported (only 1.0)", what, partial));
    }
    return Status();
}

// RoPE from rope_parameters (transformers 5) or rope_theta + rope_scaling (transformers 4).
Status parse_rope(const nlohmann::json& j, std::string_view what, ModelConfig& c) {
    nlohmann::json params = nlohmann::json::object();
    std::string key = "rope_scaling";
    if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
        key = "rope_parameters";
        if (!it->is_object()) {
            return invalid_argument(fmt::format("{}: rope_parameters must be an object", what));
        }
        params = *it;
        // Per-layer-type parameters: only full attention layers exist here.
        if (params.contains("full_attention") && params["full_attention"].is_object()) {
            if (params.size() != 1) {
                return invalid_argument(fmt::format(
                    "{}: rope_parameters for several layer types are not supported", what));
            }
            params = nlohmann::json(params["full_attention"]);
        }
        TANDEM_RETURN_IF_ERROR(get_field(params, fmt::format("{}: rope_parameters", what),
                                         "rope_theta", c.rope_theta, false));
    } else {
        TANDEM_RETURN_IF_ERROR(get_field(j, what, "rope_theta", c.rope_theta, false));
        if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
            if (!rs->is_object()) {
                return invalid_argument(fmt::format("{}: rope_scaling must be an object", what));
            }
            params = *rs;
        }
    }
    const std::string where = fmt::format("{}: {}", what, key);
    std::string type = "default";
    if (params.contains("rope_type")) {
        TANDEM_RETURN_IF_ERROR(get_field(params, where, "rope_type", type, false));
    } else {
        TANDEM_RETURN_IF_ERROR(get_field(params, where, "type", type, false));
    }
    RopeScaling& r = c.rope_scaling;
    if (type == "default") {
        r.type = RopeScaling::Type::kDefault;
    } else if (type == "linear") {
        r.type = RopeScaling::Type::kLinear;
        TANDEM_RETURN_IF_ERROR(get_field(params, where, "factor", r.factor, true));
    } else if (type == "llama3") {
        r.type = RopeScaling::Type::kLlama3;
        TANDEM_RETURN_IF_ERROR(get_field(params, where, "factor", r.factor, true));
        TANDEM_RETURN_IF_ERROR(
            get_field(params, where, "low_freq_factor", r.low_freq_factor, true));
        TANDEM_RETURN_IF_ERROR(
            get_field(params, where, "high_freq_factor", r.high_freq_factor, true));
        TANDEM_RETURN_IF_ERROR(get_field(params, where, "original_max_position_embeddings",
                                         r.original_max_position_embeddings, true));
    } else {
        return invalid_argument(fmt::format(
            "{}: rope_type \"{}\" is not supported (default, linear, llama3)", where, type));
    }
    if (auto it = params.find("partial_rotary_factor");
        it != params.end() && it->is_number() && it->get<double>() != 1.0) {
        return invalid_argument(
            fmt::format("{}: partial_rotary_factor {} is not supported", where, it->dump()));
    }
    return Status();
}

Status parse_token_ids(const nlohmann::json& j, std::string_view what, ModelConfig& c) {
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "bos_token_id", c.bos_token_id, false));
    if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
        try {
            if (it->is_array()) {
                c.eos_token_ids = it->get<std::vector<int>>();
            } else {
                c.eos_token_ids = {it->get<int>()};
            }
        } catch (const nlohmann::json::exception& e) {
            return invalid_argument(fmt::format("{}: field \"eos_token_id\": {}", what, e.what()));
        }
    }
    return Status();
}

}  // namespace

Result<HfConfig> from_hf_config(const nlohmann::json& j, std::string_view what) {
    if (!j.is_object()) return invalid_argument(fmt::format("{}: not a JSON object", what));
    HfConfig out;
    ModelConfig& c = out.model;
    TANDEM_ASSIGN_OR_RETURN(c.architecture, parse_architecture(j, what));
    TANDEM_RETURN_IF_ERROR(refuse_unsupported(j, what));
    bool attention_bias = false;
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "attention_bias", attention_bias, false));
    switch (c.architecture) {
        case Architecture::kLlama:
            c.qkv_bias = c.o_bias = attention_bias;
            TANDEM_RETURN_IF_ERROR(get_field(j, what, "mlp_bias", c.mlp_bias, false));
            break;
        case Architecture::kQwen2:  // q/k/v always carry biases, o_proj never
            c.qkv_bias = true;
            break;
        case Architecture::kQwen3:
            c.qkv_bias = c.o_bias = attention_bias;
            c.qk_norm = true;
            break;
    }
    TANDEM_RETURN_IF_ERROR(parse_rope(j, what, c));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "vocab_size", c.vocab_size, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "hidden_size", c.hidden_size, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "intermediate_size", c.intermediate_size, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "num_hidden_layers", c.num_layers, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "num_attention_heads", c.num_heads, true));
    c.num_kv_heads = c.num_heads;
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "num_key_value_heads", c.num_kv_heads, false));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "max_position_embeddings", c.max_seq_len, true));
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "rms_norm_eps", c.rms_norm_eps, false));
    c.tie_embeddings = false;  // transformers' default for all three architectures
    TANDEM_RETURN_IF_ERROR(get_field(j, what, "tie_word_embeddings", c.tie_embeddings, false));
    TANDEM_RETURN_IF_ERROR(parse_token_ids(j, what, c));
    if (c.num_heads > 0) {
        int head_dim = 0;
        TANDEM_RETURN_IF_ERROR(get_field(j, what, "head_dim", head_dim, false));
        if (head_dim < 0) {
            return invalid_argument(
                fmt::format("{}: head_dim must be positive, got {}", what, head_dim));
        }
        if (head_dim > 0 && head_dim * c.num_heads != c.hidden_size) c.explicit_head_dim = head_dim;
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
        c.bos_token_id = -1;  // the vocabulary carries its special ids
        c.eos_token_ids.clear();
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

Result<nlohmann::json> read_json_file(const std::string& path) {
    std::ifstream f(path);
    if (!f) return not_found(fmt::format("{}: cannot open", path));
    std::stringstream ss;
    ss << f.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return invalid_argument(fmt::format("{}: not valid JSON", path));
    return j;
}

Result<HfConfig> read_hf_config(const std::string& path) {
    TANDEM_ASSIGN_OR_RETURN(nlohmann::json j, read_json_file(path));
    return from_hf_config(j, path);
}

}  // namespace tandem::model
