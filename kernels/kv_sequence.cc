#include "kernels/kv_sequence.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/ring/sharded_decode.h"

namespace tandem::kernels {

bool kv_page_sealable(const KvSequenceConfig& c, bool closed, int64_t tokens_after) {
    if (!closed) return false;
    return tokens_after >= (c.sealed.kivi() ? c.residual_tokens : 0);
}

KvPagedSequence::KvPagedSequence(const KvSequenceConfig& config) : config_(config) {
    f32_ = config.sealed;
    f32_.dtype = KvDType::kF32;
    f32_.scheme = KvScheme::kPerToken;
}

Result<KvPagedSequence> KvPagedSequence::create(const KvSequenceConfig& config) {
    TANDEM_RETURN_IF_ERROR(validate(config.sealed));
    if (config.residual_tokens < 0) {
        return invalid_argument("kv sequence: residual_tokens must be >= 0");
    }
    return KvPagedSequence(config);
}

int64_t KvPagedSequence::f32_tokens() const {
    int64_t n = 0;
    for (const Page& p : pages_) n += p.sealed ? 0 : p.rows;
    return n;
}

int64_t KvPagedSequence::bytes() const {
    int64_t n = 0;
    for (const Page& p : pages_) n += static_cast<int64_t>(p.bytes.size());
    return n;
}

Status KvPagedSequence::append(int64_t pos0, int64_t n, const float* k, const float* v) {
    if (n < 0 || pos0 < 0) return invalid_argument("kv sequence: negative position or count");
    if (n == 0) return Status();
    if (!pages_.empty()) {
        const Page& last = pages_.back();
        if (pos0 < last.pos0 + last.rows) {
            return already_exists("kv sequence: position " + std::to_string(pos0) +
                                  " is not after the stored tokens");
        }
    }
    const int64_t E = f32_.row_elems();
    const int T = f32_.page_tokens;
    int64_t i = 0;
    while (i < n) {
        Page* last = pages_.empty() ? nullptr : &pages_.back();
        const bool extend =
            last && !last->sealed && last->rows < T && last->pos0 + last->rows == pos0 + i;
        if (!extend) {
            Page p;
            p.pos0 = pos0 + i;
            p.bytes.assign(static_cast<size_t>(kv_page_bytes(f32_)), 0);
            pages_.push_back(std::move(p));
            last = &pages_.back();
        }
        const int64_t take = std::min<int64_t>(n - i, T - last->rows);
        auto* kd = reinterpret_cast<float*>(last->bytes.data());
        auto* vd = kd + static_cast<int64_t>(T) * E;
        std::memcpy(kd + last->rows * E, k + i * E, static_cast<size_t>(take * E) * 4);
        std::memcpy(vd + last->rows * E, v + i * E, static_cast<size_t>(take * E) * 4);
        last->rows += static_cast<int32_t>(take);
        i += take;
    }
    tokens_ += n;
    return seal_ready();
}

Status KvPagedSequence::seal_ready() {
    if (config_.sealed.dtype == KvDType::kF32) return Status();
    // Tokens after page first_unsealed_ (all later pages are unsealed too).
    int64_t after = 0;
    for (size_t j = first_unsealed_ + 1; j < pages_.size(); ++j) after += pages_[j].rows;
    const int64_t E = f32_.row_elems();
    const int T = f32_.page_tokens;
    while (first_unsealed_ < pages_.size()) {
        Page& p = pages_[first_unsealed_];
        const bool closed = p.rows == T || first_unsealed_ + 1 < pages_.size();
        if (!kv_page_sealable(config_, closed, after)) break;
        std::vector<uint8_t> q(static_cast<size_t>(kv_page_bytes(config_.sealed)));
        const auto* kd = reinterpret_cast<const float*>(p.bytes.data());
        TANDEM_RETURN_IF_ERROR(kv_quantize_page(
            config_.sealed, kd, kd + static_cast<int64_t>(T) * E, p.rows, q.data()));
        p.bytes = std::move(q);
        p.sealed = true;
        ++sealed_pages_;
        ++first_unsealed_;
        if (first_unsealed_ < pages_.size()) after -= pages_[first_unsealed_].rows;
    }
    return Status();
}

std::vector<KvPageRef> KvPagedSequence::pages() const {
    std::vector<KvPageRef> refs;
    refs.reserve(pages_.size());
    for (const Page& p : pages_) {
        refs.push_back(
            KvPageRef{p.sealed ? &config_.sealed : &f32_, p.bytes.data(), 0, p.rows, p.pos0});
    }
    return refs;
}

Status KvPagedSequence::attend(int hq, float scale, const float* q, int64_t n, int64_t q_pos0,
                               float* o, float* lse) const {
    AttentionParams p;
    p.tq = n;
    p.hq = hq;
    p.hkv = f32_.hkv;
    p.d = f32_.d;
    p.scale = scale;
    p.causal = true;
    p.q_pos0 = q_pos0;
    const auto refs = pages();
    return kv_paged_attention_cpu(p, refs, q, o, lse);
}

Result<KvDecodeShard> KvDecodeShard::create(const KvSequenceConfig& config, int hq, float scale,
                                            int rank, int ranks) {
    if (ranks <= 0 || rank < 0 || rank >= ranks) {
        return invalid_argument("kv decode shard: rank " + std::to_string(rank) + " of " +
                                std::to_string(ranks));
    }
    if (hq <= 0 || hq % std::max(1, config.sealed.hkv) != 0) {
        return invalid_argument("kv decode shard: query heads must be a multiple of kv heads");
    }
    TANDEM_ASSIGN_OR_RETURN(KvPagedSequence seq, KvPagedSequence::create(config));
    return KvDecodeShard(std::move(seq), hq, scale, rank, ranks);
}

int KvDecodeShard::owner(int64_t pos) const {
    return static_cast<int>((pos / seq_.config().sealed.page_tokens) % ranks_);
}

Status KvDecodeShard::store(int64_t pos0, int64_t n, const float* k, const float* v) {
    return seq_.append(pos0, n, k, v);
}

Status KvDecodeShard::append(int64_t pos0, int64_t n, const float* k, const float* v) {
    const int64_t T = seq_.config().sealed.page_tokens;
    const int64_t E = seq_.config().sealed.row_elems();
    int64_t i = 0;
    while (i < n) {
        const int64_t pos = pos0 + i;
        const int64_t len = std::min(n - i, (pos / T + 1) * T - pos);
        if (owner(pos) == rank_)
            TANDEM_RETURN_IF_ERROR(seq_.append(pos, len, k + i * E, v + i * E));
        i += len;
    }
    return Status();
}

Status KvDecodeShard::decode_attend(RingTransport& transport, const float* q, int64_t n,
                                    int64_t q_pos0, float* o, float* lse,
                                    std::chrono::milliseconds timeout) const {
    if (transport.size() != ranks_ || transport.rank() != rank_) {
        return invalid_argument("kv decode shard: the shard and the transport disagree on ranks");
    }
    if (n <= 0) return invalid_argument("kv decode shard: attend needs at least one query");
    const int d = seq_.config().sealed.d;
    const int64_t part = partial_elems(n, hq_, d);
    std::vector<float> table(static_cast<size_t>(part * ranks_));
    float* mine = table.data() + static_cast<int64_t>(rank_) * part;
    TANDEM_RETURN_IF_ERROR(seq_.attend(hq_, scale_, q, n, q_pos0, mine, mine + n * hq_ * d));
    return allgather_merge_partials(transport, table, n, hq_, d, o, lse, timeout);
}

}  // namespace tandem::kernels
