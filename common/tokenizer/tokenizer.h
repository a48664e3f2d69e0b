#pragma once

// Hugging Face tokenizers read from tokenizer.json (+ tokenizer_config.json): byte-level BPE with
// regex pre-tokenizers (GPT-2, Llama 3, Qwen2/Qwen3) and Metaspace / byte-fallback BPE (Llama 2,
// Mistral). Encoding follows transformers' default: added and special tokens written in the text
// are matched as tokens; the post-processor (BOS/EOS) runs only when asked.
//
//   auto tok = Tokenizer::load("models/qwen3");            // Result<Tokenizer>
//   auto ids = tok->encode("Hello <|im_end|>");            // Result<std::vector<int32_t>>
//   std::string text = tok->decode(*ids);

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::tokenizer {

struct DecodeOptions {
    bool skip_special_tokens = false;
    // Remove the space before punctuation and contractions (" ." -> "."), as transformers'
    // clean_up_tokenization_spaces. Unset: the value in tokenizer_config.json (default true).
    std::optional<bool> clean_up_tokenization_spaces;
};

// Thread-safe: immutable after load except for an internal word cache guarded by a mutex.
// Movable, not copyable.
class Tokenizer {
public:
    // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json. Errors name the
    // file and the key ("DIR/tokenizer.json: pre_tokenizer.type: unsupported pre-tokenizer ...").
    static Result<Tokenizer> load(const std::filesystem::path& dir);
    // The same from the files' contents; `origin` prefixes errors.
    static Result<Tokenizer> from_json(std::string_view tokenizer_json,
                                       std::string_view tokenizer_config_json,
                                       const std::string& origin);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // Ids of `text` (UTF-8; invalid_argument names the first invalid byte). With
    // `add_special_tokens`, the post-processor adds its tokens (BOS for Llama 2 and Llama 3.1+).
    Result<std::vector<int32_t>> encode(std::string_view text,
                                        bool add_special_tokens = false) const;
    // Appends the ids of `text` to `out` (no post-processing).
    Status encode_into(std::string_view text, std::vector<int32_t>& out) const;
    // Text of `ids`; unknown ids are skipped.
    std::string decode(std::span<const int32_t> ids, const DecodeOptions& options = {}) const;

    // One more than the largest id (model vocabulary and added tokens).
    int32_t vocab_size() const;
    std::optional<int32_t> token_to_id(std::string_view token) const;
    // The token as tokenizer.json spells it ("Ġhello", "<|im_end|>"), or nullopt.
    std::optional<std::string> id_to_token(int32_t id) const;
    bool is_special(int32_t id) const;
    // From tokenizer_config.json (bos_token, eos_token, pad_token), when set and known.
    std::optional<int32_t> bos_id() const;
    std::optional<int32_t> eos_id() const;
    std::optional<int32_t> pad_id() const;
    // Tokens the post-processor adds around one sequence (empty when none).
    const std::vector<int32_t>& prefix_ids() const;
    const std::vector<int32_t>& suffix_ids() const;
    // "byte-level BPE, 151669 tokens (26 added, 14 special), with normalizer" and the like.
    std::string describe() const;

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::tokenizer
