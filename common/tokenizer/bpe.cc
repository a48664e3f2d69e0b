#include "common/tokenizer/bpe.h"

#include <queue>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/tokenizer/unicode.h"

namespace tandem::tokenizer {

void BpeModel::MergeTable::build(const std::vector<std::pair<uint64_t, Merge>>& entries) {
    size_t capacity = 16;
    while (capacity < entries.size() * 2) capacity <<= 1;
    mask_ = capacity - 1;
    keys_.assign(capacity, ~0ull);
    values_.assign(capacity, Merge{-1, -1});
    for (const auto& [k, v] : entries) {
        uint64_t slot = (k * 0x9E3779B97F4A7C15ull) >> 20 & mask_;
        while (keys_[slot] != ~0ull && keys_[slot] != k) slot = (slot + 1) & mask_;
        if (keys_[slot] == k) continue;  // the first (lowest-rank) merge of a pair wins
        keys_[slot] = k;
        values_[slot] = v;
    }
}

const BpeModel::Merge* BpeModel::MergeTable::find(int32_t left, int32_t right) const {
    const uint64_t k = key(left, right);
    uint64_t slot = (k * 0x9E3779B97F4A7C15ull) >> 20 & mask_;
    while (true) {
        if (keys_[slot] == k) return &values_[slot];
        if (keys_[slot] == ~0ull) return nullptr;
        slot = (slot + 1) & mask_;
    }
}

Result<std::unique_ptr<BpeModel>> BpeModel::from_json(const nlohmann::json& model, bool byte_level,
                                                      const std::string& where) {
    if (model.value("type", "BPE") != "BPE") {
        return invalid_argument(where + ".type: unsupported model \"" + model.value("type", "") +
                                "\" (only BPE is supported)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (model.contains(key) && model[key].is_string() &&
            !model[key].get<std::string>().empty()) {
            return invalid_argument(where + "." + key + ": not supported (\"" +
                                    model[key].get<std::string>() + "\")");
        }
    }
    if (model.contains("dropout") && model["dropout"].is_number() &&
        model["dropout"].get<double>() > 0) {
        return invalid_argument(where + ".dropout: BPE dropout is not supported");
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
        return invalid_argument(where + ".vocab: missing or not an object");
    }
    std::unique_ptr<BpeModel> m(new BpeModel());
    m->byte_level_ = byte_level;
    m->byte_fallback_ = model.value("byte_fallback", false);
    m->fuse_unk_ = model.value("fuse_unk", false);
    m->ignore_merges_ = model.value("ignore_merges", false);
    const auto& vocab = model["vocab"];
    m->vocab_.reserve(vocab.size());
    int32_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        const int64_t id = it.value().get<int64_t>();
        if (id < 0 || id > (1 << 30)) {
            return invalid_argument(
                fmt::format("{}.vocab[\"{}\"]: id {} out of range", where, it.key(), id));
        }
        m->vocab_.emplace(it.key(), static_cast<int32_t>(id));
        max_id = std::max(max_id, static_cast<int32_t>(id));
    }
    m->id_to_token_.resize(static_cast<size_t>(max_id + 1));
    for (const auto& [token, id] : m->vocab_) m->id_to_token_[static_cast<size_t>(id)] = token;

    if (model.contains("unk_token") && model["unk_token"].is_string()) {
        const auto unk = m->token_to_id(model["unk_token"].get<std::string>());
        if (!unk) {
            return invalid_argument(where + ".unk_token: \"" +
                                    model["unk_token"].get<std::string>() +
                                    "\" is not in the vocabulary");
        }
        m->unk_id_ = *unk;
    }
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    for (int b = 0; b < 256; ++b) {
        const auto byte_id = m->token_to_id(alphabet.char_of(static_cast<uint8_t>(b)));
        m->byte_ids_[b] = byte_id ? *byte_id : -1;
        if (byte_level && !byte_id) {
            return invalid_argument(fmt::format(
                "{}.vocab: byte-level model lacks the token of byte 0x{:02X}", where, b));
        }
        const auto fallback = m->token_to_id(fmt::format("<0x{:02X}>", b));
        m->fallback_ids_[b] = fallback ? *fallback : -1;
    }

    const auto& merges = model.value("merges", nlohmann::json::array());
    std::vector<std::pair<uint64_t, Merge>> entries;
    entries.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        std::string left, right;
        const auto& entry = merges[rank];
        if (entry.is_string()) {  // "left right"
            const std::string s = entry.get<std::string>();
            const size_t space = s.find(' ', 1);
            if (space == std::string::npos) {
                return invalid_argument(fmt::format(
                    "{}.merges[{}]: expected \"left right\", got \"{}\"", where, rank, s));
            }
            left = s.substr(0, space);
            right = s.substr(space + 1);
        } else if (entry.is_array() && entry.size() == 2) {  // ["left", "right"]
            left = entry[0].get<std::string>();
            right = entry[1].get<std::string>();
        } else {
            return invalid_argument(
                fmt::format("{}.merges[{}]: expected a string or a pair", where, rank));
        }
        const auto l = m->token_to_id(left);
        const auto r = m->token_to_id(right);
        const auto merged = m->token_to_id(left + right);
        if (!l || !r || !merged) {
            return invalid_argument(
                fmt::format("{}.merges[{}]: \"{} {}\" names a token that is not in the vocabulary",
                            where, rank, left, right));
        }
        entries.push_back(
            {(static_cast<uint64_t>(static_cast<uint32_t>(*l)) << 32) | static_cast<uint32_t>(*r),
             Merge{static_cast<int32_t>(rank), *merged}});
    }
    m->merges_.build(entries);
    return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
    const std::string& s = id_to_token_[static_cast<size_t>(id)];
    return s.empty() ? nullptr : &s;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
    ids.clear();
    if (byte_level_) {
        for (unsigned char c : word) ids.push_back(byte_ids_[c]);
        return;
    }
    bool last_unk = false;
    for (size_t i = 0; i < word.size();) {
        const size_t n =
            std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
        const auto id = token_to_id(word.substr(i, n));
        if (id) {
            ids.push_back(*id);
            last_unk = false;
        } else {
            bool fallback = byte_fallback_;
            for (size_t k = 0; fallback && k < n; ++k) {
                fallback = fallback_ids_[static_cast<unsigned char>(word[i + k])] >= 0;
            }
            if (fallback) {
                for (size_t k = 0; k < n; ++k) {
                    ids.push_back(fallback_ids_[static_cast<unsigned char>(word[i + k])]);
                }
                last_unk = false;
            } else if (unk_id_ >= 0) {
                if (!(fuse_unk_ && last_unk)) ids.push_back(unk_id_);
                last_unk = true;
            }
        }
        i += n;
    }
}

void BpeModel::merge(std::vector<int32_t>& ids) const {
    const int n = static_cast<int>(ids.size());
    if (n < 2) return;
    struct Candidate {
        int32_t rank;
        int32_t pos;
        int32_t id;
        bool operator>(const Candidate& o) const {
            return rank != o.rank ? rank > o.rank : pos > o.pos;
        }
    };
    std::vector<int32_t> prev(n), next(n);
    for (int i = 0; i < n; ++i) {
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
    }
    std::vector<Candidate> storage;
    storage.reserve(static_cast<size_t>(n));
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue(
        std::greater<>{}, std::move(storage));
    for (int i = 0; i + 1 < n; ++i) {
        if (const Merge* m = merges_.find(ids[i], ids[i + 1])) queue.push({m->rank, i, m->id});
    }
    std::vector<char> alive(n, 1);
    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        const int i = top.pos;
        if (!alive[i] || next[i] < 0) continue;
        const int j = next[i];
        const Merge* m = merges_.find(ids[i], ids[j]);
        if (m == nullptr || m->rank != top.rank || m->id != top.id) continue;  // stale
        ids[i] = top.id;
        alive[j] = 0;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        if (prev[i] >= 0) {
            if (const Merge* pm = merges_.find(ids[prev[i]], ids[i])) {
                queue.push({pm->rank, prev[i], pm->id});
            }
        }
        if (next[i] >= 0) {
            if (const Merge* nm = merges_.find(ids[i], ids[next[i]]))
                queue.push({nm->rank, i, nm->id});
        }
    }
    int w = 0;
    for (int i = 0; i >= 0; i = next[i]) ids[w++] = ids[i];
    ids.resize(static_cast<size_t>(w));
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    const bool cacheable = word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
        std::lock_guard lock(cache_mu_);
        const auto it = cache_.find(word);
        if (it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    std::vector<int32_t> ids;
    bool whole = false;
    if (ignore_merges_) {
        if (byte_level_) {
            std::string mapped;
            const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
            for (unsigned char c : word) mapped += alphabet.char_of(c);
            if (const auto id = token_to_id(mapped)) ids.push_back(*id), whole = true;
        } else if (const auto id = token_to_id(word)) {
            ids.push_back(*id), whole = true;
        }
    }
    if (!whole) {
        initial_symbols(word, ids);
        merge(ids);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
        std::lock_guard lock(cache_mu_);
        if (cache_.size() >= kCacheMaxWords) cache_.clear();
        cache_.emplace(std::string(word), std::move(ids));
    }
}

}  // namespace tandem::tokenizer
