#include "kernels/ring/ring_layout.h"

#include <gtest/gtest.h>

#include <vector>

namespace tandem::kernels {
namespace {

TEST(RingLayout, ShardsCoverTheSequenceExactlyOnce) {
    for (RingLayout layout : {RingLayout::kContiguous, RingLayout::kZigzag}) {
        for (int p : {1, 2, 3, 4, 8}) {
            for (int64_t t : {0, 1, 5, 16, 37, 100}) {
                std::vector<int> seen(static_cast<size_t>(t), 0);
                int64_t max_rows = 0, min_rows = t;
                for (int r = 0; r < p; ++r) {
                    const RingShard s = ring_shard(layout, t, p, r);
                    int64_t local = 0;
                    for (const auto& seg : s.segments) {
                        EXPECT_GT(seg.rows, 0);
                        EXPECT_EQ(seg.local0, local);
                        local += seg.rows;
                        for (int64_t i = 0; i < seg.rows; ++i) ++seen[seg.pos0 + i];
                    }
                    EXPECT_EQ(local, s.rows);
                    max_rows = std::max(max_rows, s.rows);
                    min_rows = std::min(min_rows, s.rows);
                }
                for (int c : seen) EXPECT_EQ(c, 1);
                EXPECT_LE(max_rows - min_rows, layout == RingLayout::kZigzag ? 2 : 1);
                EXPECT_EQ(ring_max_shard_rows(layout, t, p), max_rows);
            }
        }
    }
}

TEST(RingLayout, ZigzagHoldsChunkRAndItsMirror) {
    const RingShard s = ring_shard(RingLayout::kZigzag, 80, 4, 1);  // chunks of 10
    ASSERT_EQ(s.segments.size(), 2u);
    EXPECT_EQ(s.segments[0].pos0, 10);
    EXPECT_EQ(s.segments[1].pos0, 60);
    EXPECT_EQ(s.rows, 20);
}

TEST(RingLayout, ZigzagBalancesCausalWork) {
    for (int p : {2, 4, 8}) {
        const int64_t t = 4096;
        int64_t zig_max = 0, zig_min = INT64_MAX, con_max = 0, con_min = INT64_MAX;
        for (int r = 0; r < p; ++r) {
            const int64_t z = ring_attended_entries(RingLayout::kZigzag, t, p, r, true);
            const int64_t c = ring_attended_entries(RingLayout::kContiguous, t, p, r, true);
            zig_max = std::max(zig_max, z);
            zig_min = std::min(zig_min, z);
            con_max = std::max(con_max, c);
            con_min = std::min(con_min, c);
        }
        EXPECT_EQ(zig_max, zig_min) << "P=" << p;  // exact when 2P divides T
        EXPECT_GT(con_max, 2 * con_min) << "P=" << p;
    }
}

TEST(RingLayout, GatherAndScatterRoundTrip) {
    std::vector<float> full(37 * 3);
    for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(i);
    std::vector<float> back(full.size(), -1.0f);
    for (int r = 0; r < 4; ++r) {
        const RingShard s = ring_shard(RingLayout::kZigzag, 37, 4, r);
        std::vector<float> local(static_cast<size_t>(s.rows * 3));
        gather_rows(s, full.data(), 3, local.data());
        scatter_rows(s, local.data(), 3, back.data());
    }
    EXPECT_EQ(back, full);
}

TEST(RingLayout, ParsesNames) {
    EXPECT_EQ(*parse_ring_layout("zigzag"), RingLayout::kZigzag);
    EXPECT_EQ(*parse_ring_layout("contiguous"), RingLayout::kContiguous);
    EXPECT_FALSE(parse_ring_layout("striped").ok());
}

}  // namespace
}  // namespace tandem::kernels
