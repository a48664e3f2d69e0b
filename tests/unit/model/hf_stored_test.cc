// Weights kept in their stored dtype for inference (stored_weights.h, load_hf_directory_stored):
// half the resident bytes for BF16/F16 checkpoints, the same logits and completions as the
// weights widened at load; and the stop ids a model's files list (model_eos_ids), honoured by the
// generator on the single-device and the context-parallel path.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/model/generate.h"
#include "common/model/hf_model.h"
#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "tests/unit/model/hf_test_util.h"

namespace tandem::model {
namespace {

const std::string kStoredModels = std::string(TANDEM_SOURCE_DIR) + "/tests/data/hf_models";
const std::vector<int32_t> kStoredTokens = {1, 17, 300, 5, 511, 42, 42, 7, 256, 99, 0, 3, 128, 64};

std::vector<float> all_logits(const ModelConfig& c, WeightView w,
                              const std::vector<int32_t>& tokens) {
    auto e = InferenceEngine::create(c);
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    PagedKvCache cache(c, 16);
    const ForwardItem item{cache.create(), tokens};
    std::vector<float> out(tokens.size() * static_cast<size_t>(c.vocab_size));
    Status s = e->forward(w, cache, std::span(&item, 1), out.data(), true);
    EXPECT_TRUE(s.ok()) << s.to_string();
    return out;
}

class StoredDtype : public ::testing::TestWithParam<std::pair<const char*, weights::DType>> {};

TEST_P(StoredDtype, HalfTheResidentBytesAndTheSameLogitsAsWidened) {
    const auto [name, dtype] = GetParam();
    const std::string dir = kStoredModels + "/" + name;
    if (!std::filesystem::exists(dir + "/model.safetensors")) GTEST_SKIP() << dir << " is missing";
    auto d = inspect_hf_directory(dir);
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    EXPECT_EQ(resident_dtype(*d), dtype);
    auto stored = load_hf_directory_stored(*d);
    ASSERT_TRUE(stored.ok()) << stored.status().to_string();
    auto wide = load_hf_directory(*d);
    ASSERT_TRUE(wide.ok()) << wide.status().to_string();
    EXPECT_EQ(stored->dtype(), dtype);
    const uint64_t f32_bytes = wide->weights.layout().total_bytes();
    EXPECT_EQ(stored->resident_bytes(), f32_bytes / 2);
    EXPECT_EQ(resident_bytes(*d), stored->resident_bytes());

    const ModelConfig& c = wide->weights.config();
    const auto got = all_logits(c, stored->view(), kStoredTokens);
    const auto ref = all_logits(c, wide->weights.data(), kStoredTokens);
    double scale = 0, worst = 0;
    for (float x : ref) scale = std::max(scale, static_cast<double>(std::abs(x)));
    ASSERT_GT(scale, 0);
    for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_FALSE(std::isnan(got[i])) << i;
        worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]) / scale);
    }
    std::printf("%s: resident %llu bytes (F32 %llu), max logit diff / max |logit| %.2e\n", name,
                static_cast<unsigned long long>(stored->resident_bytes()),
                static_cast<unsigned long long>(f32_bytes), worst);
    EXPECT_LE(worst, 1e-6);  // the same values, widened per layer instead of at load

    // Widening the stored buffer gives back exactly the weights widened at load.
    auto back = stored->widened();
    ASSERT_TRUE(back.ok());
    EXPECT_TRUE(std::equal(back->data(), back->data() + back->elements(), wide->weights.data()));
}

INSTANTIATE_TEST_SUITE_P(Hf, StoredDtype,
                         ::testing::Values(std::pair{"qwen3_bf16", weights::DType::kBF16},
                                           std::pair{"qwen2_f16", weights::DType::kF16}));

TEST(StoredDtype, F32CheckpointsStayF32) {
    const std::string dir = kStoredModels + "/qwen3";
    if (!std::filesystem::exists(dir + "/model.safetensors")) GTEST_SKIP() << dir << " is missing";
    auto d = inspect_hf_directory(dir);
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    EXPECT_EQ(resident_dtype(*d), weights::DType::kF32);
    auto stored = load_hf_directory_stored(*d);
    ASSERT_TRUE(stored.ok()) << stored.status().to_string();
    EXPECT_TRUE(stored->view().is_f32());
    EXPECT_EQ(stored->resident_bytes(), stored->layout().total_bytes());
}

TEST(StoredDtype, NarrowedWeightsGenerateLikeTheirWidenedValues) {
    // Greedy completions of a BF16 buffer equal those of the same values in fp32; a random
    // untied Llama with biases and llama3 RoPE exercises every optional tensor.
    const ModelConfig c = testing::llama_full_config();
    auto w = ModelWeights::random(c, 5, 0.3);
    ASSERT_TRUE(w.ok());
    auto bf16 = StoredWeights::narrow(*w, weights::DType::kBF16);
    ASSERT_TRUE(bf16.ok()) << bf16.status().to_string();
    auto wide = bf16->widened();
    ASSERT_TRUE(wide.ok());
    auto gen = GroupGenerator::create(c, {.block_tokens = 4, .eos_token = -1});
    ASSERT_TRUE(gen.ok()) << gen.status().to_string();
    const std::vector<std::vector<int32_t>> prompts{{1, 2, 3, 4, 5}, {7, 8, 9}};
    SamplingOptions so;
    so.max_new_tokens = 10;
    so.temperature = 0.0;
    auto a = gen->generate(bf16->view(), prompts, 2, so);
    auto b = gen->generate(wide->data(), prompts, 2, so);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << b.status().to_string();
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
        EXPECT_EQ((*a)[i].tokens, (*b)[i].tokens) << i;
        for (size_t t = 0; t < (*a)[i].logprobs.size(); ++t) {
            EXPECT_NEAR((*a)[i].logprobs[t], (*b)[i].logprobs[t], 1e-5) << i << " " << t;
        }
    }
    EXPECT_EQ(bf16->resident_bytes() * 2, wide->layout().total_bytes());
}

TEST(StoredDtype, SystemPromptCacheNeedsF32AndSaysSo) {
    const ModelConfig c = testing::qwen2_config();
    auto w = ModelWeights::random(c, 3, 0.2);
    ASSERT_TRUE(w.ok());
    auto bf16 = StoredWeights::narrow(*w, weights::DType::kBF16);
    ASSERT_TRUE(bf16.ok());
    GeneratorOptions o;
    o.job = "stored-test";
    o.prefix.auto_tokens = 4;
    auto gen = GroupGenerator::create(c, o);
    ASSERT_TRUE(gen.ok()) << gen.status().to_string();
    const std::vector<std::vector<int32_t>> prompts{{1, 2, 3, 4, 5, 6}};
    auto out = gen->generate(bf16->view(), prompts, 2, SamplingOptions{});
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("stored-test"), std::string::npos)
        << out.status().message();
    EXPECT_NE(out.status().message().find("BF16"), std::string::npos) << out.status().message();
}

// --- stop ids -----------------------------------------------------------------------------------

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(ModelEosIds, ConfigAndGenerationConfigListsAreMerged) {
    testing::HfTempDir tmp;
    write_file(tmp.path() + "/config.json", R"({"eos_token_id": 128001})");
    write_file(tmp.path() + "/generation_config.json",
               R"({"eos_token_id": [128001, 128008, 128009]})");
    auto ids = model_eos_ids(tmp.path());
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    EXPECT_EQ(*ids, (std::vector<int32_t>{128001, 128008, 128009}));
    // A config.json file alone: no generation_config.json is looked for beside it.
    auto file_only = model_eos_ids(tmp.path() + "/config.json");
    ASSERT_TRUE(file_only.ok()) << file_only.status().to_string();
    EXPECT_EQ(*file_only, std::vector<int32_t>{128001});
    // A list in config.json, no generation_config.json.
    std::filesystem::remove(tmp.path() + "/generation_config.json");
    write_file(tmp.path() + "/config.json", R"({"eos_token_id": [2, 7, 2]})");
    ids = model_eos_ids(tmp.path());
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    EXPECT_EQ(*ids, (std::vector<int32_t>{2, 7}));
    // None at all.
    write_file(tmp.path() + "/config.json", R"({"eos_token_id": null})");
    ids = model_eos_ids(tmp.path());
    ASSERT_TRUE(ids.ok());
    EXPECT_TRUE(ids->empty());
}

TEST(ModelEosIds, AnEntryThatIsNotAnIdNamesTheFileAndField) {
    testing::HfTempDir tmp;
    write_file(tmp.path() + "/config.json", R"({"eos_token_id": 2})");
    write_file(tmp.path() + "/generation_config.json", R"({"eos_token_id": [2, "x"]})");
    auto ids = model_eos_ids(tmp.path());
    ASSERT_FALSE(ids.ok());
    EXPECT_NE(ids.status().message().find("generation_config.json"), std::string::npos)
        << ids.status().message();
    EXPECT_NE(ids.status().message().find("eos_token_id"), std::string::npos);
    write_file(tmp.path() + "/generation_config.json", R"({"eos_token_id": -3})");
    EXPECT_FALSE(model_eos_ids(tmp.path()).ok());
}

// The token greedy decoding produces at step `k` of the first prompt, with no stop at all.
class StopTokens : public ::testing::TestWithParam<bool> {};

TEST_P(StopTokens, EveryListedIdEndsACompletion) {
    const bool sharded = GetParam();
    ModelConfig c = testing::qwen3_config();
    c.max_seq_len = 48;
    auto w = ModelWeights::random(c, 11, 0.4);
    ASSERT_TRUE(w.ok());
    GeneratorOptions base;
    base.block_tokens = 4;
    base.eos_token = -1;
    if (sharded) {  // every prompt's context exceeds one device: the context-parallel path
        base.context_parallel = 2;
        base.max_tokens_per_device = 12;
    }
    const std::vector<std::vector<int32_t>> prompts{{1, 2, 3, 4, 5, 6}};
    SamplingOptions so;
    so.max_new_tokens = 12;
    so.temperature = 0.0;
    auto free_run = GroupGenerator::create(c, base);
    ASSERT_TRUE(free_run.ok()) << free_run.status().to_string();
    auto all = free_run->generate(w->data(), prompts, 1, so);
    ASSERT_TRUE(all.ok()) << all.status().to_string();
    const std::vector<int32_t> seq = all->front().tokens;
    ASSERT_EQ(seq.size(), 12u);
    EXPECT_FALSE(all->front().finished);
    // Stop at the first occurrence of the token produced at step 5, listed second of three
    // (the eos_token is some other id that never comes).
    const int32_t target = seq[5];
    const size_t first =
        static_cast<size_t>(std::find(seq.begin(), seq.end(), target) - seq.begin());
    int32_t unused = 0;
    while (std::find(seq.begin(), seq.end(), unused) != seq.end()) ++unused;
    GeneratorOptions o = base;
    o.eos_token = unused;
    o.stop_tokens = {unused, target, c.vocab_size + 5};
    auto stopping = GroupGenerator::create(c, o);
    ASSERT_TRUE(stopping.ok());
    auto cut = stopping->generate(w->data(), prompts, 1, so);
    ASSERT_TRUE(cut.ok()) << cut.status().to_string();
    EXPECT_TRUE(cut->front().finished);
    EXPECT_EQ(cut->front().tokens, std::vector<int32_t>(seq.begin(), seq.begin() + first + 1));
}

INSTANTIATE_TEST_SUITE_P(Paths, StopTokens, ::testing::Values(false, true), [](const auto& info) {
    return info.param ? "ContextParallel" : "Single";
});

}  // namespace
}  // namespace tandem::model
