#pragma once

// Sharded decode: the KV cache of one sequence stays split over the P ranks of a ring; each rank
// attends the new queries (1 to 8 tokens) to its shard and the partial results are merged by
// log-sum-exp.
//
// Append policy (block round-robin): a token at global position pos belongs to rank
// (pos / block_tokens) mod P. Ranks therefore fill whole blocks in turn, shard sizes stay within
// one block of each other however long generation runs, and every block is a run of consecutive
// positions, so causal masking inside a shard needs only a start position per run. Tokens a rank
// held after prefill (any layout) are stored as they are with store(); the policy applies to
// tokens appended afterwards with append(), which every rank calls with the same new tokens
// (each keeps the ones it owns).
//
// A rank whose shard is empty, or whose tokens all lie after the queries, contributes
// lse = -inf and o = 0, the identity of the merge: never NaN.

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

struct DecodeConfig {
    int hq = 0;
    int hkv = 0;
    int d = 0;
    float scale = 0.0f;
    int64_t block_tokens = 256;  // append granularity of the round-robin policy
};

// One rank's shard of the KV cache of one sequence. Owned by one thread; not thread-safe.
class DecodeShard {
public:
    static Result<DecodeShard> create(const DecodeConfig& config, int rank, int ranks);

    int rank() const { return rank_; }
    int ranks() const { return ranks_; }
    int64_t tokens() const { return tokens_; }
    const DecodeConfig& config() const { return config_; }

    // The rank that keeps an appended token at global position pos.
    int owner(int64_t pos) const;

    // Stores n consecutive tokens starting at global position pos0 unconditionally (for example
    // the rows this rank held after ring prefill). k, v: [n, hkv, d].
    Status store(int64_t pos0, int64_t n, const float* k, const float* v);
    // Offers n new consecutive tokens starting at pos0; keeps those owner() assigns here.
    Status append(int64_t pos0, int64_t n, const float* k, const float* v);

    // This rank's partial: queries q [n, hq, d] at positions q_pos0 .. q_pos0 + n - 1 (causal)
    // against the shard. o [n, hq, d], lse [hq, n].
    Status attend(const float* q, int64_t n, int64_t q_pos0, float* o, float* lse) const;

private:
    struct Run {
        int64_t pos0;
        int64_t rows;
        int64_t offset;  // first row in k_/v_
    };
    DecodeShard(const DecodeConfig& config, int rank, int ranks)
        : config_(config), rank_(rank), ranks_(ranks) {}

    DecodeConfig config_;
    int rank_ = 0;
    int ranks_ = 1;
    int64_t tokens_ = 0;
    std::vector<Run> runs_;
    std::vector<float> k_, v_;  // [tokens, hkv, d]
};

// The causal attention call of n queries at q_pos0 .. against one stored run of consecutive
// tokens (accumulate mode): DecodeShard::attend and its device twin issue one per run.
AttentionParams decode_run_params(const DecodeConfig& config, int64_t n, int64_t q_pos0,
                                  int64_t run_pos0, int64_t run_rows);

// One decode step on every rank (collective over `transport`): attends locally, all-gathers the
// partials around the ring (P - 1 shifts) and merges them in rank order, so every rank ends with
// bitwise the same o [n, hq, d] and lse [hq, n].
Status sharded_decode_attend(const DecodeShard& shard, RingTransport& transport, const float* q,
                             int64_t n, int64_t q_pos0, float* o, float* lse,
                             std::chrono::milliseconds timeout);

// The collective half of a sharded decode step, for callers that keep their own shards (several
// sequences, shared prefixes): `table` holds one slot of partial_elems(n, hq, d) floats per rank;
// on entry the slot of this rank holds its partial [o [n, hq, d] | lse [hq, n]] (rows may belong
// to different sequences: the merge is row by row). All-gathers the partials around the ring
// (P - 1 shifts on kRingChannelPartial) and merges them in rank order into o and lse, bitwise the
// same on every rank. `table` is overwritten.
int64_t partial_elems(int64_t n, int hq, int d);
Status allgather_merge_partials(RingTransport& transport, std::span<float> table, int64_t n, int hq,
                                int d, float* o, float* lse, std::chrono::milliseconds timeout);

}  // namespace tandem::kernels
