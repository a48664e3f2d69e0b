#pragma once

// The reader <-> source protocol over UCX active messages. A source is whatever serves a version's
// bytes: a publisher's slots or a relaying reader's buffers. Requests and replies are fixed-size
// little-endian structs carried as the AM header; variable parts (a worker address, a packed rkey,
// an error message, chunk bytes) travel as the AM payload. Versioned by (major, minor): a source
// refuses another major version.

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "common/status.h"

namespace tandem::weights::wire {

inline constexpr uint32_t kMagic = 0x57444e54;  // "TNDW"
inline constexpr uint8_t kProtocolMajor = 1;
inline constexpr uint8_t kProtocolMinor = 0;

// Active message ids on the workers of sources and readers.
inline constexpr uint16_t kRequestAmId = 0x5751;  // reader -> source
inline constexpr uint16_t kReplyAmId = 0x5752;    // source -> reader

enum class RequestType : uint16_t {
    kHello = 1,    // payload: the reader's worker address; the source connects back
    kAcquire = 2,  // lease (job, version, shard)
    kRenew = 3,    // extend lease_id by one TTL
    kRelease = 4,  // end lease_id; no reply
    kRead = 5,     // bytes [offset, offset + length) of the leased slot region, as an AM reply
    kAwait = 6,    // reply once at least `length` chunks of the leased shard are readable
};

struct Request {
    uint32_t magic = kMagic;
    uint8_t major = kProtocolMajor;
    uint8_t minor = kProtocolMinor;
    RequestType type = RequestType::kHello;
    uint64_t request_id = 0;
    uint64_t reader_id = 0;  // random per reader; keys the source's connection back to it
    uint64_t job = 0;
    uint64_t version = 0;
    uint64_t lease_id = 0;
    uint64_t offset = 0;  // kRead: from the start of the slot region; kHello: the generation of
                          // the reader's connection (a new one replaces the way back to it)
    uint64_t length = 0;  // kRead: bytes; kAwait: chunks
    uint32_t shard = 0;
    uint32_t reserved = 0;
};

// Replies echo the request's type and id. On error `code` is a StatusCode and the payload the
// message. kAcquire fills the lease and slot fields and carries the packed rkey as payload; kRead
// carries the bytes; kRenew fills ttl_ms; kAwait fills chunks_ready.
struct Reply {
    uint32_t magic = kMagic;
    uint8_t major = kProtocolMajor;
    uint8_t minor = kProtocolMinor;
    RequestType type = RequestType::kHello;
    int32_t code = 0;
    uint32_t reserved = 0;
    uint64_t request_id = 0;
    uint64_t lease_id = 0;
    uint64_t ttl_ms = 0;
    uint64_t version = 0;
    uint64_t layout_fingerprint = 0;
    uint64_t region_address = 0;  // remote virtual address of the slot region (for gets)
    uint64_t region_bytes = 0;
    uint64_t manifest_offset = 0;  // the shard's manifest (chunk_count uint64 checksums)
    uint64_t chunk_count = 0;
    uint64_t data_offset = 0;  // the shard's first byte
    uint64_t data_bytes = 0;
    uint64_t chunk_bytes = 0;
    uint64_t manifest_digest = 0;
    uint64_t chunks_ready = 0;  // chunks readable now, counted from the first
    uint32_t slot = 0;
    uint32_t shard = 0;
};

std::string_view request_type_name(RequestType type);

// Decodes an AM header; nullopt if it is the wrong size, magic or major version.
template <typename T>
std::optional<T> decode(std::span<const std::byte> header) {
    if (header.size() != sizeof(T)) return std::nullopt;
    T value;
    std::memcpy(&value, header.data(), sizeof(T));
    if (value.magic != kMagic || value.major != kProtocolMajor) return std::nullopt;
    return value;
}

Status reply_status(const Reply& reply, std::span<const std::byte> payload);

}  // namespace tandem::weights::wire
