#include "kernels/ring/ring_layout.h"

#include <cstring>
#include <string>

namespace tandem::kernels {
namespace {

// Start of piece i when n pieces split len tokens (the first len % n pieces one longer).
int64_t piece_start(int64_t len, int64_t n, int64_t i) {
    const int64_t base = len / n, rem = len % n;
    return i * base + (i < rem ? i : rem);
}

}  // namespace

const char* ring_layout_name(RingLayout layout) {
    return layout == RingLayout::kZigzag ? "zigzag" : "contiguous";
}

Result<RingLayout> parse_ring_layout(std::string_view text) {
    if (text == "contiguous") return RingLayout::kContiguous;
    if (text == "zigzag") return RingLayout::kZigzag;
    return invalid_argument("ring layout: expected contiguous or zigzag, got \"" +
                            std::string(text) + "\"");
}

RingShard ring_shard(RingLayout layout, int64_t seq_len, int ranks, int rank) {
    RingShard shard;
    auto add = [&](int64_t begin, int64_t end) {
        if (end <= begin) return;
        shard.segments.push_back(RingSegment{begin, end - begin, shard.rows});
        shard.rows += end - begin;
    };
    if (layout == RingLayout::kContiguous) {
        add(piece_start(seq_len, ranks, rank), piece_start(seq_len, ranks, rank + 1));
    } else {
        const int64_t n = 2 * static_cast<int64_t>(ranks);
        const int64_t mirror = n - 1 - rank;
        add(piece_start(seq_len, n, rank), piece_start(seq_len, n, rank + 1));
        add(piece_start(seq_len, n, mirror), piece_start(seq_len, n, mirror + 1));
    }
    return shard;
}

int64_t ring_max_shard_rows(RingLayout layout, int64_t seq_len, int ranks) {
    int64_t best = 0;
    for (int r = 0; r < ranks; ++r) {
        const int64_t rows = ring_shard(layout, seq_len, ranks, r).rows;
        best = rows > best ? rows : best;
    }
    return best;
}

void gather_rows(const RingShard& shard, const float* full, int64_t row_elems, float* local) {
    for (const auto& s : shard.segments) {
        std::memcpy(local + s.local0 * row_elems, full + s.pos0 * row_elems,
                    static_cast<size_t>(s.rows * row_elems) * sizeof(float));
    }
}

void scatter_rows(const RingShard& shard, const float* local, int64_t row_elems, float* full) {
    for (const auto& s : shard.segments) {
        std::memcpy(full + s.pos0 * row_elems, local + s.local0 * row_elems,
                    static_cast<size_t>(s.rows * row_elems) * sizeof(float));
    }
}

void scatter_lse(const RingShard& shard, const float* local, int heads, int64_t seq_len,
                 float* full) {
    for (int h = 0; h < heads; ++h) {
        for (const auto& s : shard.segments) {
            std::memcpy(full + h * seq_len + s.pos0, local + h * shard.rows + s.local0,
                        static_cast<size_t>(s.rows) * sizeof(float));
        }
    }
}

int64_t ring_attended_entries(RingLayout layout, int64_t seq_len, int ranks, int rank,
                              bool causal) {
    const RingShard shard = ring_shard(layout, seq_len, ranks, rank);
    if (!causal) return shard.rows * seq_len;
    int64_t total = 0;
    for (const auto& s : shard.segments) {
        // Query at global position p sees keys 0..p: sum over the run of (p + 1).
        total += s.rows * (2 * s.pos0 + s.rows + 1) / 2;
    }
    return total;
}

}  // namespace tandem::kernels
