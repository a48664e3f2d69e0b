// Tandem's logits against the logits transformers computed from the same directories
// (tests/data/hf_models, made by make_reference.py with transformers itself, fp32, eager
// attention): within 1e-4 of the largest logit, on both the training and the paged-KV path.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/model/hf_model.h"
#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/transformer.h"

namespace tandem::model {
namespace {

const std::string kData = std::string(TANDEM_SOURCE_DIR) + "/tests/data/hf_models";

// A little-endian float32 C-order .npy file of two dimensions.
bool read_npy_f32(const std::string& path, std::vector<int64_t>& shape, std::vector<float>& out) {
    std::ifstream f(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return false;
    const int major = static_cast<unsigned char>(bytes[6]);
    size_t header_len, start;
    if (major == 1) {
        header_len = static_cast<unsigned char>(bytes[8]) |
                     (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
        start = 10;
    } else {
        uint32_t n;
        std::memcpy(&n, bytes.data() + 8, 4);
        header_len = n;
        start = 12;
    }
    const std::string header = bytes.substr(start, header_len);
    if (header.find("'<f4'") == std::string::npos ||
        header.find("'fortran_order': False") == std::string::npos) {
        return false;
    }
    const size_t open = header.find('(', header.find("'shape'"));
    const size_t close = header.find(')', open);
    shape.clear();
    std::string dims = header.substr(open + 1, close - open - 1);
    size_t pos = 0;
    while (pos < dims.size()) {
        const size_t comma = dims.find(',', pos);
        const std::string d =
            dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (d.find_first_of("0123456789") != std::string::npos) shape.push_back(std::stoll(d));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const size_t data = start + header_len;
    if (bytes.size() != data + 4 * static_cast<size_t>(n)) return false;
    out.resize(static_cast<size_t>(n));
    std::memcpy(out.data(), bytes.data() + data, 4 * static_cast<size_t>(n));
    return true;
}

class TransformersReference : public ::testing::TestWithParam<const char*> {};

TEST_P(TransformersReference, LogitsMatchWithin1e4OfTheLargest) {
    const std::string manifest_path = kData + "/manifest.json";
    if (!std::filesystem::exists(manifest_path)) {
        GTEST_SKIP() << manifest_path
                     << " is missing: run tests/data/hf_models/make_reference.py where "
                        "transformers is installed";
    }
    const nlohmann::json manifest = nlohmann::json::parse(std::ifstream(manifest_path));
    const std::vector<int32_t> tokens = manifest["tokens"].get<std::vector<int32_t>>();
    const std::string dir = kData + "/" + GetParam();

    auto inspected = inspect_hf_directory(dir);
    ASSERT_TRUE(inspected.ok()) << inspected.status().to_string();
    auto loaded = load_hf_directory(*inspected);
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    const ModelWeights& w = loaded->weights;
    const ModelConfig& c = w.config();

    std::vector<int64_t> shape;
    std::vector<float> ref;
    ASSERT_TRUE(read_npy_f32(dir + "/logits.npy", shape, ref)) << dir << "/logits.npy";
    ASSERT_EQ(shape, (std::vector<int64_t>{static_cast<int64_t>(tokens.size()), c.vocab_size}));
    double scale = 0;
    for (float x : ref) scale = std::max(scale, static_cast<double>(std::abs(x)));

    auto t = Transformer<float>::create(c);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    PackedBatch b;
    b.add_sequence(tokens, 1);
    std::vector<float> got(ref.size());
    ASSERT_TRUE(t->logits(w.data(), b, got.data()).ok());

    auto e = InferenceEngine::create(c);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    PagedKvCache cache(c, 16);
    const ForwardItem item{cache.create(), tokens};
    std::vector<float> got_kv(ref.size());
    ASSERT_TRUE(e->forward(w.data(), cache, std::span(&item, 1), got_kv.data(), true).ok());

    double worst = 0, worst_kv = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_FALSE(std::isnan(got[i]) || std::isnan(got_kv[i])) << i;
        worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]) / scale);
        worst_kv = std::max(worst_kv, std::abs(static_cast<double>(got_kv[i]) - ref[i]) / scale);
    }
    RecordProperty("max_rel_diff", std::to_string(worst));
    RecordProperty("max_rel_diff_kv", std::to_string(worst_kv));
    std::printf(
        "%s: max |logit| %.3f, max diff / max |logit| %.2e (training path), %.2e (paged KV)\n",
        GetParam(), scale, worst, worst_kv);
    EXPECT_LE(worst, 1e-4);
    EXPECT_LE(worst_kv, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Hf, TransformersReference,
                         ::testing::Values("llama_gqa", "llama_gqa_otherform", "llama_tied_linear",
                                           "qwen2", "qwen3", "qwen3_bf16", "qwen2_f16",
                                           "llama_sharded"));

TEST(TransformersReference, DirectoriesHaveTheStorageTheyClaim) {
    if (!std::filesystem::exists(kData + "/manifest.json")) GTEST_SKIP() << "no reference data";
    auto bf16 = inspect_hf_directory(kData + "/qwen3_bf16");
    auto f16 = inspect_hf_directory(kData + "/qwen2_f16");
    auto sharded = inspect_hf_directory(kData + "/llama_sharded");
    ASSERT_TRUE(bf16.ok() && f16.ok() && sharded.ok());
    EXPECT_EQ(bf16->stored_bytes_by_dtype.count("BF16"), 1u);
    EXPECT_EQ(bf16->stored_bytes_by_dtype.size(), 1u);
    EXPECT_EQ(f16->stored_bytes_by_dtype.count("F16"), 1u);
    EXPECT_GT(sharded->files.size(), 1u);
    EXPECT_EQ(bf16->config.model.architecture, Architecture::kQwen3);
    EXPECT_TRUE(bf16->config.model.tie_embeddings);
}

}  // namespace
}  // namespace tandem::model
