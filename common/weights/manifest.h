#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "common/weights/layout.h"

namespace tandem::weights {

inline constexpr uint64_t kDefaultChunkBytes = uint64_t{4} << 20;

// xxh3-64 of one chunk.
uint64_t chunk_checksum(std::span<const std::byte> chunk);

// Per-chunk xxh3 checksums of a buffer cut into fixed-size chunks (the last may be short), and a
// digest over them that names the manifest in headers and descriptors. A value type.
class Manifest {
public:
    Manifest() = default;
    Manifest(uint64_t chunk_bytes, uint64_t total_bytes, std::vector<uint64_t> checksums);

    static Manifest compute(std::span<const std::byte> data, uint64_t chunk_bytes);
    // Copies `src` into `dst` (same size) and checksums each chunk while it is still in cache.
    static Manifest copy_and_compute(std::span<std::byte> dst, std::span<const std::byte> src,
                                     uint64_t chunk_bytes);

    static uint64_t count_chunks(uint64_t total_bytes, uint64_t chunk_bytes) {
        return chunk_bytes == 0 ? 0 : (total_bytes + chunk_bytes - 1) / chunk_bytes;
    }

    uint64_t chunk_bytes() const { return chunk_bytes_; }
    uint64_t total_bytes() const { return total_bytes_; }
    size_t chunk_count() const { return checksums_.size(); }
    const std::vector<uint64_t>& checksums() const { return checksums_; }
    // Byte range of chunk i within the buffer.
    ByteRange chunk_range(size_t i) const;
    // xxh3-64 over chunk size, total size and every checksum.
    uint64_t digest() const;

    // ok, or data_loss naming the chunk, its byte offset (plus `base_offset`, for shards) and
    // both checksums.
    Status verify_chunk(size_t i, std::span<const std::byte> chunk, uint64_t base_offset = 0) const;
    // Verifies every chunk of a whole buffer.
    Status verify_all(std::span<const std::byte> data, uint64_t base_offset = 0) const;

private:
    uint64_t chunk_bytes_ = 0;
    uint64_t total_bytes_ = 0;
    std::vector<uint64_t> checksums_;
};

}  // namespace tandem::weights
