// Llama / Qwen2 / Qwen3 in the engine: forward against an independent float64 reference,
// gradients against finite differences, Hugging Face directories (single file, sharded, BF16 and
// F16 storage) with their refusals, and checkpoint round trips.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/model/checkpoint.h"
#include "common/model/generate.h"
#include "common/model/hf_model.h"
#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/trainer.h"
#include "common/model/transformer.h"
#include "common/weights/safetensors.h"
#include "tests/unit/model/hf_test_util.h"
#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

namespace fs = std::filesystem;
using testing::hf_random_weights;
using testing::HfTempDir;
using testing::reference_logits;

const std::vector<int32_t> kTokens = {1, 5, 0, 17, 33, 2, 9, 9, 30, 4, 11, 36, 7, 19, 3, 28};

struct Arch {
    const char* name;
    ModelConfig (*config)();
};

class EachArchitecture : public ::testing::TestWithParam<Arch> {};

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

TEST_P(EachArchitecture, FloatForwardMatchesFloat64Reference) {
    const ModelConfig c = GetParam().config();
    const ModelWeights w = hf_random_weights(c, 7);
    const std::vector<double> ref = reference_logits(w, kTokens);
    const double scale = max_abs(ref);
    ASSERT_GT(scale, 1.0);
    // Training path.
    auto t = Transformer<float>::create(c);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    PackedBatch b;
    b.add_sequence(kTokens, 1);
    std::vector<float> got(ref.size());
    ASSERT_TRUE(t->logits(w.data(), b, got.data()).ok());
    for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_NEAR(got[i], ref[i], 1e-5 * scale) << i;
    }
    // Paged-KV inference: prefill 10 tokens, then decode the rest one by one.
    auto e = InferenceEngine::create(c);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    PagedKvCache cache(c, 4);
    const auto seq = cache.create();
    const int64_t V = c.vocab_size;
    std::vector<float> all(10 * V);
    const ForwardItem prefill{seq, std::span<const int32_t>(kTokens.data(), 10)};
    ASSERT_TRUE(e->forward(w.data(), cache, std::span(&prefill, 1), all.data(), true).ok());
    for (int64_t i = 0; i < 10 * V; ++i) ASSERT_NEAR(all[i], ref[i], 1e-5 * scale) << i;
    std::vector<float> row(V);
    for (size_t p = 10; p < kTokens.size(); ++p) {
        const ForwardItem step{seq, std::span<const int32_t>(kTokens.data() + p, 1)};
        ASSERT_TRUE(e->forward(w.data(), cache, std::span(&step, 1), row.data()).ok());
        for (int64_t j = 0; j < V; ++j) ASSERT_NEAR(row[j], ref[p * V + j], 1e-5 * scale) << p;
    }
}

TEST_P(EachArchitecture, GradientsMatchFiniteDifferences) {
    ModelConfig c = GetParam().config();
    c.num_layers = 1;  // every kind of parameter, fewer of them
    auto t = Transformer<double>::create(c);
    ASSERT_TRUE(t.ok());
    const ModelWeights w = hf_random_weights(c, 11);
    std::vector<double> params(static_cast<size_t>(t->index().elements));
    for (size_t i = 0; i < params.size(); ++i) params[i] = w.data()[i];
    PackedBatch b;
    b.add_sequence(std::vector<int32_t>{1, 5, 0, 17, 30, 2}, 2);
    const int64_t prefix = b.add_prefix(std::vector<int32_t>{3, 9, 4});
    b.add_continuation(prefix, std::vector<int32_t>{8, 12});
    const auto weight = testing::random_vector<double>(b.tokens.size(), 12);
    std::vector<double> logp(b.tokens.size());
    auto f = [&] {
        EXPECT_TRUE(t->forward(params.data(), b, 0.9, logp.data(), nullptr).ok());
        double s = 0;
        for (size_t i = 0; i < logp.size(); ++i) s += weight[i] * logp[i];
        return s;
    };
    f();
    std::vector<double> grads(params.size(), 0.0);
    ASSERT_TRUE(t->backward(params.data(), weight.data(), grads.data()).ok());
    testing::check_gradient(params, grads, f, 1e-8, 1e-6, 1e-5, GetParam().name);
}

TEST_P(EachArchitecture, ContextParallelGenerationMatchesSingleDevice) {
    // The context-parallel generator runs the same decoder layer (biases, q/k norms, scaled RoPE)
    // with the KV cache sharded over 2 ranks: the same sampled tokens as one device.
    const ModelConfig c = GetParam().config();
    const ModelWeights w = hf_random_weights(c, 13);
    const std::vector<std::vector<int32_t>> prompts{
        {1, 5, 0, 17, 30, 9, 9, 4, 11, 36, 7, 19, 3, 28, 6, 8, 12, 14, 15, 16, 18, 20}, {1, 4, 3}};
    SamplingOptions so;
    so.max_new_tokens = 12;
    so.seed = 77;
    GeneratorOptions cp;
    cp.context_parallel = 2;
    cp.max_tokens_per_device = 20;
    cp.job = "hf-cp-test";
    auto single = GroupGenerator::create(c, GeneratorOptions{});
    auto sharded = GroupGenerator::create(c, cp);
    ASSERT_TRUE(single.ok() && sharded.ok()) << sharded.status().to_string();
    GenerateStats stats;
    auto a = single->generate(w.data(), prompts, 3, so);
    auto b = sharded->generate(w.data(), prompts, 3, so, &stats);
    ASSERT_TRUE(a.ok() && b.ok()) << b.status().to_string();
    EXPECT_EQ(stats.sharded_sequences, 3);
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
        ASSERT_EQ((*a)[i].tokens, (*b)[i].tokens) << i;
        for (size_t j = 0; j < (*a)[i].logprobs.size(); ++j) {
            EXPECT_NEAR((*a)[i].logprobs[j], (*b)[i].logprobs[j], 1e-4) << i << "/" << j;
        }
    }
}

TEST(TransformerHead, ChunkedLogitsGiveTheSameLogProbsAndGradients) {
    // A large vocabulary's head runs a chunk of rows at a time and backward recomputes each
    // chunk's logits: the same results as one [rows, vocab] block.
    const ModelConfig c = testing::qwen3_config();
    const ModelWeights w = hf_random_weights(c, 17);
    std::vector<double> params(w.data(), w.data() + w.elements());
    PackedBatch b;
    b.add_sequence(kTokens, 2);
    const int64_t prefix = b.add_prefix(std::vector<int32_t>{3, 9, 4});
    b.add_continuation(prefix, std::vector<int32_t>{8, 12, 40});
    const auto weight = testing::random_vector<double>(b.tokens.size(), 18);
    auto run = [&](int64_t chunk_elements, std::vector<double>& logp, std::vector<double>& ent,
                   std::vector<double>& grads) {
        auto t = Transformer<double>::create(c);
        ASSERT_TRUE(t.ok());
        if (chunk_elements > 0) t->set_head_chunk_elements(chunk_elements);
        logp.assign(b.tokens.size(), 0.0);
        ent.assign(b.tokens.size(), 0.0);
        grads.assign(params.size(), 0.0);
        ASSERT_TRUE(t->forward(params.data(), b, 0.7, logp.data(), ent.data()).ok());
        ASSERT_TRUE(t->backward(params.data(), weight.data(), grads.data()).ok());
    };
    std::vector<double> l1, e1, g1, l2, e2, g2;
    run(0, l1, e1, g1);
    run(3 * c.vocab_size, l2, e2, g2);  // chunks of 3 rows, the last one shorter
    for (size_t i = 0; i < l1.size(); ++i) {
        EXPECT_NEAR(l1[i], l2[i], 1e-12) << i;
        EXPECT_NEAR(e1[i], e2[i], 1e-12) << i;
    }
    for (size_t i = 0; i < g1.size(); ++i) EXPECT_NEAR(g1[i], g2[i], 1e-12) << i;
}

INSTANTIATE_TEST_SUITE_P(Hf, EachArchitecture,
                         ::testing::Values(Arch{"llama_full", testing::llama_full_config},
                                           Arch{"qwen2", testing::qwen2_config},
                                           Arch{"qwen3", testing::qwen3_config}),
                         [](const auto& info) { return std::string(info.param.name); });

void expect_same_weights(const ModelWeights& a, const ModelWeights& b) {
    ASSERT_EQ(a.config(), b.config());
    ASSERT_EQ(a.elements(), b.elements());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), sizeof(float) * a.elements()), 0);
}

TEST(HfDirectory, SingleFileRoundTrip) {
    HfTempDir dir;
    const ModelWeights w = hf_random_weights(testing::llama_full_config(), 1);
    ASSERT_TRUE(save_pretrained(dir.path(), w, nullptr).ok());
    EXPECT_TRUE(fs::exists(dir.path() + "/model.safetensors"));
    EXPECT_FALSE(fs::exists(dir.path() + "/model.safetensors.index.json"));
    auto back = load_pretrained(dir.path());
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same_weights(w, back->weights);
}

TEST(HfDirectory, ShardedRoundTripWithIndex) {
    HfTempDir dir;
    const ModelWeights w = hf_random_weights(testing::qwen3_config(), 2);
    SaveOptions opts;
    opts.max_shard_bytes = 8 << 10;  // several shards for this tiny model
    ASSERT_TRUE(save_pretrained(dir.path(), w, nullptr, opts).ok());
    EXPECT_FALSE(fs::exists(dir.path() + "/model.safetensors"));
    std::ifstream f(dir.path() + "/model.safetensors.index.json");
    const nlohmann::json index = nlohmann::json::parse(f);
    std::set<std::string> files;
    for (const auto& [name, file] : index["weight_map"].items()) {
        files.insert(file.get<std::string>());
        EXPECT_NE(w.layout().find(name), nullptr) << name;
    }
    EXPECT_EQ(index["weight_map"].size(), w.layout().tensors().size());
    ASSERT_GT(files.size(), 2u);
    const std::string last = *files.rbegin();
    EXPECT_EQ(last, fmt::format("model-{:05d}-of-{:05d}.safetensors", files.size(), files.size()));
    for (const auto& file : files) EXPECT_TRUE(fs::exists(dir.path() + "/" + file)) << file;
    auto inspected = inspect_hf_directory(dir.path());
    ASSERT_TRUE(inspected.ok()) << inspected.status().to_string();
    EXPECT_EQ(inspected->files.size(), files.size());
    EXPECT_EQ(inspected->stored_bytes_by_dtype.at("F32"), index["metadata"]["total_size"]);
    auto back = load_hf_directory(*inspected);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same_weights(w, back->weights);
}

uint16_t to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);  // nearest even
}

uint16_t to_f16(float f) {  // normal range only, round to nearest
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint32_t sign = (bits >> 16) & 0x8000;
    const int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
    if (exp <= 0) return static_cast<uint16_t>(sign);
    const uint32_t mant = bits & 0x7fffff;
    uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
    if ((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) == 0x1000 && (h & 1))) ++h;
    return static_cast<uint16_t>(h);
}

// Writes `w` as a safetensors file with every tensor in `dtype`, optionally renaming, dropping or
// reshaping one tensor; returns the values the loader should produce.
std::vector<float> write_converted(const std::string& path, const ModelWeights& w,
                                   weights::DType dtype, const std::string& drop = "",
                                   const std::string& extra = "") {
    std::vector<weights::TensorSpec> specs;
    for (const auto& t : w.layout().tensors()) {
        if (t.name != drop) specs.push_back({t.name, dtype, t.shape});
    }
    if (!extra.empty()) specs.push_back({extra, dtype, {4}});
    auto layout = weights::Layout::create(specs);
    EXPECT_TRUE(layout.ok());
    std::vector<std::byte> data(layout->total_bytes());
    std::vector<float> expect(static_cast<size_t>(w.elements()), 0.0f);
    for (const auto& t : w.layout().tensors()) {
        const auto* dst = layout->find(t.name);
        if (!dst) continue;
        const float* src = w.data() + t.offset / 4;
        for (uint64_t i = 0; i < t.elements(); ++i) {
            float back = src[i];
            if (dtype == weights::DType::kF32) {
                std::memcpy(data.data() + dst->offset + 4 * i, &src[i], 4);
            } else {
                const uint16_t v =
                    dtype == weights::DType::kBF16 ? to_bf16(src[i]) : to_f16(src[i]);
                std::memcpy(data.data() + dst->offset + 2 * i, &v, 2);
                if (dtype == weights::DType::kBF16) {
                    const uint32_t bits = static_cast<uint32_t>(v) << 16;
                    std::memcpy(&back, &bits, 4);
                } else {
                    back = std::abs(src[i] - back) < 1e-3f * std::abs(src[i]) + 1e-6f
                               ? src[i]
                               : back;  // checked below against f16 precision
                }
            }
            expect[t.offset / 4 + i] = back;
        }
    }
    EXPECT_TRUE(weights::write_safetensors(path, *layout, data).ok());
    return expect;
}

TEST(HfDirectory, Bf16WeightsAreWidenedExactly) {
    HfTempDir dir;
    const ModelWeights w = hf_random_weights(testing::qwen2_config(), 3);
    ASSERT_TRUE(write_hf_config(dir.path() + "/config.json", w.config(), nullptr).ok());
    const auto expect =
        write_converted(dir.path() + "/model.safetensors", w, weights::DType::kBF16);
    auto d = inspect_hf_directory(dir.path());
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    EXPECT_EQ(d->stored_bytes_by_dtype.size(), 1u);
    EXPECT_EQ(d->stored_bytes_by_dtype.count("BF16"), 1u);
    auto back = load_hf_directory(*d);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(std::memcmp(back->weights.data(), expect.data(), sizeof(float) * expect.size()), 0);
}

TEST(HfDirectory, F16WeightsLoadWithinHalfPrecision) {
    HfTempDir dir;
    const ModelWeights w = hf_random_weights(testing::qwen3_config(), 4);
    ASSERT_TRUE(write_hf_config(dir.path() + "/config.json", w.config(), nullptr).ok());
    write_converted(dir.path() + "/model.safetensors", w, weights::DType::kF16);
    auto back = load_pretrained(dir.path());
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    for (int64_t i = 0; i < w.elements(); ++i) {
        // The test's converter flushes F16 subnormals (below 6.1e-5) to zero.
        ASSERT_NEAR(back->weights.data()[i], w.data()[i], 1e-3 * std::abs(w.data()[i]) + 6.2e-5)
            << i;
    }
}

class HfDirectoryRefuses : public ::testing::Test {
protected:
    void SetUp() override {
        w_ = hf_random_weights(testing::llama_full_config(), 5);
        ASSERT_TRUE(write_hf_config(dir_.path() + "/config.json", w_.config(), nullptr).ok());
    }
    std::string error() {
        auto r = inspect_hf_directory(dir_.path());
        EXPECT_FALSE(r.ok());
        return r.ok() ? "" : r.status().message();
    }
    HfTempDir dir_;
    ModelWeights w_;
};

TEST_F(HfDirectoryRefuses, AMissingTensorNamingFileAndTensor) {
    write_converted(dir_.path() + "/model.safetensors", w_, weights::DType::kF32,
                    "model.layers.1.mlp.up_proj.bias");
    EXPECT_EQ(
        error(),
        dir_.path() + "/model.safetensors: missing tensor \"model.layers.1.mlp.up_proj.bias\"");
}

TEST_F(HfDirectoryRefuses, AnUnknownTensor) {
    write_converted(dir_.path() + "/model.safetensors", w_, weights::DType::kF32, "",
                    "model.layers.0.self_attn.q_norm.weight");
    EXPECT_EQ(error(), dir_.path() +
                           "/model.safetensors: tensor \"model.layers.0.self_attn.q_norm.weight\" "
                           "is not part of a LlamaForCausalLM with this config.json");
}

TEST_F(HfDirectoryRefuses, AShapeTheConfigDisagreesWith) {
    ModelConfig other = w_.config();
    other.intermediate_size = 22;
    auto ow = ModelWeights::zeros(other);
    ASSERT_TRUE(ow.ok());
    ASSERT_TRUE(
        weights::write_safetensors(dir_.path() + "/model.safetensors", ow->layout(), ow->bytes())
            .ok());
    EXPECT_EQ(error(), dir_.path() +
                           "/model.safetensors: tensor \"model.layers.0.mlp.gate_proj.weight\" has "
                           "shape [22, 24], config.json gives [20, 24]");
}

TEST_F(HfDirectoryRefuses, NoWeightsFile) {
    EXPECT_EQ(error(),
              dir_.path() + ": neither model.safetensors nor model.safetensors.index.json exists");
}

TEST_F(HfDirectoryRefuses, AnIndexThatMisplacesATensor) {
    SaveOptions opts;
    opts.max_shard_bytes = 8 << 10;
    ASSERT_TRUE(save_pretrained(dir_.path(), w_, nullptr, opts).ok());
    const std::string index_path = dir_.path() + "/model.safetensors.index.json";
    nlohmann::json index = nlohmann::json::parse(std::ifstream(index_path));
    const std::string name = "model.embed_tokens.weight";
    const std::string real = index["weight_map"][name];
    index["weight_map"][name] = "model-00099-of-00099.safetensors";
    std::ofstream(index_path, std::ios::trunc) << index.dump();
    EXPECT_EQ(error(), dir_.path() + ": tensor \"model.embed_tokens.weight\" is in " + real +
                           " but model.safetensors.index.json places it in "
                           "model-00099-of-00099.safetensors");
}

TEST_F(HfDirectoryRefuses, ATruncatedShard) {
    ASSERT_TRUE(save_pretrained(dir_.path(), w_, nullptr).ok());
    const std::string path = dir_.path() + "/model.safetensors";
    fs::resize_file(path, fs::file_size(path) - 100);
    EXPECT_NE(error().find("model.safetensors: tensor \"lm_head.weight\" runs past the end"),
              std::string::npos)
        << error();
}

TEST(HfDirectory, CopiesTokenizerFilesBesideTheWeights) {
    HfTempDir src;
    const std::string dst = src.path() + "/checkpoint";
    std::ofstream(src.path() + "/tokenizer.json") << "{\"model\": {}}";
    std::ofstream(src.path() + "/tokenizer_config.json") << "{}";
    std::ofstream(src.path() + "/unrelated.txt") << "x";
    const ModelWeights w = hf_random_weights(testing::qwen2_config(), 6);
    SaveOptions opts;
    opts.copy_side_files_from = src.path();
    ASSERT_TRUE(save_pretrained(dst, w, nullptr, opts).ok());
    EXPECT_TRUE(fs::exists(dst + "/tokenizer.json"));
    EXPECT_TRUE(fs::exists(dst + "/tokenizer_config.json"));
    EXPECT_FALSE(fs::exists(dst + "/unrelated.txt"));
}

TEST(HfDirectory, TrainerCheckpointReloadsWithIdenticalLogits) {
    HfTempDir dir;
    const ModelWeights w = hf_random_weights(testing::qwen3_config(), 8);
    const AdamW opt(config::OptimizerSpec{}, w.index(), 10);
    TrainerState state;
    state.step = 3;
    const std::string source = dir.path() + "/source-model";
    fs::create_directories(source);
    std::ofstream(source + "/tokenizer.json") << "{}";
    auto path = save_checkpoint(dir.path() + "/ckpt", state, w, nullptr, opt, source);
    ASSERT_TRUE(path.ok()) << path.status().to_string();
    EXPECT_TRUE(fs::exists(*path + "/tokenizer.json"));
    auto back = load_checkpoint(*path);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same_weights(w, back->model.weights);
    auto t = Transformer<float>::create(w.config());
    ASSERT_TRUE(t.ok());
    PackedBatch b;
    b.add_sequence(kTokens, 1);
    std::vector<float> l1(kTokens.size() * w.config().vocab_size), l2(l1.size());
    ASSERT_TRUE(t->logits(w.data(), b, l1.data()).ok());
    ASSERT_TRUE(t->logits(back->model.weights.data(), b, l2.data()).ok());
    EXPECT_EQ(l1, l2);
}

TEST(TrainerOptions, CheckpointTokenizerFilesComeFromTheTaskTokenizerOrAModelDirectory) {
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() / fmt::format("tandem-side-files-{}", ::getpid());
    std::filesystem::create_directories(dir / "model");
    config::JobSpec job;
    job.model.init = "random";
    EXPECT_EQ(TrainerOptions::from_job(job).side_files_from, "");
    job.model.init = (dir / "model").string();  // an HF directory: its tokenizer files
    EXPECT_EQ(TrainerOptions::from_job(job).side_files_from, (dir / "model").string());
    job.model.init = (dir / "model" / "config.json").string();  // a config file: none
    EXPECT_EQ(TrainerOptions::from_job(job).side_files_from, "");
    job.task.tokenizer = (dir / "tok").string();  // a text task's tokenizer wins
    EXPECT_EQ(TrainerOptions::from_job(job).side_files_from, (dir / "tok").string());
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::model
