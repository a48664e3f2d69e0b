#pragma once

// Internal to the reader: its two buffers (the state pulls fill and the relay side serves), and the
// SlotProvider that serves them to downstream readers chunk by chunk, as the pull verifies them.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "common/weights/layout.h"
#include "common/weights/lease_table.h"
#include "common/weights/slot_memory.h"
#include "common/weights/source_server.h"

namespace tandem::weights {

// One of a reader's two buffers and what is known of its content: the version being (or last)
// pulled into it and, per shard, where its manifest is and which chunks are verified. Written by
// the pull that fills it, read by RelayServe. Owned by the reader's loop thread.
struct ReaderBuffer {
    struct ShardState {
        bool manifest_ready = false;
        uint64_t manifest_offset = 0;
        uint64_t chunk_count = 0;
        uint64_t chunk_bytes = 0;
        uint64_t manifest_digest = 0;
        ByteRange range;
        std::vector<uint8_t> verified;
        uint64_t prefix = 0;  // chunks verified, counted from the first
    };
    std::shared_ptr<SlotMemory> memory;
    Version version = 0;
    bool filling = false;
    bool complete = false;
    Status failed;
    std::vector<ShardState> shards;
};
using ReaderBuffers = std::array<ReaderBuffer, 2>;

// Relay serve: leases a relaying reader's buffers to downstream readers, offering only what the
// pull has verified (a request for chunks not verified yet waits; one for a version the pull has
// not started yet waits too). The buffers and the lease table are shared with the pulls (they
// claim, fill and reset buffers); this class owns only the leases' shard map.
// Owned by the reader's loop thread; not thread-safe.
class RelayServe final : public SlotProvider {
public:
    struct Options {
        JobId job;
        std::string reader_id;  // names this relay in errors
        std::chrono::milliseconds lease_ttl_ms{5000};
        uint64_t layout_fingerprint = 0;
        uint64_t meta_bytes = 0;  // header and manifests; shard data starts here in each buffer
    };
    RelayServe(Options options, ReaderBuffers& buffers, LeaseTable& table)
        : options_(std::move(options)), buffers_(buffers), table_(table) {}

    // A pull of `version` began: requests for it (or older ones no longer held) are answered
    // from now on instead of waiting.
    void pull_started(Version version) {
        newest_started_ = std::max(newest_started_.value_or(0), version);
    }

    Result<std::optional<LeaseOffer>> acquire(JobId job, Version version, uint32_t shard,
                                              const std::string& holder) override;
    Result<LeaseGrant> renew(LeaseId id) override;
    void release(LeaseId id) override;
    Result<const std::byte*> readable(LeaseId id, uint64_t offset, uint64_t length) override;
    Result<uint64_t> chunks_ready(LeaseId id) override;

private:
    // The buffer and shard state a lease reads, or why it cannot.
    Result<std::pair<ReaderBuffer*, uint32_t>> leased(LeaseId id);

    const Options options_;
    ReaderBuffers& buffers_;
    LeaseTable& table_;
    std::optional<Version> newest_started_;
    std::map<LeaseId, uint32_t> lease_shard_;
};

}  // namespace tandem::weights
