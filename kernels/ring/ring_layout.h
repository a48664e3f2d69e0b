#pragma once

// How a sequence of T tokens is split over the P ranks of a ring.
//   contiguous: rank r holds one run of about T/P consecutive tokens.
//   zigzag:     the sequence is cut into 2P chunks of about T/(2P) tokens; rank r holds chunks r
//               and 2P-1-r, so under a causal mask every rank attends about the same number of
//               (query, key) pairs.
// Lengths need not divide: the first T mod n pieces get one token more.

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::kernels {

enum class RingLayout { kContiguous, kZigzag };

const char* ring_layout_name(RingLayout layout);
Result<RingLayout> parse_ring_layout(std::string_view text);

// A run of consecutive tokens held by one rank.
struct RingSegment {
    int64_t pos0 = 0;    // global position of its first token
    int64_t rows = 0;    // tokens in the run (never 0)
    int64_t local0 = 0;  // index of its first token in the rank's local arrays
};

// The tokens one rank holds, in local order (segments sorted by pos0).
struct RingShard {
    std::vector<RingSegment> segments;
    int64_t rows = 0;
};

RingShard ring_shard(RingLayout layout, int64_t seq_len, int ranks, int rank);

// Largest shard over all ranks.
int64_t ring_max_shard_rows(RingLayout layout, int64_t seq_len, int ranks);

// Copies the shard's rows of full [seq_len, row_elems] into local [shard.rows, row_elems].
void gather_rows(const RingShard& shard, const float* full, int64_t row_elems, float* local);
// The inverse: writes local rows back into their places in full.
void scatter_rows(const RingShard& shard, const float* local, int64_t row_elems, float* full);
// lse layout [heads, T]: local [heads, shard.rows] into full [heads, seq_len].
void scatter_lse(const RingShard& shard, const float* local, int heads, int64_t seq_len,
                 float* full);

// Number of (query, key) pairs one head of `rank` attends in ring prefill, causal or not.
int64_t ring_attended_entries(RingLayout layout, int64_t seq_len, int ranks, int rank, bool causal);

}  // namespace tandem::kernels
