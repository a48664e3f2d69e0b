#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "common/weights/layout.h"

namespace tandem::weights {

inline constexpr uint64_t kSlotMagic = 0x314c53574d444e54;  // "TNDMWSL1", little-endian
inline constexpr size_t kSlotHeaderBytes = 64;

// The seqlock header at offset 0 of every slot region (publisher slots and relay buffers). It lives
// in shared, registered memory: the owner writes it, same-host readers map it, remote readers copy
// it with a get or an active message. `check` lets a reader detect a torn copy.
struct alignas(64) SlotHeader {
    std::atomic<uint64_t> magic;
    std::atomic<uint64_t> seq;  // odd while the slot is being written; even and > 0 once closed
    std::atomic<uint64_t> version;
    std::atomic<uint64_t> bytes;            // data bytes in the slot
    std::atomic<uint64_t> manifest_digest;  // Manifest::digest() of the slot's chunks
    std::atomic<uint64_t> layout_fingerprint;
    std::atomic<uint64_t> chunk_bytes;
    std::atomic<uint64_t> check;  // header_check() of the seven words above
};
static_assert(sizeof(SlotHeader) == kSlotHeaderBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// The fields a writer closes the seqlock with.
struct HeaderFields {
    uint64_t version = 0;
    uint64_t bytes = 0;
    uint64_t manifest_digest = 0;
    uint64_t layout_fingerprint = 0;
    uint64_t chunk_bytes = 0;
};

// A copy of a header, taken locally or over the network.
struct HeaderSnapshot {
    uint64_t magic = 0;
    uint64_t seq = 0;
    HeaderFields fields;
    uint64_t check = 0;

    // The copy is whole (magic and check agree) and the slot was closed when it was taken.
    bool closed() const;
    // Same closed write: a read that began with `before` and ended with this one saw no writer.
    bool same_write_as(const HeaderSnapshot& before) const {
        return closed() && before.closed() && seq == before.seq &&
               fields.version == before.fields.version;
    }
};

uint64_t header_check(uint64_t magic, uint64_t seq, const HeaderFields& fields);

// Writer side, called by the slot's single owner thread.
// Initialises a fresh header (seq 0, nothing published).
void init_header(SlotHeader& header);
// Opens the seqlock (seq becomes odd): readers that copied the slot before now see a change.
void begin_write(SlotHeader& header);
// Closes the seqlock with `fields` (seq becomes even), publishing everything written since
// begin_write to readers that see the new seq.
void end_write(SlotHeader& header, const HeaderFields& fields);

// Reader side, for a header mapped in this process: a consistent snapshot, retried while a writer
// is in the middle of closing it (at most `attempts` times; the result may then be !closed()).
HeaderSnapshot read_header(const SlotHeader& header, int attempts = 64);
// Decodes a 64-byte copy taken with a get or received in a message.
HeaderSnapshot decode_header(std::span<const std::byte> bytes);
// Encodes a snapshot as the 64 bytes a remote reader would copy.
void encode_header(const HeaderSnapshot& snapshot, std::span<std::byte> out);

// Where things sit in a slot region: the header, then one manifest (array of uint64 checksums) per
// shard the slot holds, then, page-aligned, the data. Publisher slots hold one shard; relay buffers
// hold every shard of a version at its offset in the full layout.
struct SlotFormat {
    uint64_t chunk_bytes = 0;
    std::vector<ByteRange> shards;           // in data coordinates (offsets from data_offset)
    std::vector<uint64_t> manifest_offsets;  // per shard, from the start of the region
    std::vector<uint64_t> chunk_counts;      // per shard
    uint64_t data_offset = 0;
    uint64_t data_bytes = 0;
    uint64_t region_bytes = 0;

    static SlotFormat create(std::vector<ByteRange> shards, uint64_t chunk_bytes);
};

}  // namespace tandem::weights
