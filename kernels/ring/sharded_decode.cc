#include "kernels/ring/sharded_decode.h"

#include <cstring>
#include <limits>
#include <string>

#include "kernels/attention.h"
#include "kernels/merge.h"

namespace tandem::kernels {

Result<DecodeShard> DecodeShard::create(const DecodeConfig& config, int rank, int ranks) {
    AttentionParams p;
    p.tq = 1;
    p.tk = 1;
    p.hq = config.hq;
    p.hkv = config.hkv;
    p.d = config.d;
    p.scale = config.scale;
    TANDEM_RETURN_IF_ERROR(validate(p));
    if (ranks <= 0 || rank < 0 || rank >= ranks) {
        return invalid_argument("decode shard: rank " + std::to_string(rank) + " of " +
                                std::to_string(ranks));
    }
    if (config.block_tokens <= 0) return invalid_argument("decode shard: block_tokens must be > 0");
    return DecodeShard(config, rank, ranks);
}

int DecodeShard::owner(int64_t pos) const {
    return static_cast<int>((pos / config_.block_tokens) % ranks_);
}

Status DecodeShard::store(int64_t pos0, int64_t n, const float* k, const float* v) {
    if (n < 0 || pos0 < 0) return invalid_argument("decode shard: negative position or count");
    if (n == 0) return Status();
    if (!k || !v) return invalid_argument("decode shard: null k or v");
    for (const Run& r : runs_) {
        if (pos0 < r.pos0 + r.rows && r.pos0 < pos0 + n) {
            return already_exists("decode shard: positions " + std::to_string(pos0) + ".." +
                                  std::to_string(pos0 + n - 1) + " overlap stored tokens");
        }
    }
    const int64_t row = static_cast<int64_t>(config_.hkv) * config_.d;
    k_.insert(k_.end(), k, k + n * row);
    v_.insert(v_.end(), v, v + n * row);
    if (!runs_.empty() && runs_.back().pos0 + runs_.back().rows == pos0) {
        runs_.back().rows += n;  // continues the last run
    } else {
        runs_.push_back(Run{pos0, n, tokens_});
    }
    tokens_ += n;
    return Status();
}

Status DecodeShard::append(int64_t pos0, int64_t n, const float* k, const float* v) {
    const int64_t row = static_cast<int64_t>(config_.hkv) * config_.d;
    int64_t i = 0;
    while (i < n) {
        // The run of tokens from i that share an owner ends at the next block boundary.
        const int64_t pos = pos0 + i;
        const int64_t block_end = (pos / config_.block_tokens + 1) * config_.block_tokens;
        const int64_t len = std::min(n - i, block_end - pos);
        if (owner(pos) == rank_) {
            TANDEM_RETURN_IF_ERROR(store(pos, len, k + i * row, v + i * row));
        }
        i += len;
    }
    return Status();
}

Status DecodeShard::attend(const float* q, int64_t n, int64_t q_pos0, float* o, float* lse) const {
    if (n <= 0) return invalid_argument("decode shard: attend needs at least one query");
    std::fill(o, o + n * config_.hq * config_.d, 0.0f);
    std::fill(lse, lse + n * config_.hq, -std::numeric_limits<float>::infinity());
    const int64_t row = static_cast<int64_t>(config_.hkv) * config_.d;
    for (const Run& r : runs_) {
        if (r.pos0 > q_pos0 + n - 1) continue;  // entirely in the future of every query
        const AttentionParams p = decode_run_params(config_, n, q_pos0, r.pos0, r.rows);
        TANDEM_RETURN_IF_ERROR(attention_forward_cpu(p, q, k_.data() + r.offset * row,
                                                     v_.data() + r.offset * row, o, lse));
    }
    return Status();
}

AttentionParams decode_run_params(const DecodeConfig& config, int64_t n, int64_t q_pos0,
                                  int64_t run_pos0, int64_t run_rows) {
    AttentionParams p;
    p.tq = n;
    p.tk = run_rows;
    p.hq = config.hq;
    p.hkv = config.hkv;
    p.d = config.d;
    p.scale = config.scale;
    p.causal = true;
    p.q_pos0 = q_pos0;
    p.k_pos0 = run_pos0;
    p.accumulate = true;
    return p;
}

int64_t partial_elems(int64_t n, int hq, int d) { return n * hq * d + n * hq; }

Status allgather_merge_partials(RingTransport& transport, std::span<float> table, int64_t n, int hq,
                                int d, float* o, float* lse, std::chrono::milliseconds timeout) {
    const int ranks = transport.size();
    const int rank = transport.rank();
    const int64_t o_elems = n * hq * d;
    const int64_t part = partial_elems(n, hq, d);
    if (static_cast<int64_t>(table.size()) < part * ranks) {
        return invalid_argument("sharded decode: the partial table holds " +
                                std::to_string(table.size()) + " floats, " +
                                std::to_string(part * ranks) + " are needed");
    }
    auto slot = [&](int r) { return table.data() + static_cast<int64_t>(r) * part; };
    // All-gather: at shift s every rank forwards what it received at shift s - 1 (its own partial
    // first), so after P - 1 shifts each rank holds every partial.
    for (int s = 0; s + 1 < ranks; ++s) {
        const int send_from = (rank - s + ranks) % ranks;
        const int recv_from = (rank - s - 1 + 2 * ranks) % ranks;
        TANDEM_ASSIGN_OR_RETURN(
            RingRequest req,
            transport.post_shift(kRingChannelPartial, slot(send_from), slot(recv_from),
                                 static_cast<size_t>(part) * sizeof(float)));
        TANDEM_RETURN_IF_ERROR(transport.wait(req, timeout));
    }
    std::vector<AttentionPartial> parts;
    parts.reserve(static_cast<size_t>(ranks));
    for (int r = 0; r < ranks; ++r) parts.push_back({slot(r), slot(r) + o_elems});
    return merge_attention(parts, n, hq, d, o, lse);
}

Status sharded_decode_attend(const DecodeShard& shard, RingTransport& transport, const float* q,
                             int64_t n, int64_t q_pos0, float* o, float* lse,
                             std::chrono::milliseconds timeout) {
    const DecodeConfig& c = shard.config();
    if (transport.size() != shard.ranks() || transport.rank() != shard.rank()) {
        return invalid_argument("sharded decode: the shard and the transport disagree on ranks");
    }
    const int64_t part = partial_elems(n, c.hq, c.d);
    std::vector<float> table(static_cast<size_t>(part * shard.ranks()));
    float* mine = table.data() + static_cast<int64_t>(shard.rank()) * part;
    TANDEM_RETURN_IF_ERROR(shard.attend(q, n, q_pos0, mine, mine + n * c.hq * c.d));
    return allgather_merge_partials(transport, table, n, c.hq, c.d, o, lse, timeout);
}

}  // namespace tandem::kernels
