#include "common/weights/slot_format.h"

#include <cstring>

#include <xxhash.h>

#include "common/weights/manifest.h"

namespace tandem::weights {

namespace {
constexpr uint64_t kPage = 4096;
}

uint64_t header_check(uint64_t magic, uint64_t seq, const HeaderFields& f) {
    const uint64_t words[7] = {
        magic, seq, f.version, f.bytes, f.manifest_digest, f.layout_fingerprint, f.chunk_bytes};
    return XXH3_64bits(words, sizeof(words));
}

bool HeaderSnapshot::closed() const {
    return magic == kSlotMagic && seq != 0 && seq % 2 == 0 &&
           check == header_check(magic, seq, fields);
}

void init_header(SlotHeader& h) {
    // Relaxed: the header is initialised before the region is registered or shared with anyone.
    h.magic.store(kSlotMagic, std::memory_order_relaxed);
    h.seq.store(0, std::memory_order_relaxed);
    h.version.store(0, std::memory_order_relaxed);
    h.bytes.store(0, std::memory_order_relaxed);
    h.manifest_digest.store(0, std::memory_order_relaxed);
    h.layout_fingerprint.store(0, std::memory_order_relaxed);
    h.chunk_bytes.store(0, std::memory_order_relaxed);
    h.check.store(0, std::memory_order_relaxed);
}

void begin_write(SlotHeader& h) {
    // Relaxed load: the owner thread is the only writer of seq.
    const uint64_t seq = h.seq.load(std::memory_order_relaxed);
    const uint64_t odd = seq % 2 == 0 ? seq + 1 : seq;
    // Relaxed store, then a release fence: the fence orders the odd seq before every data and
    // manifest store that follows, so a reader that sees any of them and then re-reads seq (after
    // its acquire fence) sees odd or a later value, never the old even one.
    h.seq.store(odd, std::memory_order_relaxed);
    h.check.store(0, std::memory_order_relaxed);  // relaxed: ordered by the fence below
    std::atomic_thread_fence(std::memory_order_release);
}

void end_write(SlotHeader& h, const HeaderFields& f) {
    // Relaxed load: the owner thread is the only writer of seq.
    const uint64_t seq = h.seq.load(std::memory_order_relaxed);
    const uint64_t even = seq % 2 == 0 ? seq + 2 : seq + 1;
    const uint64_t magic = h.magic.load(std::memory_order_relaxed);  // relaxed: set once at init
    // Relaxed field stores: they are published by the release store of seq below.
    h.version.store(f.version, std::memory_order_relaxed);
    h.bytes.store(f.bytes, std::memory_order_relaxed);
    h.manifest_digest.store(f.manifest_digest, std::memory_order_relaxed);
    h.layout_fingerprint.store(f.layout_fingerprint, std::memory_order_relaxed);
    h.chunk_bytes.store(f.chunk_bytes, std::memory_order_relaxed);
    h.check.store(header_check(magic, even, f), std::memory_order_relaxed);
    // Release: publishes the fields above, the manifest and the data written since begin_write
    // to a reader whose acquire load of seq returns `even`.
    h.seq.store(even, std::memory_order_release);
}

HeaderSnapshot read_header(const SlotHeader& h, int attempts) {
    HeaderSnapshot s;
    for (int i = 0; i < attempts; ++i) {
        // Acquire: pairs with end_write's release store, so the fields read below (and the data
        // the caller reads afterwards) are at least as new as this seq.
        const uint64_t seq1 = h.seq.load(std::memory_order_acquire);
        // Relaxed field loads: validated by the seq re-read after the acquire fence.
        s.magic = h.magic.load(std::memory_order_relaxed);
        s.fields.version = h.version.load(std::memory_order_relaxed);
        s.fields.bytes = h.bytes.load(std::memory_order_relaxed);
        s.fields.manifest_digest = h.manifest_digest.load(std::memory_order_relaxed);
        s.fields.layout_fingerprint = h.layout_fingerprint.load(std::memory_order_relaxed);
        s.fields.chunk_bytes = h.chunk_bytes.load(std::memory_order_relaxed);
        s.check = h.check.load(std::memory_order_relaxed);
        // Acquire fence: keeps the field loads above from moving after the seq re-read.
        std::atomic_thread_fence(std::memory_order_acquire);
        const uint64_t seq2 = h.seq.load(std::memory_order_relaxed);  // relaxed: after the fence
        s.seq = seq1;
        if (seq1 == seq2 && seq1 % 2 == 0) return s;
        s.seq = seq2 | 1;  // report "being written" if we give up
    }
    return s;
}

HeaderSnapshot decode_header(std::span<const std::byte> bytes) {
    HeaderSnapshot s;
    if (bytes.size() < kSlotHeaderBytes) return s;
    uint64_t w[8];
    std::memcpy(w, bytes.data(), sizeof(w));
    s.magic = w[0];
    s.seq = w[1];
    s.fields = {w[2], w[3], w[4], w[5], w[6]};
    s.check = w[7];
    return s;
}

void encode_header(const HeaderSnapshot& s, std::span<std::byte> out) {
    const uint64_t w[8] = {s.magic,
                           s.seq,
                           s.fields.version,
                           s.fields.bytes,
                           s.fields.manifest_digest,
                           s.fields.layout_fingerprint,
                           s.fields.chunk_bytes,
                           s.check};
    std::memcpy(out.data(), w, sizeof(w));
}

SlotFormat SlotFormat::create(std::vector<ByteRange> shards, uint64_t chunk_bytes) {
    SlotFormat f;
    f.chunk_bytes = chunk_bytes;
    uint64_t offset = kSlotHeaderBytes;
    for (const auto& s : shards) {
        const uint64_t chunks = Manifest::count_chunks(s.size(), chunk_bytes);
        f.manifest_offsets.push_back(offset);
        f.chunk_counts.push_back(chunks);
        offset += chunks * sizeof(uint64_t);
        f.data_bytes = std::max(f.data_bytes, s.end);
    }
    f.shards = std::move(shards);
    f.data_offset = align_up(offset, kPage);
    f.region_bytes = f.data_offset + align_up(f.data_bytes, kPage);
    return f;
}

}  // namespace tandem::weights
