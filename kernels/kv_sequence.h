#pragma once

// One layer's KV cache of one sequence (or of one rank's shard of it) in quantized pages with a
// full-precision residual window, and the sharded (context-parallel) decode step over such shards.
//
// Residual-window policy (KIVI): new tokens go to f32 pages of `page_tokens` rows. A closed f32
// page (full, or cut short by a gap in positions) is sealed (quantized to the sealed format, its f32 copy dropped) once at least
// `residual_tokens` tokens of this sequence come after it; per-token formats (int8, int4 per
// token) need no window and seal each page as soon as it is full. Seal order is page order, so
// the f32 pages are always the newest: after any append, a KIVI sequence of L >= R tokens holds
// between R and R + page_tokens - 1 tokens in f32 (fewer when its last page is not full yet).
// bf16 and f32 sealed formats follow the per-token rule (no window).

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "kernels/kv_quant.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

struct KvSequenceConfig {
    KvPageFormat sealed;          // format of sealed pages (page_tokens, hkv, d shared by all)
    int64_t residual_tokens = 0;  // R: KIVI formats only
};

// True when a page followed by `tokens_after` newer tokens of the same sequence is sealed under
// `c`. `closed`: the page takes no more rows (it is full, or a later page started after a gap in
// positions, as a zigzag prefill shard leaves).
bool kv_page_sealable(const KvSequenceConfig& c, bool closed, int64_t tokens_after);

// Owned by one thread; not thread-safe.
class KvPagedSequence {
public:
    static Result<KvPagedSequence> create(const KvSequenceConfig& config);

    const KvSequenceConfig& config() const { return config_; }
    int64_t tokens() const { return tokens_; }
    int64_t sealed_pages() const { return sealed_pages_; }
    int64_t f32_tokens() const;
    // Bytes held: every page counted whole (a partial f32 page costs a full page).
    int64_t bytes() const;

    // Appends n consecutive tokens from global position pos0 (k, v [n, hkv, d]); positions must
    // come after every stored one. A run that continues the last page fills it; otherwise a new
    // page starts. Seals what the policy allows afterwards.
    Status append(int64_t pos0, int64_t n, const float* k, const float* v);

    // The pages in position order, as kv_paged_attention_cpu reads them. Valid until the next
    // append.
    std::vector<KvPageRef> pages() const;

    // Attention of q [n, hq, d] at q_pos0.. (causal) over this sequence: o [n, hq, d], lse [hq, n].
    // No token (or all in the future): o = 0, lse = -inf.
    Status attend(int hq, float scale, const float* q, int64_t n, int64_t q_pos0, float* o,
                  float* lse) const;

private:
    struct Page {
        bool sealed = false;
        int64_t pos0 = 0;
        int32_t rows = 0;
        std::vector<uint8_t> bytes;
    };
    explicit KvPagedSequence(const KvSequenceConfig& config);
    Status seal_ready();

    KvSequenceConfig config_;
    KvPageFormat f32_;
    std::vector<Page> pages_;
    int64_t tokens_ = 0;
    int64_t sealed_pages_ = 0;
    size_t first_unsealed_ = 0;
};

// One rank's shard of a sequence for sharded decode: the round-robin policy of
// kernels/ring/sharded_decode.h (a token at position pos belongs to rank (pos / page_tokens) mod
// P), each rank holding its tokens as a KvPagedSequence (its residual window counts its own
// tokens). Owned by one thread; not thread-safe.
class KvDecodeShard {
public:
    static Result<KvDecodeShard> create(const KvSequenceConfig& config, int hq, float scale,
                                        int rank, int ranks);

    int rank() const { return rank_; }
    int ranks() const { return ranks_; }
    int owner(int64_t pos) const;
    const KvPagedSequence& sequence() const { return seq_; }

    // Stores tokens unconditionally (what this rank held after ring prefill).
    Status store(int64_t pos0, int64_t n, const float* k, const float* v);
    // Offers n new consecutive tokens; keeps those owner() assigns here.
    Status append(int64_t pos0, int64_t n, const float* k, const float* v);

    // Collective over `transport`: this rank's partial, all-gathered and merged in rank order,
    // so every rank ends with bitwise the same o [n, hq, d] and lse [hq, n].
    Status decode_attend(RingTransport& transport, const float* q, int64_t n, int64_t q_pos0,
                         float* o, float* lse, std::chrono::milliseconds timeout) const;

private:
    KvDecodeShard(KvPagedSequence seq, int hq, float scale, int rank, int ranks)
        : seq_(std::move(seq)), hq_(hq), scale_(scale), rank_(rank), ranks_(ranks) {}

    KvPagedSequence seq_;
    int hq_ = 0;
    float scale_ = 0.0f;
    int rank_ = 0;
    int ranks_ = 1;
};

}  // namespace tandem::kernels
