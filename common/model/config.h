#pragma once

// The policy model's shape (a Llama-style decoder) and its Hugging Face `config.json` form.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/config/job_spec.h"
#include "common/model/vocab.h"
#include "common/status.h"

namespace tandem::model {

// The Hugging Face architectures the engine runs. They differ only in optional parts of the
// decoder layer (see the flags of ModelConfig).
enum class Architecture : uint8_t {
    kLlama,  // LlamaForCausalLM, model_type "llama"
    kQwen2,  // Qwen2ForCausalLM, model_type "qwen2": q/k/v biases
    kQwen3,  // Qwen3ForCausalLM, model_type "qwen3": per-head RMSNorm of q and k before RoPE
};
std::string_view architecture_name(Architecture a);  // "LlamaForCausalLM", ...
std::string_view model_type_name(Architecture a);    // "llama", ...

// RoPE frequency scaling, as in transformers' ROPE_INIT_FUNCTIONS ("default", "linear",
// "llama3"). Plain value.
struct RopeScaling {
    enum class Type : uint8_t { kDefault, kLinear, kLlama3 };
    Type type = Type::kDefault;
    double factor = 1.0;                          // linear, llama3
    double low_freq_factor = 1.0;                 // llama3
    double high_freq_factor = 4.0;                // llama3
    int original_max_position_embeddings = 8192;  // llama3

    friend bool operator==(const RopeScaling&, const RopeScaling&) = default;
};
std::string_view rope_type_name(RopeScaling::Type t);  // "default", "linear", "llama3"

// The inverse frequencies theta^(-2i/d), i < d/2, after `scaling` (computed in double).
std::vector<double> rope_inv_freq(int head_dim, double theta, const RopeScaling& scaling);

// Immutable after validation; plain value, safe to share between threads.
struct ModelConfig {
    Architecture architecture = Architecture::kLlama;
    int vocab_size = 0;
    int hidden_size = 64;
    int num_layers = 2;
    int num_heads = 4;
    int num_kv_heads = 2;
    int intermediate_size = 176;
    int max_seq_len = 64;  // positions [0, max_seq_len) are valid (HF max_position_embeddings)
    double rope_theta = 10000.0;
    double rms_norm_eps = 1e-5;
    bool tie_embeddings = true;
    // 0: hidden_size / num_heads; else the per-head width (q_dim() may then differ from hidden).
    int explicit_head_dim = 0;
    bool qkv_bias = false;  // q/k/v projections have biases (Llama attention_bias, Qwen2)
    bool o_bias = false;    // o_proj has a bias (Llama attention_bias)
    bool mlp_bias = false;  // gate/up/down projections have biases (Llama mlp_bias)
    bool qk_norm = false;   // per-head RMSNorm of q and k before RoPE (Qwen3), weights [head_dim]
    RopeScaling rope_scaling;
    // Token ids from config.json (-1 / empty when absent); EOS may list several.
    int bos_token_id = -1;
    std::vector<int> eos_token_ids;

    int head_dim() const {
        return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_heads;
    }
    int q_dim() const { return num_heads * head_dim(); }
    int kv_dim() const { return num_kv_heads * head_dim(); }

    // Shapes must agree: heads divide hidden_size (unless head_dim is explicit), kv heads divide
    // heads, an even head_dim <= 256; RoPE scaling factors positive.
    Status validate() const;
    // The job file's model section plus the vocabulary's size.
    static Result<ModelConfig> from_spec(const config::ModelSpec& spec, int vocab_size);

    friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// Hugging Face `config.json` (transformers-4 form: rope_theta, rope_scaling, torch_dtype). The
// vocabulary (when given) is stored next to the standard fields as `tandem_charset` plus
// bos/eos/pad token ids.
nlohmann::json to_hf_config(const ModelConfig& config, const Vocabulary* vocab);
struct HfConfig {
    ModelConfig model;
    std::optional<Vocabulary> vocab;  // present when the file has `tandem_charset`
};
// Reads both the transformers-4 form (rope_theta, rope_scaling {rope_type|type, ...},
// torch_dtype) and the transformers-5 form (rope_parameters {rope_type, rope_theta, ...}, dtype).
// Refuses, naming `what` and the key: another model_type or architecture, hidden_act other than
// silu, sliding-window attention, mixture-of-experts fields, quantization_config, a rope_type
// other than default/linear/llama3, partial rotary factors, and shapes validate() rejects.
// `what` names the source in errors ("ckpt/config.json").
Result<HfConfig> from_hf_config(const nlohmann::json& json, std::string_view what);

Status write_hf_config(const std::string& path, const ModelConfig& config, const Vocabulary* vocab);
Result<HfConfig> read_hf_config(const std::string& path);
// A JSON file; errors name `path`.
Result<nlohmann::json> read_json_file(const std::string& path);

}  // namespace tandem::model
