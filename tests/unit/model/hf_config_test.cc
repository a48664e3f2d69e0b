// config.json of Llama, Qwen2 and Qwen3 in the transformers-4 and transformers-5 forms, and every
// refusal (each names the file and the key).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/model/config.h"
#include "tests/unit/model/hf_test_util.h"

namespace tandem::model {
namespace {

constexpr const char* kWhat = "m/config.json";

// Llama 3.2 1B's config.json as transformers 4 writes it (sizes shrunk).
nlohmann::json llama3_t4() {
    return nlohmann::json::parse(R"({
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
      "attention_bias": false, "mlp_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
      "head_dim": 16, "hidden_size": 64, "intermediate_size": 128, "initializer_range": 0.02,
      "max_position_embeddings": 131072, "num_attention_heads": 8, "num_hidden_layers": 2,
      "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.45.0", "use_cache": true, "vocab_size": 1000})");
}

// The same model as transformers 5 writes it.
nlohmann::json llama3_t5() {
    nlohmann::json j = llama3_t4();
    j.erase("rope_scaling");
    j.erase("rope_theta");
    j.erase("torch_dtype");
    j["dtype"] = "bfloat16";
    j["rope_parameters"] = {{"factor", 32.0},         {"high_freq_factor", 4.0},
                            {"low_freq_factor", 1.0}, {"original_max_position_embeddings", 8192},
                            {"rope_theta", 500000.0}, {"rope_type", "llama3"}};
    return j;
}

nlohmann::json qwen3_t4() {
    return nlohmann::json::parse(R"({
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
      "attention_bias": false, "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 32,
      "hidden_size": 64, "intermediate_size": 96, "max_position_embeddings": 40960,
      "max_window_layers": 28, "num_attention_heads": 4, "num_hidden_layers": 2,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": null,
      "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
      "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 500,
      "layer_types": ["full_attention", "full_attention"]})");
}

TEST(HfConfig, ReadsLlama3InTheTransformers4Form) {
    auto cfg = from_hf_config(llama3_t4(), kWhat);
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    const ModelConfig& c = cfg->model;
    EXPECT_EQ(c.architecture, Architecture::kLlama);
    EXPECT_EQ(c.head_dim(), 16);  // explicit: 8 heads x 16 != hidden 64
    EXPECT_EQ(c.max_seq_len, 131072);
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
    EXPECT_EQ(c.rope_scaling.factor, 32.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
    EXPECT_TRUE(c.tie_embeddings);
    EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm);
    EXPECT_EQ(c.bos_token_id, 128000);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
}

TEST(HfConfig, Transformers5FormGivesTheSameModel) {
    auto a = from_hf_config(llama3_t4(), kWhat);
    auto b = from_hf_config(llama3_t5(), kWhat);
    ASSERT_TRUE(a.ok() && b.ok()) << b.status().to_string();
    EXPECT_EQ(a->model, b->model);
}

TEST(HfConfig, ExplicitHeadDimMayDifferFromHiddenOverHeads) {
    nlohmann::json j = llama3_t4();
    j["head_dim"] = 32;  // 8 heads x 32 = 256 != hidden 64
    auto cfg = from_hf_config(j, kWhat);
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    EXPECT_EQ(cfg->model.head_dim(), 32);
    EXPECT_EQ(cfg->model.q_dim(), 256);
    EXPECT_EQ(cfg->model.kv_dim(), 64);
}

TEST(HfConfig, LinearScalingWithTheLegacyTypeKey) {
    nlohmann::json j = llama3_t4();
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    auto cfg = from_hf_config(j, kWhat);
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    EXPECT_EQ(cfg->model.rope_scaling.type, RopeScaling::Type::kLinear);
    EXPECT_EQ(cfg->model.rope_scaling.factor, 4.0);
}

TEST(HfConfig, LlamaAttentionAndMlpBiases) {
    nlohmann::json j = llama3_t4();
    j["attention_bias"] = true;
    j["mlp_bias"] = true;
    auto cfg = from_hf_config(j, kWhat);
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    EXPECT_TRUE(cfg->model.qkv_bias && cfg->model.o_bias && cfg->model.mlp_bias);
}

TEST(HfConfig, Qwen2HasQkvBiasesAndNoOutputBias) {
    nlohmann::json j = qwen3_t4();
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["model_type"] = "qwen2";
    j.erase("head_dim");
    j.erase("attention_bias");
    j["sliding_window"] = 32768;  // present but unused while use_sliding_window is false
    auto cfg = from_hf_config(j, kWhat);
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    EXPECT_EQ(cfg->model.architecture, Architecture::kQwen2);
    EXPECT_TRUE(cfg->model.qkv_bias);
    EXPECT_FALSE(cfg->model.o_bias || cfg->model.mlp_bias || cfg->model.qk_norm);
    EXPECT_EQ(cfg->model.head_dim(), 16);
}

TEST(HfConfig, Qwen3HasPerHeadQkNorms) {
    auto cfg = from_hf_config(qwen3_t4(), kWhat);
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    const ModelConfig& c = cfg->model;
    EXPECT_EQ(c.architecture, Architecture::kQwen3);
    EXPECT_TRUE(c.qk_norm);
    EXPECT_FALSE(c.qkv_bias);
    EXPECT_EQ(c.head_dim(), 32);
    EXPECT_EQ(c.q_dim(), 128);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kDefault);
    EXPECT_EQ(c.eos_token_ids, std::vector<int>{151645});
}

TEST(HfConfig, WrittenConfigReadsBackIdentically) {
    for (const ModelConfig& c :
         {testing::llama_full_config(), testing::qwen2_config(), testing::qwen3_config()}) {
        ModelConfig with_ids = c;
        with_ids.bos_token_id = 1;
        with_ids.eos_token_ids = {2, 3};
        auto back = from_hf_config(to_hf_config(with_ids, nullptr), kWhat);
        ASSERT_TRUE(back.ok()) << back.status().to_string();
        EXPECT_EQ(back->model, with_ids) << architecture_name(c.architecture);
    }
}

struct Refusal {
    const char* name;
    std::function<void(nlohmann::json&)> edit;
    const char* message;  // expected in the error, after "m/config.json: "
};

class HfConfigRefuses : public ::testing::TestWithParam<Refusal> {};

TEST_P(HfConfigRefuses, NamingTheFileAndKey) {
    nlohmann::json j = GetParam().name[0] == 'q' ? qwen3_t4() : llama3_t4();
    GetParam().edit(j);
    auto cfg = from_hf_config(j, kWhat);
    ASSERT_FALSE(cfg.ok());
    EXPECT_EQ(cfg.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(cfg.status().message().find(std::string(kWhat) + ": " + GetParam().message),
              std::string::npos)
        << cfg.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Unsupported, HfConfigRefuses,
    ::testing::Values(
        Refusal{"l_model_type", [](auto& j) { j["model_type"] = "mistral"; },
                "model_type \"mistral\" is not supported (llama, qwen2, qwen3)"},
        Refusal{"l_architecture",
                [](auto& j) { j["architectures"] = {"LlamaForSequenceClassification"}; },
                "architectures \"LlamaForSequenceClassification\" is not supported"},
        Refusal{"l_hidden_act", [](auto& j) { j["hidden_act"] = "gelu"; },
                "hidden_act \"gelu\" is not supported"},
        Refusal{"q_sliding_window", [](auto& j) { j["use_sliding_window"] = true; },
                "use_sliding_window: sliding-window attention is not supported"},
        Refusal{"q_layer_types",
                [](auto& j) {
                    j["layer_types"] = {"full_attention", "sliding_attention"};
                },
                "layer_types[1] is \"sliding_attention\""},
        Refusal{"q_moe", [](auto& j) { j["num_experts"] = 8; },
                "num_experts: mixture-of-experts models are not supported"},
        Refusal{"l_moe_local", [](auto& j) { j["num_local_experts"] = 8; },
                "num_local_experts: mixture-of-experts"},
        Refusal{"l_quantized",
                [](auto& j) {
                    j["quantization_config"] = {{"bits", 4}};
                },
                "quantization_config: quantized checkpoints are not supported"},
        Refusal{"l_rope_type_t4", [](auto& j) { j["rope_scaling"]["rope_type"] = "yarn"; },
                "rope_scaling: rope_type \"yarn\" is not supported (default, linear, llama3)"},
        Refusal{"l_rope_type_t5",
                [](auto& j) {
                    j["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
                },
                "rope_parameters: rope_type \"dynamic\" is not supported"},
        Refusal{"l_llama3_missing_key", [](auto& j) { j["rope_scaling"].erase("low_freq_factor"); },
                "rope_scaling: missing field \"low_freq_factor\""},
        Refusal{"l_partial_rotary", [](auto& j) { j["partial_rotary_factor"] = 0.5; },
                "partial_rotary_factor 0.5 is not supported"},
        Refusal{"l_missing_hidden", [](auto& j) { j.erase("hidden_size"); },
                "missing field \"hidden_size\""},
        Refusal{"l_bad_type", [](auto& j) { j["num_hidden_layers"] = "two"; },
                "field \"num_hidden_layers\""},
        Refusal{"l_kv_heads", [](auto& j) { j["num_key_value_heads"] = 3; },
                "model config: num_kv_heads (3) must divide num_heads (8)"},
        Refusal{"q_odd_head_dim", [](auto& j) { j["head_dim"] = 7; },
                "model config: head_dim (7) must be even"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(HfConfig, TandemCharPolicyConfigStillRoundTrips) {
    ModelConfig c;
    c.vocab_size = Vocabulary::builtin().size();
    const Vocabulary& v = Vocabulary::builtin();
    auto back = from_hf_config(to_hf_config(c, &v), kWhat);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->model, c);
    ASSERT_TRUE(back->vocab.has_value());
    EXPECT_EQ(back->vocab->charset(), v.charset());
}

}  // namespace
}  // namespace tandem::model
