// Tokenizer behaviour on small hand-written tokenizer.json files: merge order, byte fallback,
// added tokens, post-processor, decoders and every refusal.

#include <filesystem>
#include <map>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/tokenizer/tokenizer.h"

namespace tandem::tokenizer {
namespace {

using nlohmann::json;

// A character-level BPE over `chars` with `merges` ("a b") and no pre-tokenizer.
json char_bpe(const std::string& chars, const std::vector<std::string>& merges) {
    json vocab = json::object();
    int id = 0;
    for (char c : chars) vocab[std::string(1, c)] = id++;
    for (const auto& m : merges) {
        const auto space = m.find(' ');
        const std::string merged = m.substr(0, space) + m.substr(space + 1);
        if (!vocab.contains(merged)) vocab[merged] = id++;
    }
    return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
            {"added_tokens", json::array()}};
}

Tokenizer make(const json& tokenizer, const json& config = json::object()) {
    auto tok = Tokenizer::from_json(tokenizer.dump(), config.dump(), "test.json");
    EXPECT_TRUE(tok.ok()) << tok.status().to_string();
    return std::move(*tok);
}

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text, bool special = false) {
    auto ids = tok.encode(text, special);
    EXPECT_TRUE(ids.ok()) << ids.status().to_string();
    return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::string refusal(const json& tokenizer) {
    auto tok = Tokenizer::from_json(tokenizer.dump(), "{}", "test.json");
    EXPECT_FALSE(tok.ok());
    return tok.ok() ? "" : tok.status().message();
}

TEST(Tokenizer, MergesApplyInRankOrderNotLeftToRight) {
    // "b c" ranks before "a b": abc -> a + bc, although "ab" is leftmost.
    const Tokenizer tok = make(char_bpe("abc", {"b c", "a b"}));
    EXPECT_EQ(encode(tok, "abc"),
              (std::vector<int32_t>{*tok.token_to_id("a"), *tok.token_to_id("bc")}));
    EXPECT_EQ(encode(tok, "abab"),
              (std::vector<int32_t>{*tok.token_to_id("ab"), *tok.token_to_id("ab")}));
}

// The priority-queue merge agrees with the textbook loop (merge the lowest-ranked adjacent pair,
// leftmost first, until none applies) on random words and merge tables.
TEST(Tokenizer, LongWordsMergeAsTheTextbookLoopDoes) {
    std::mt19937 rng(7);
    const std::string alphabet = "abcd";
    for (int trial = 0; trial < 20; ++trial) {
        std::vector<std::string> tokens(alphabet.size());
        for (size_t i = 0; i < alphabet.size(); ++i) tokens[i] = std::string(1, alphabet[i]);
        std::vector<std::string> merges;
        std::map<std::pair<std::string, std::string>, size_t> rank;
        for (int k = 0; k < 30; ++k) {
            const std::string l = tokens[rng() % tokens.size()], r = tokens[rng() % tokens.size()];
            if (rank.count({l, r}) || (l + r).size() > 6) continue;
            rank[{l, r}] = merges.size();
            merges.push_back(l + " " + r);
            if (std::find(tokens.begin(), tokens.end(), l + r) == tokens.end())
                tokens.push_back(l + r);
        }
        const Tokenizer tok = make(char_bpe(alphabet, merges));
        std::string word;
        for (int i = 0; i < 300; ++i) word += alphabet[rng() % alphabet.size()];
        std::vector<std::string> symbols;
        for (char c : word) symbols.emplace_back(1, c);
        while (true) {
            size_t best = SIZE_MAX, at = 0;
            for (size_t i = 0; i + 1 < symbols.size(); ++i) {
                const auto it = rank.find({symbols[i], symbols[i + 1]});
                if (it != rank.end() && it->second < best) best = it->second, at = i;
            }
            if (best == SIZE_MAX) break;
            symbols[at] += symbols[at + 1];
            symbols.erase(symbols.begin() + static_cast<long>(at) + 1);
        }
        std::vector<int32_t> expected;
        for (const auto& s : symbols) expected.push_back(*tok.token_to_id(s));
        EXPECT_EQ(encode(tok, word), expected) << "trial " << trial;
    }
}

TEST(Tokenizer, IgnoreMergesTakesAWholeWordFromTheVocabulary) {
    json t = char_bpe("abc", {"a b", "b c"});
    t["model"]["vocab"]["abc"] = 10;
    EXPECT_EQ(encode(make(t), "abc").size(), 2u);  // no merge makes "abc"
    t["model"]["ignore_merges"] = true;
    EXPECT_EQ(encode(make(t), "abc"), std::vector<int32_t>{10});
}

TEST(Tokenizer, ByteFallbackEncodesUnknownCharactersAsBytesAndDecodesThemBack) {
    json t = char_bpe("ab", {});
    t["model"]["byte_fallback"] = true;
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        t["model"]["vocab"][name] = 100 + b;
    }
    t["decoder"] = {{"type", "Sequence"},
                    {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
    const Tokenizer tok = make(t);
    EXPECT_EQ(encode(tok, "a\xC3\xA9"), (std::vector<int32_t>{0, 100 + 0xC3, 100 + 0xA9}));
    EXPECT_EQ(tok.decode(encode(tok,
                                "a\xC3\xA9"
                                "b")),
              "a\xC3\xA9"
              "b");
    // A lone lead byte is not UTF-8: one replacement character per byte token.
    EXPECT_EQ(tok.decode(std::vector<int32_t>{100 + 0xC3, 1}),
              "\xEF\xBF\xBD"
              "b");
}

TEST(Tokenizer, UnknownCharactersFuseIntoOneUnknownToken) {
    json t = char_bpe("ab", {});
    t["model"]["vocab"]["<unk>"] = 7;
    t["model"]["unk_token"] = "<unk>";
    EXPECT_EQ(encode(make(t), "axyb"), (std::vector<int32_t>{0, 7, 7, 1}));
    t["model"]["fuse_unk"] = true;
    EXPECT_EQ(encode(make(t), "axyb"), (std::vector<int32_t>{0, 7, 1}));
}

TEST(Tokenizer, AddedTokensInTextMatchLongestFirstAndStripWhitespaceWhenAsked) {
    json t = char_bpe("ab <>x", {});
    t["added_tokens"] = {
        {{"id", 50}, {"content", "<x>"}, {"special", true}},
        {{"id", 51}, {"content", "<x><x>"}, {"special", true}},
        {{"id", 52}, {"content", "<s>"}, {"special", false}, {"lstrip", true}, {"rstrip", true}},
    };
    const Tokenizer tok = make(t);
    EXPECT_EQ(encode(tok, "a<x><x><x>b"), (std::vector<int32_t>{0, 51, 50, 1}));
    EXPECT_EQ(encode(tok, "a  <s>  b"), (std::vector<int32_t>{0, 52, 1}));
    EXPECT_EQ(encode(tok, "<x"),
              (std::vector<int32_t>{*tok.token_to_id("<"), *tok.token_to_id("x")}));
    EXPECT_TRUE(tok.is_special(50));
    EXPECT_FALSE(tok.is_special(52));
    EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 51, 52}, {.skip_special_tokens = true}), "a <s>");
}

TEST(Tokenizer, TemplateProcessingAddsBosAndEosOnlyWhenAsked) {
    json t = char_bpe("ab", {});
    t["added_tokens"] = {{{"id", 10}, {"content", "<s>"}, {"special", true}},
                         {{"id", 11}, {"content", "</s>"}, {"special", true}}};
    t["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
        {"special_tokens",
         {{"<s>", {{"id", "<s>"}, {"ids", {10}}}}, {"</s>", {{"id", "</s>"}, {"ids", {11}}}}}}};
    const Tokenizer tok = make(t, {{"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}}}});
    EXPECT_EQ(encode(tok, "ab"), (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(encode(tok, "ab", true), (std::vector<int32_t>{10, 0, 1, 11}));
    EXPECT_EQ(tok.bos_id(), 10);
    EXPECT_EQ(tok.eos_id(), 11);
}

TEST(Tokenizer, MetaspaceReplacesSpacesAndPrependsOnlyToTheFirstSection) {
    const std::string bar = "\xE2\x96\x81";
    json t = char_bpe("ab", {});
    t["model"]["vocab"][bar] = 5;
    t["model"]["vocab"][bar + "a"] = 6;
    t["model"]["merges"] = {bar + " a"};
    t["pre_tokenizer"] = {
        {"type", "Metaspace"}, {"replacement", bar}, {"prepend_scheme", "first"}, {"split", true}};
    t["decoder"] = {{"type", "Metaspace"}, {"replacement", bar}, {"prepend_scheme", "first"}};
    t["added_tokens"] = {{{"id", 20}, {"content", "<s>"}, {"special", true}}};
    const Tokenizer tok = make(t);
    EXPECT_EQ(encode(tok, "a b"), (std::vector<int32_t>{6, 5, 1}));
    EXPECT_EQ(encode(tok, "a<s>a"), (std::vector<int32_t>{6, 20, 0}));
    EXPECT_EQ(tok.decode(encode(tok, "a b")), "a b");
}

TEST(Tokenizer, CleanUpTokenizationSpacesFollowsTheConfig) {
    const Tokenizer tok = make(char_bpe("a .", {}), {{"clean_up_tokenization_spaces", true}});
    // No decoder: the tokens "a", " ", "." are joined with spaces.
    EXPECT_EQ(tok.decode(encode(tok, "a ."), {.clean_up_tokenization_spaces = false}), "a   .");
    EXPECT_EQ(tok.decode(encode(tok, "a .")), "a  .");
}

TEST(Tokenizer, InvalidUtf8IsRefusedWithItsOffset) {
    const Tokenizer tok = make(char_bpe("ab", {}));
    const auto ids = tok.encode("ab\xFF");
    ASSERT_FALSE(ids.ok());
    EXPECT_NE(ids.status().message().find("byte 2"), std::string::npos) << ids.status().message();
}

TEST(Tokenizer, UnsupportedComponentsAreRefusedNamingTheKey) {
    json t = char_bpe("ab", {});
    t["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Digits"}}}}};
    EXPECT_NE(refusal(t).find("test.json: pre_tokenizer.pretokenizers[1].type: unsupported "
                              "pre-tokenizer \"Digits\""),
              std::string::npos);
    t = char_bpe("ab", {});
    t["model"]["type"] = "WordPiece";
    EXPECT_NE(refusal(t).find("model.type: unsupported model \"WordPiece\""), std::string::npos);
    t = char_bpe("ab", {});
    t["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}};
    EXPECT_NE(refusal(t).find("normalizer.pattern"), std::string::npos);
    t = char_bpe("ab", {});
    t["model"]["merges"] = {"a z"};
    EXPECT_NE(refusal(t).find("model.merges[0]"), std::string::npos);
    t = char_bpe("ab", {});
    t["decoder"] = {{"type", "WordPiece"}};
    EXPECT_NE(refusal(t).find("decoder.type: unsupported decoder \"WordPiece\""),
              std::string::npos);
    t = char_bpe("ab", {});
    t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}};
    EXPECT_NE(refusal(t).find("pre_tokenizer.pattern: regex does not compile"), std::string::npos);
    t = char_bpe("ab", {});
    t["post_processor"] = {{"type", "Frobnicate"}};
    EXPECT_NE(refusal(t).find("post_processor.type"), std::string::npos);
    t = char_bpe("ab", {});
    t["pre_tokenizer"] = {{"type", "ByteLevel"}};  // byte-level needs all 256 byte tokens
    EXPECT_NE(refusal(t).find("model.vocab: byte-level model lacks the token of byte 0x00"),
              std::string::npos);
}

TEST(Tokenizer, MissingDirectoryNamesTheFile) {
    const auto tok = Tokenizer::load("/nonexistent/model");
    ASSERT_FALSE(tok.ok());
    EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
    EXPECT_NE(tok.status().message().find("/nonexistent/model/tokenizer.json"), std::string::npos);
}

}  // namespace
}  // namespace tandem::tokenizer
