// The partial read's steps (common/weights/reader_partial.h): cutting a plan per shard, choosing
// the chunks that hold wanted bytes, and copying a verified chunk's wanted bytes into the result.
// Checked against the plan applied to the whole buffer at once, for every shard count and chunk
// size in a small grid.

#include "common/weights/reader_partial.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace tandem::weights {
namespace {

Layout test_layout() {
    return *Layout::create({{"a", DType::kF32, {40, 30}},
                            {"b", DType::kBF16, {100, 80}},
                            {"c", DType::kI8, {5000}},
                            {"d", DType::kF16, {64, 64}}});
}

TEST(ReaderPartial, ShardByShardChunkByChunkEqualsThePlanAppliedAtOnce) {
    const Layout layout = test_layout();
    auto plan =
        layout.plan_partial({{"b", RowRange{10, 73}}, {"a", std::nullopt}, {"d", RowRange{0, 1}}});
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    std::vector<std::byte> full(layout.total_bytes());
    std::mt19937 rng(7);
    for (auto& b : full) b = std::byte(rng());
    std::vector<std::byte> expected(plan->layout.total_bytes(), std::byte{0});
    for (const CopyRange& c : plan->copies) {
        std::memcpy(expected.data() + c.dst_offset, full.data() + c.src_offset, c.bytes);
    }
    for (uint32_t shards : {1u, 2u, 3u}) {
        for (uint64_t chunk_bytes : {uint64_t{4096}, uint64_t{5000}, uint64_t{1} << 20}) {
            std::vector<std::byte> out(plan->layout.total_bytes(), std::byte{0});
            size_t chunks_read = 0;
            size_t chunks_total = 0;
            for (const ByteRange& shard : layout.shard_ranges(shards)) {
                const auto copies = partial_copies_in_shard(*plan, shard);
                for (const CopyRange& c : copies) {
                    EXPECT_LE(c.src_offset + c.bytes, shard.size());  // shard-local
                }
                const std::span<const std::byte> bytes(full.data() + shard.begin, shard.size());
                const Manifest manifest = Manifest::compute(bytes, chunk_bytes);
                chunks_total += manifest.chunk_count();
                const auto needed = partial_chunks_needed(manifest, copies);
                EXPECT_TRUE(std::is_sorted(needed.begin(), needed.end()));
                for (size_t chunk : needed) {
                    partial_copy_chunk(manifest, chunk,
                                       bytes.data() + manifest.chunk_range(chunk).begin, copies,
                                       out.data());
                }
                chunks_read += needed.size();
            }
            EXPECT_EQ(out, expected) << shards << " shard(s), chunks of " << chunk_bytes;
            // Tensor "c" (5000 bytes) is never selected: at 4 KiB chunks some chunk is skipped.
            if (chunk_bytes == 4096) {
                EXPECT_LT(chunks_read, chunks_total);
            }
        }
    }
}

TEST(ReaderPartial, AShardHoldingNoSelectedByteNeedsNothing) {
    const Layout layout = test_layout();
    auto plan = layout.plan_partial({{"a", std::nullopt}});
    ASSERT_TRUE(plan.ok());
    const TensorInfo* c = layout.find("c");
    const ByteRange elsewhere{c->offset, c->offset + c->bytes};
    EXPECT_TRUE(partial_copies_in_shard(*plan, elsewhere).empty());
    const Manifest manifest(4096, elsewhere.size(), std::vector<uint64_t>(2, 0));
    EXPECT_TRUE(partial_chunks_needed(manifest, {}).empty());
}

}  // namespace
}  // namespace tandem::weights
