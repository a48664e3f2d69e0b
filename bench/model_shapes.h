#pragma once

// The model shapes the benchmarks time (tandem-bench-model-forward, tandem-bench-gpu-model,
// tandem-bench-gpu-generate): Qwen2.5-0.5B and Llama-3.2-1B as their Hugging Face configs give
// them, with random weights.

#include <vector>

#include "common/model/config.h"

namespace tandem::bench {

struct ModelShape {
    const char* name;
    model::ModelConfig config;
};

inline model::ModelConfig qwen25_05b_config() {
    model::ModelConfig q;
    q.architecture = model::Architecture::kQwen2;
    q.vocab_size = 151936;
    q.hidden_size = 896;
    q.num_layers = 24;
    q.num_heads = 14;
    q.num_kv_heads = 2;
    q.intermediate_size = 4864;
    q.max_seq_len = 32768;
    q.rope_theta = 1000000.0;
    q.rms_norm_eps = 1e-6;
    q.qkv_bias = true;
    q.tie_embeddings = true;
    return q;
}

inline model::ModelConfig llama32_1b_config() {
    model::ModelConfig l;
    l.architecture = model::Architecture::kLlama;
    l.vocab_size = 128256;
    l.hidden_size = 2048;
    l.num_layers = 16;
    l.num_heads = 32;
    l.num_kv_heads = 8;
    l.intermediate_size = 8192;
    l.max_seq_len = 131072;
    l.rope_theta = 500000.0;
    l.rms_norm_eps = 1e-5;
    l.tie_embeddings = true;
    l.rope_scaling.type = model::RopeScaling::Type::kLlama3;
    l.rope_scaling.factor = 32.0;
    l.rope_scaling.original_max_position_embeddings = 8192;
    return l;
}

inline std::vector<ModelShape> reference_model_shapes() {
    return {{"qwen2.5-0.5b", qwen25_05b_config()}, {"llama-3.2-1b", llama32_1b_config()}};
}

}  // namespace tandem::bench
