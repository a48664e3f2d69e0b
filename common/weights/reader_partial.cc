#include "common/weights/reader_partial.h"

#include <algorithm>
#include <cstring>

namespace tandem::weights {

std::vector<CopyRange> partial_copies_in_shard(const PartialPlan& plan, ByteRange shard) {
    std::vector<CopyRange> out;
    for (const CopyRange& c : plan.copies) {
        const uint64_t lo = std::max(c.src_offset, shard.begin);
        const uint64_t hi = std::min(c.src_offset + c.bytes, shard.end);
        if (lo < hi) out.push_back({lo - shard.begin, c.dst_offset + (lo - c.src_offset), hi - lo});
    }
    return out;
}

std::vector<size_t> partial_chunks_needed(const Manifest& manifest,
                                          const std::vector<CopyRange>& copies) {
    std::vector<size_t> out;
    for (size_t c = 0; c < manifest.chunk_count(); ++c) {
        const ByteRange r = manifest.chunk_range(c);
        for (const CopyRange& copy : copies) {
            if (copy.src_offset < r.end && r.begin < copy.src_offset + copy.bytes) {
                out.push_back(c);
                break;
            }
        }
    }
    return out;
}

void partial_copy_chunk(const Manifest& manifest, size_t chunk, const std::byte* chunk_bytes,
                        const std::vector<CopyRange>& copies, std::byte* out) {
    const ByteRange r = manifest.chunk_range(chunk);
    for (const CopyRange& c : copies) {
        const uint64_t lo = std::max(c.src_offset, r.begin);
        const uint64_t hi = std::min(c.src_offset + c.bytes, r.end);
        if (lo >= hi) continue;
        std::memcpy(out + c.dst_offset + (lo - c.src_offset), chunk_bytes + (lo - r.begin),
                    hi - lo);
    }
}

}  // namespace tandem::weights
