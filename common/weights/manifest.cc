#include "common/weights/manifest.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/weights/xxh3_fast.h"

namespace tandem::weights {

namespace {

// Copy and hash in blocks small enough to stay in L2 between the two passes.
constexpr size_t kCopyBlockBytes = 256 << 10;

}  // namespace

uint64_t chunk_checksum(std::span<const std::byte> chunk) {
    return xxh3_64(chunk.data(), chunk.size());
}

Manifest::Manifest(uint64_t chunk_bytes, uint64_t total_bytes, std::vector<uint64_t> checksums)
    : chunk_bytes_(chunk_bytes), total_bytes_(total_bytes), checksums_(std::move(checksums)) {}

Manifest Manifest::compute(std::span<const std::byte> data, uint64_t chunk_bytes) {
    std::vector<uint64_t> sums(count_chunks(data.size(), chunk_bytes));
    for (size_t i = 0; i < sums.size(); ++i) {
        const uint64_t begin = i * chunk_bytes;
        const uint64_t len = std::min<uint64_t>(chunk_bytes, data.size() - begin);
        sums[i] = chunk_checksum(data.subspan(begin, len));
    }
    return Manifest(chunk_bytes, data.size(), std::move(sums));
}

Manifest Manifest::copy_and_compute(std::span<std::byte> dst, std::span<const std::byte> src,
                                    uint64_t chunk_bytes) {
    std::vector<uint64_t> sums(count_chunks(src.size(), chunk_bytes));
    XXH3_state_t* state = XXH3_createState();
    for (size_t i = 0; i < sums.size(); ++i) {
        const uint64_t begin = i * chunk_bytes;
        const uint64_t len = std::min<uint64_t>(chunk_bytes, src.size() - begin);
        XXH3_64bits_reset(state);
        for (uint64_t done = 0; done < len;) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyBlockBytes, len - done));
            std::memcpy(dst.data() + begin + done, src.data() + begin + done, n);
            xxh3_64_update(state, dst.data() + begin + done, n);
            done += n;
        }
        sums[i] = XXH3_64bits_digest(state);
    }
    XXH3_freeState(state);
    return Manifest(chunk_bytes, src.size(), std::move(sums));
}

ByteRange Manifest::chunk_range(size_t i) const {
    const uint64_t begin = i * chunk_bytes_;
    return {begin, std::min(total_bytes_, begin + chunk_bytes_)};
}

uint64_t Manifest::digest() const {
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    xxh3_64_update(state, &chunk_bytes_, sizeof(chunk_bytes_));
    xxh3_64_update(state, &total_bytes_, sizeof(total_bytes_));
    xxh3_64_update(state, checksums_.data(), checksums_.size() * sizeof(uint64_t));
    const uint64_t d = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    return d;
}

Status Manifest::verify_chunk(size_t i, std::span<const std::byte> chunk,
                              uint64_t base_offset) const {
    if (i >= checksums_.size()) {
        return internal_error(
            fmt::format("chunk {} out of range ({} chunks)", i, checksums_.size()));
    }
    const ByteRange r = chunk_range(i);
    if (chunk.size() != r.size()) {
        return data_loss(fmt::format("chunk {} at offset {}: {} bytes, expected {}", i,
                                     base_offset + r.begin, chunk.size(), r.size()));
    }
    const uint64_t got = chunk_checksum(chunk);
    if (got != checksums_[i]) {
        return data_loss(
            fmt::format("chunk {} at offset {} ({} bytes): checksum {:016x}, "
                        "manifest says {:016x}",
                        i, base_offset + r.begin, r.size(), got, checksums_[i]));
    }
    return Status();
}

Status Manifest::verify_all(std::span<const std::byte> data, uint64_t base_offset) const {
    if (data.size() != total_bytes_) {
        return data_loss(
            fmt::format("buffer of {} bytes, manifest covers {}", data.size(), total_bytes_));
    }
    for (size_t i = 0; i < checksums_.size(); ++i) {
        const ByteRange r = chunk_range(i);
        TANDEM_RETURN_IF_ERROR(verify_chunk(i, data.subspan(r.begin, r.size()), base_offset));
    }
    return Status();
}

}  // namespace tandem::weights
