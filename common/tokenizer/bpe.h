#pragma once

// The BPE `model` of tokenizer.json: vocabulary, merges by rank, byte fallback, unknown token
// and the ignore_merges shortcut. Words are encoded with a rank-ordered priority queue of
// candidate merges over a linked list of symbols (O(n log n) in the word length), and encoded
// words are kept in a bounded cache.

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace tandem::tokenizer {

// Thread-safe: the tables are immutable after creation; the word cache is guarded by a mutex.
class BpeModel {
public:
    // `byte_level`: words arrive as raw bytes and each byte starts as the token of its GPT-2
    // character; otherwise each UTF-8 character starts as its own token (or byte-fallback
    // tokens <0xXX>, or the unknown token).
    static Result<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& model, bool byte_level,
                                                       const std::string& where);

    // Appends the ids of `word` to `out`.
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;

    std::optional<int32_t> token_to_id(std::string_view token) const;
    // The vocabulary as tokenizer.json spells it (GPT-2 characters for byte-level models).
    const std::string* id_to_token(int32_t id) const;
    int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

private:
    BpeModel() = default;
    struct Merge {
        int32_t rank;
        int32_t id;
    };
    // Open addressing over (left id, right id) -> merge; built once, read-only afterwards.
    class MergeTable {
    public:
        void build(const std::vector<std::pair<uint64_t, Merge>>& entries);
        const Merge* find(int32_t left, int32_t right) const;

    private:
        static uint64_t key(int32_t l, int32_t r) {
            return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) |
                   static_cast<uint32_t>(r);
        }
        std::vector<uint64_t> keys_;
        std::vector<Merge> values_;
        uint64_t mask_ = 0;
    };
    struct StringHash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

    void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
    void merge(std::vector<int32_t>& ids) const;

    Vocab vocab_;
    std::vector<std::string> id_to_token_;
    MergeTable merges_;
    bool byte_level_ = false;
    bool byte_fallback_ = false;
    bool fuse_unk_ = false;
    bool ignore_merges_ = false;
    int32_t unk_id_ = -1;
    int32_t byte_ids_[256];      // byte-level: token of each byte's character
    int32_t fallback_ids_[256];  // byte fallback: token <0xXX>, -1 if missing

    static constexpr size_t kCacheMaxWords = 1 << 18;
    static constexpr size_t kCacheMaxWordBytes = 64;
    mutable std::mutex cache_mu_;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>
        cache_;
};

}  // namespace tandem::tokenizer
