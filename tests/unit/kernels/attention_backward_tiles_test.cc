// The tile bounds of the tiled device attention backward (kernels/cuda/attention_backward_tiles.h)
// against brute force on the host: a key tile's skipped query rows see none of its keys and its
// unmasked rows see all of them; a query tile's skipped keys are seen by none of its rows and its
// unmasked keys by all. Random lengths (not multiples of the tiles), offsets and two-run (zigzag)
// positions. The positions agree with kernels/attention.h's query_position / key_position. Runs
// without a device: the header is plain integer code.
#include "kernels/cuda/attention_backward_tiles.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "kernels/attention.h"

namespace tandem::kernels::cuda::tiles {
namespace {

constexpr int kRows = 64;  // the kernel's tile of keys (dkdv) and queries (dq)

std::string describe(const Positions& a) {
    return "tq " + std::to_string(a.tq) + " tk " + std::to_string(a.tk) + " causal " +
           std::to_string(a.causal) + " q " + std::to_string(a.q_pos0) + "/" +
           std::to_string(a.q_split) + "/" + std::to_string(a.q_pos1) + " k " +
           std::to_string(a.k_pos0) + "/" + std::to_string(a.k_split) + "/" +
           std::to_string(a.k_pos1);
}

// Random valid positions: one run, or two runs whose second starts at or after the first's end.
Positions random_positions(std::mt19937_64& rng) {
    auto uni = [&](int64_t lo, int64_t hi) {
        return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    Positions a;
    a.tq = uni(1, 260);
    a.tk = uni(1, 260);
    a.causal = uni(0, 5) != 0;
    a.q_pos0 = uni(0, 150);
    a.k_pos0 = uni(0, 150);
    a.q_split = a.k_split = kNoSplit;
    if (uni(0, 1)) {
        a.q_split = uni(0, a.tq);
        a.q_pos1 = a.q_pos0 + a.q_split + uni(0, 120);
    }
    if (uni(0, 1)) {
        a.k_split = uni(0, a.tk);
        a.k_pos1 = a.k_pos0 + a.k_split + uni(0, 120);
    }
    return a;
}

AttentionParams params(const Positions& a) {
    AttentionParams p;
    p.tq = a.tq;
    p.tk = a.tk;
    p.hq = p.hkv = 1;
    p.d = 64;
    p.scale = 0.125f;
    p.causal = a.causal;
    p.q_pos0 = a.q_pos0;
    p.k_pos0 = a.k_pos0;
    p.q_split = a.q_split;
    p.q_pos1 = a.q_pos1;
    p.k_split = a.k_split;
    p.k_pos1 = a.k_pos1;
    return p;
}

TEST(AttentionBackwardTiles, TileBoundsMatchBruteForce) {
    std::mt19937_64 rng(20261205);
    for (int round = 0; round < 400; ++round) {
        const Positions a = random_positions(rng);
        SCOPED_TRACE(describe(a));
        const AttentionParams p = params(a);
        ASSERT_TRUE(validate(p).ok()) << validate(p).to_string();
        for (int64_t i = 0; i < a.tq; ++i) ASSERT_EQ(qpos(a, i), query_position(p, i));
        for (int64_t j = 0; j < a.tk; ++j) ASSERT_EQ(kpos(a, j), key_position(p, j));

        for (int bq : {32, 64}) {
            for (int64_t j0 = 0; j0 < a.tk; j0 += kRows) {
                const KeyTileQueries r = key_tile_queries(a, j0, kRows, bq);
                const int64_t j1 = std::min(j0 + kRows, a.tk);
                ASSERT_EQ(r.first_tile % bq, 0);
                ASSERT_GE(r.first_tile, 0);
                for (int64_t i = 0; i < std::min(r.first_tile, a.tq); ++i) {
                    for (int64_t j = j0; j < j1; ++j) {
                        ASSERT_FALSE(visible(a, i, j)) << "key tile " << j0 << " skips row " << i;
                    }
                }
                for (int64_t i = std::max<int64_t>(r.full_from, 0); i < a.tq; ++i) {
                    for (int64_t j = j0; j < j1; ++j) {
                        ASSERT_TRUE(visible(a, i, j)) << "key tile " << j0 << " unmasked row " << i;
                    }
                }
            }
        }
        for (int64_t i0 = 0; i0 < a.tq; i0 += kRows) {
            const QueryTileKeys r = query_tile_keys(a, i0, kRows);
            const int64_t i1 = std::min(i0 + kRows, a.tq);
            ASSERT_LE(r.full, r.end);
            ASSERT_LE(r.end, a.tk);
            for (int64_t i = i0; i < i1; ++i) {
                for (int64_t j = r.end; j < a.tk; ++j) {
                    ASSERT_FALSE(visible(a, i, j)) << "query tile " << i0 << " skips key " << j;
                }
                for (int64_t j = 0; j < r.full; ++j) {
                    ASSERT_TRUE(visible(a, i, j)) << "query tile " << i0 << " unmasked key " << j;
                }
            }
        }
    }
}

TEST(AttentionBackwardTiles, NonCausalTakesEveryTileUnmasked) {
    Positions a;
    a.tq = 100;
    a.tk = 130;
    a.q_split = a.k_split = kNoSplit;
    const KeyTileQueries k = key_tile_queries(a, 64, kRows, 64);
    EXPECT_EQ(k.first_tile, 0);
    EXPECT_EQ(k.full_from, 0);
    const QueryTileKeys q = query_tile_keys(a, 64, kRows);
    EXPECT_EQ(q.end, 130);
    EXPECT_EQ(q.full, 130);
}

TEST(AttentionBackwardTiles, ContinuationBehindAPrefixSkipsNothingItSees) {
    // 21 rows at positions 150.. over 150 prefix keys and their own: every row sees the prefix,
    // so the prefix's key tiles start at query tile 0 unmasked.
    Positions a;
    a.tq = 21;
    a.tk = 171;
    a.causal = true;
    a.q_pos0 = 150;
    a.q_split = a.k_split = kNoSplit;
    const KeyTileQueries first = key_tile_queries(a, 0, kRows, 64);
    EXPECT_EQ(first.first_tile, 0);
    EXPECT_EQ(first.full_from, 0);
    const QueryTileKeys q = query_tile_keys(a, 0, kRows);
    EXPECT_EQ(q.full, 151);  // keys at positions <= 150
    EXPECT_EQ(q.end, 171);
}

}  // namespace
}  // namespace tandem::kernels::cuda::tiles
