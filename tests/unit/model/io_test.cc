// Parameters as a weight-plane layout, safetensors + config.json round trips, checkpoints.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/model/checkpoint.h"
#include "common/model/model_weights.h"
#include "common/model/trainer.h"
#include "common/weights/safetensors.h"
#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

namespace fs = std::filesystem;

class TempDir {
public:
    TempDir() {
        path_ = ::testing::TempDir() + "/tandem_model_io_" + std::to_string(::getpid()) + "_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

ModelConfig default_config(bool tied) {
    config::ModelSpec spec;  // the job file's defaults
    spec.tie_embeddings = tied;
    auto c = ModelConfig::from_spec(spec, Vocabulary::builtin().size());
    EXPECT_TRUE(c.ok());
    return *c;
}

TEST(ParamLayout, UsesHuggingFaceLlamaNamesShapesAndAlignment) {
    const ModelConfig c = default_config(false);
    auto layout = make_param_layout(c);
    ASSERT_TRUE(layout.ok());
    std::vector<std::string> names;
    for (const auto& t : layout->tensors()) {
        names.push_back(t.name);
        EXPECT_EQ(t.offset % 256, 0u) << t.name;
        EXPECT_EQ(t.dtype, weights::DType::kF32);
    }
    ASSERT_EQ(names.size(), 1u + 2 * 9 + 2);
    EXPECT_EQ(names[0], "model.embed_tokens.weight");
    EXPECT_EQ(names[1], "model.layers.0.input_layernorm.weight");
    EXPECT_EQ(names[2], "model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(names[9], "model.layers.0.mlp.down_proj.weight");
    EXPECT_EQ(names[19], "model.norm.weight");
    EXPECT_EQ(names[20], "lm_head.weight");
    EXPECT_EQ(layout->find("model.layers.1.self_attn.k_proj.weight")->shape,
              (std::vector<int64_t>{32, 64}));  // 2 kv heads of 16
    EXPECT_EQ(layout->find("model.layers.1.mlp.down_proj.weight")->shape,
              (std::vector<int64_t>{64, 176}));
    auto tied = make_param_layout(default_config(true));
    ASSERT_TRUE(tied.ok());
    EXPECT_EQ(tied->find("lm_head.weight"), nullptr);
    EXPECT_NE(tied->fingerprint(), layout->fingerprint());
    // The flat buffer is the layout's bytes, as a publisher takes them.
    auto w = ModelWeights::random(c, 1);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->bytes().size(), layout->total_bytes());
    EXPECT_EQ(w->layout(), *layout);
}

TEST(Pretrained, SafetensorsAndConfigJsonRoundTrip) {
    TempDir dir;
    for (const bool tied : {true, false}) {
        const ModelConfig c = default_config(tied);
        auto w = ModelWeights::random(c, 42);
        ASSERT_TRUE(w.ok());
        const Vocabulary vocab = Vocabulary::builtin();
        const std::string d = dir.path() + (tied ? "/tied" : "/untied");
        ASSERT_TRUE(save_pretrained(d, *w, &vocab).ok());
        // config.json speaks Hugging Face.
        std::ifstream f(d + "/config.json");
        const nlohmann::json j = nlohmann::json::parse(f);
        EXPECT_EQ(j["model_type"], "llama");
        EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
        EXPECT_EQ(j["num_key_value_heads"], 2);
        EXPECT_EQ(j["intermediate_size"], 176);
        EXPECT_EQ(j["tie_word_embeddings"], tied);
        EXPECT_EQ(j["vocab_size"], 15);
        EXPECT_EQ(j["eos_token_id"], 2);
        // The safetensors file has exactly the layout's tensors.
        auto st = weights::read_safetensors(d + "/model.safetensors");
        ASSERT_TRUE(st.ok());
        EXPECT_EQ(st->layout.tensors().size(), w->layout().tensors().size());
        EXPECT_EQ(st->layout.find("lm_head.weight") == nullptr, tied);
        auto back = load_pretrained(d);
        ASSERT_TRUE(back.ok()) << back.status().to_string();
        EXPECT_EQ(back->weights.config(), c);
        ASSERT_TRUE(back->vocab.has_value());
        EXPECT_EQ(*back->vocab, vocab);
        ASSERT_EQ(back->weights.elements(), w->elements());
        EXPECT_EQ(std::memcmp(back->weights.data(), w->data(), w->bytes().size()), 0);
    }
}

TEST(Pretrained, LoadsBf16TensorsAndRejectsMismatches) {
    TempDir dir;
    const ModelConfig c = default_config(true);
    auto w = ModelWeights::random(c, 3);
    ASSERT_TRUE(w.ok());
    // Write the same tensors as BF16, the way many Hugging Face checkpoints are stored.
    std::vector<weights::TensorSpec> specs;
    for (const auto& t : w->layout().tensors())
        specs.push_back({t.name, weights::DType::kBF16, t.shape});
    auto bl = weights::Layout::create(specs);
    ASSERT_TRUE(bl.ok());
    std::vector<std::byte> data(bl->total_bytes());
    for (size_t i = 0; i < specs.size(); ++i) {
        const auto& src = w->layout().tensors()[i];
        const auto& dst = bl->tensors()[i];
        for (uint64_t e = 0; e < src.elements(); ++e) {
            uint32_t bits;
            std::memcpy(&bits, w->data() + src.offset / 4 + e, 4);
            const uint16_t hi = static_cast<uint16_t>(bits >> 16);
            std::memcpy(data.data() + dst.offset + 2 * e, &hi, 2);
        }
    }
    ASSERT_TRUE(write_hf_config(dir.path() + "/config.json", c, nullptr).ok());
    ASSERT_TRUE(weights::write_safetensors(dir.path() + "/model.safetensors", *bl, data).ok());
    auto back = load_pretrained(dir.path());
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_FALSE(back->vocab.has_value());
    for (int64_t i = 0; i < w->elements(); ++i) {
        ASSERT_NEAR(back->weights.data()[i], w->data()[i], 1e-2 * std::abs(w->data()[i]) + 1e-30);
    }
    // A config that disagrees with the tensors names the tensor.
    ModelConfig other = c;
    other.intermediate_size = 100;
    ASSERT_TRUE(write_hf_config(dir.path() + "/config.json", other, nullptr).ok());
    auto bad = load_pretrained(dir.path());
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("gate_proj"), std::string::npos)
        << bad.status().message();
}

TEST(Checkpoint, SaveLoadLatestAndPrune) {
    TempDir dir;
    const ModelConfig c = default_config(true);
    auto w = ModelWeights::random(c, 5);
    ASSERT_TRUE(w.ok());
    config::OptimizerSpec os;
    AdamW opt(os, w->index(), 10);
    std::vector<float> g = testing::random_vector<float>(static_cast<size_t>(w->elements()), 6);
    opt.step(w->data(), g.data());
    const Vocabulary vocab = Vocabulary::builtin();
    for (const int64_t step : {3, 12, 7}) {
        TrainerState st{step, step, 100 + static_cast<uint64_t>(step), {1, 2, 3, 4}};
        auto path = save_checkpoint(dir.path(), st, *w, &vocab, opt);
        ASSERT_TRUE(path.ok()) << path.status().to_string();
    }
    auto latest = latest_checkpoint(dir.path());
    ASSERT_TRUE(latest.ok());
    EXPECT_EQ(fs::path(*latest).filename(), "step-00000012");
    auto ck = load_checkpoint(*latest);
    ASSERT_TRUE(ck.ok()) << ck.status().to_string();
    EXPECT_EQ(ck->state.step, 12);
    EXPECT_EQ(ck->state.data_cursor, 112u);
    EXPECT_EQ(ck->state.rng, (std::array<uint64_t, 4>{1, 2, 3, 4}));
    EXPECT_EQ(ck->optimizer_steps, 1);
    EXPECT_EQ(ck->exp_avg, opt.exp_avg());
    EXPECT_EQ(ck->exp_avg_sq, opt.exp_avg_sq());
    EXPECT_EQ(std::memcmp(ck->model.weights.data(), w->data(), w->bytes().size()), 0);
    ASSERT_TRUE(prune_checkpoints(dir.path(), 2).ok());
    EXPECT_FALSE(fs::exists(dir.path() + "/step-00000003"));
    EXPECT_TRUE(fs::exists(dir.path() + "/step-00000007"));
    EXPECT_TRUE(fs::exists(dir.path() + "/step-00000012"));
    EXPECT_EQ(latest_checkpoint(dir.path() + "/none").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem::model
