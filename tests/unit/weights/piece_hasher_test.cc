#include "common/weights/piece_hasher.h"

#include <random>

#include <gtest/gtest.h>

#include "common/weights/manifest.h"

namespace tandem::weights {
namespace {

// Hashing a chunk in pieces, in order, gives the chunk's checksum, inline or on the helper thread.
TEST(PieceHasher, PiecewiseDigestEqualsTheChunkChecksum) {
    std::mt19937 rng(5);
    std::vector<std::byte> chunk(1'000'003);
    for (auto& b : chunk) b = std::byte(rng());
    const uint64_t expected = chunk_checksum(chunk);
    for (bool threaded : {false, true}) {
        PieceHasher hasher(threaded);
        std::vector<PieceHasher::Digest> digests;
        for (uint64_t tag = 1; tag <= 3; ++tag) {
            auto state = PieceHasher::new_state();
            const size_t piece = 65536 * tag;
            for (size_t off = 0; off < chunk.size(); off += piece) {
                const size_t n = std::min(piece, chunk.size() - off);
                hasher.submit(state, tag, chunk.data() + off, n, off + n == chunk.size());
            }
        }
        // Wait for the helper by draining until every digest is in (bounded by the work given).
        while (digests.size() < 3) {
            for (const auto& d : hasher.drain()) digests.push_back(d);
        }
        EXPECT_EQ(hasher.pending(), 0u);
        for (const auto& d : digests) EXPECT_EQ(d.value, expected) << "tag " << d.tag;
    }
}

}  // namespace
}  // namespace tandem::weights
