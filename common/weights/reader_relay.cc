#include "common/weights/reader_core.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <xxhash.h>

namespace tandem::weights {

// The relay side: this reader's buffers served to other readers, chunk by chunk as verified.

Result<std::optional<LeaseOffer>> Reader::Core::acquire(JobId job, Version version, uint32_t shard,
                                                        const std::string& holder) {
    if (job != options_.job) {
        return not_found(fmt::format("relay {} serves {}, not {}", options_.reader_id,
                                     options_.job.str(), job.str()));
    }
    const auto slot = table_.slot_of(version);
    if (!slot) {
        // Not started yet: wait for it (the coordinator may assign the tree before we fetch).
        if (!newest_started_ || version > *newest_started_) return std::optional<LeaseOffer>();
        return not_found(
            fmt::format("relay {} no longer holds version {}", options_.reader_id, version));
    }
    Buffer& b = buffers_[*slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, version, b.failed.message()));
    }
    if (shard >= b.shards.size()) {
        return not_found(fmt::format("version {} has no shard {}", version, shard));
    }
    const auto& st = b.shards[shard];
    if (!st.manifest_ready) return std::optional<LeaseOffer>();
    TANDEM_ASSIGN_OR_RETURN(LeaseGrant grant, table_.acquire(version, holder));
    relay_lease_shard_[grant.id] = shard;
    LeaseOffer o;
    o.grant = grant;
    o.ttl = options_.relay_lease_ttl_ms;
    o.layout_fingerprint = layout_.fingerprint();
    o.region_address = b.memory->registration().address();
    o.region_bytes = b.memory->size();
    o.manifest_offset = st.manifest_offset;
    o.chunk_count = st.chunk_count;
    o.data_offset = meta_bytes_ + st.range.begin;
    o.data_bytes = st.range.size();
    o.chunk_bytes = st.chunk_bytes;
    o.manifest_digest = st.manifest_digest;
    o.chunks_ready = st.prefix;
    o.packed_rkey = &b.memory->registration().packed_rkey();
    return std::optional<LeaseOffer>(o);
}

Result<LeaseGrant> Reader::Core::renew(LeaseId id) { return table_.renew(id); }

void Reader::Core::release(LeaseId id) {
    table_.release(id);
    relay_lease_shard_.erase(id);
}

Result<const std::byte*> Reader::Core::readable(LeaseId id, uint64_t offset, uint64_t length) {
    auto grant = table_.find(id);
    auto shard = relay_lease_shard_.find(id);
    if (!grant || shard == relay_lease_shard_.end()) {
        return not_found(fmt::format("lease {} expired or was never granted", id));
    }
    Buffer& b = buffers_[grant->slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, grant->version, b.failed.message()));
    }
    if (b.version != grant->version) {
        return unavailable(fmt::format("relay buffer no longer holds version {}", grant->version));
    }
    if (offset > b.memory->size() || length > b.memory->size() - offset) {
        return invalid_argument(
            fmt::format("read of [{}, +{}) leaves the relay buffer", offset, length));
    }
    const auto& st = b.shards[shard->second];
    const std::byte* p = b.memory->data() + offset;
    if (offset + length <= meta_bytes_) return st.manifest_ready ? p : nullptr;
    const uint64_t begin = meta_bytes_ + st.range.begin;
    if (offset < begin || offset + length > begin + st.range.size() || st.chunk_bytes == 0) {
        return invalid_argument(
            fmt::format("read of [{}, +{}) is outside shard {}", offset, length, shard->second));
    }
    if (length == 0) return p;
    const uint64_t first = (offset - begin) / st.chunk_bytes;
    const uint64_t last = (offset - begin + length - 1) / st.chunk_bytes;
    for (uint64_t c = first; c <= last; ++c) {
        if (st.verified[c] == 0) return static_cast<const std::byte*>(nullptr);
    }
    return p;
}

Result<uint64_t> Reader::Core::chunks_ready(LeaseId id) {
    auto grant = table_.find(id);
    auto shard = relay_lease_shard_.find(id);
    if (!grant || shard == relay_lease_shard_.end()) {
        return not_found(fmt::format("lease {} expired", id));
    }
    Buffer& b = buffers_[grant->slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, grant->version, b.failed.message()));
    }
    return b.shards[shard->second].prefix;
}

}  // namespace tandem::weights
