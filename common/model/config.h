#pragma once

// The policy model's shape (a Llama-style decoder) and its Hugging Face `config.json` form.

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "common/config/job_spec.h"
#include "common/model/vocab.h"
#include "common/status.h"

namespace tandem::model {

// Immutable after validation; plain value, safe to share between threads.
struct ModelConfig {
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

    int head_dim() const { return hidden_size / num_heads; }
    int q_dim() const { return num_heads * head_dim(); }
    int kv_dim() const { return num_kv_heads * head_dim(); }

    // Shapes must agree: heads divide hidden_size, kv heads divide heads, an even head_dim <= 256.
    Status validate() const;
    // The job file's model section plus the vocabulary's size.
    static Result<ModelConfig> from_spec(const config::ModelSpec& spec, int vocab_size);

    friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// Hugging Face LlamaForCausalLM `config.json`. The vocabulary (when given) is stored next to the
// standard fields as `tandem_charset` plus bos/eos/pad token ids.
nlohmann::json to_hf_config(const ModelConfig& config, const Vocabulary* vocab);
struct HfConfig {
    ModelConfig model;
    std::optional<Vocabulary> vocab;  // present when the file has `tandem_charset`
};
// `what` names the source in errors ("ckpt/config.json").
Result<HfConfig> from_hf_config(const nlohmann::json& json, std::string_view what);

Status write_hf_config(const std::string& path, const ModelConfig& config, const Vocabulary* vocab);
Result<HfConfig> read_hf_config(const std::string& path);

}  // namespace tandem::model
