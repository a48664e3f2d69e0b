#include "common/weights/manifest.h"

#include <random>

#include <gtest/gtest.h>

#include "common/weights/memory.h"

namespace tandem::weights {
namespace {

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::byte> v(n);
    for (auto& b : v) b = std::byte(rng());
    return v;
}

TEST(Manifest, ChunksCoverTheBufferWithAShortLastChunk) {
    auto data = random_bytes(10'000, 1);
    Manifest m = Manifest::compute(data, 4096);
    ASSERT_EQ(m.chunk_count(), 3u);
    EXPECT_EQ(m.chunk_range(2).begin, 8192u);
    EXPECT_EQ(m.chunk_range(2).size(), 10'000u - 8192u);
    EXPECT_TRUE(m.verify_all(data).ok());
    EXPECT_EQ(Manifest::compute({}, 4096).chunk_count(), 0u);
}

TEST(Manifest, CopyAndComputeMatchesComputeAndCopies) {
    auto src = random_bytes((3 << 20) + 123, 2);
    std::vector<std::byte> dst(src.size());
    Manifest fused = Manifest::copy_and_compute(dst, src, 1 << 20);
    Manifest plain = Manifest::compute(src, 1 << 20);
    EXPECT_EQ(dst, src);
    EXPECT_EQ(fused.checksums(), plain.checksums());
    EXPECT_EQ(fused.digest(), plain.digest());
}

TEST(Manifest, CorruptChunkIsNamedWithItsOffset) {
    auto data = random_bytes(10'000, 3);
    Manifest m = Manifest::compute(data, 4096);
    data[5000] ^= std::byte{1};
    Status s = m.verify_all(data, /*base_offset=*/1'000'000);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);
    EXPECT_NE(s.message().find("chunk 1 at offset 1004096"), std::string::npos) << s.message();
    EXPECT_TRUE(m.verify_chunk(0, std::span(data).first(4096)).ok());
    EXPECT_EQ(m.verify_chunk(0, std::span(data).first(100)).code(), StatusCode::kDataLoss);
}

TEST(Manifest, DigestChangesWithAnyChecksumOrGeometry) {
    auto data = random_bytes(10'000, 4);
    Manifest a = Manifest::compute(data, 4096);
    Manifest b = Manifest::compute(data, 2048);
    data[0] ^= std::byte{1};
    Manifest c = Manifest::compute(data, 4096);
    EXPECT_NE(a.digest(), b.digest());
    EXPECT_NE(a.digest(), c.digest());
    EXPECT_EQ(a.digest(), Manifest(a.chunk_bytes(), a.total_bytes(), a.checksums()).digest());
}

}  // namespace
}  // namespace tandem::weights
