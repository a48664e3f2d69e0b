#include "common/weights/reader_relay.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::weights {

Result<std::optional<LeaseOffer>> RelayServe::acquire(JobId job, Version version, uint32_t shard,
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
    ReaderBuffer& b = buffers_[*slot];
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
    lease_shard_[grant.id] = shard;
    LeaseOffer o;
    o.grant = grant;
    o.ttl = options_.lease_ttl_ms;
    o.layout_fingerprint = options_.layout_fingerprint;
    o.region_address = b.memory->registration().address();
    o.region_bytes = b.memory->size();
    o.manifest_offset = st.manifest_offset;
    o.chunk_count = st.chunk_count;
    o.data_offset = options_.meta_bytes + st.range.begin;
    o.data_bytes = st.range.size();
    o.chunk_bytes = st.chunk_bytes;
    o.manifest_digest = st.manifest_digest;
    o.chunks_ready = st.prefix;
    o.packed_rkey = &b.memory->registration().packed_rkey();
    return std::optional<LeaseOffer>(o);
}

Result<LeaseGrant> RelayServe::renew(LeaseId id) { return table_.renew(id); }

void RelayServe::release(LeaseId id) {
    table_.release(id);
    lease_shard_.erase(id);
}

Result<std::pair<ReaderBuffer*, uint32_t>> RelayServe::leased(LeaseId id) {
    auto grant = table_.find(id);
    auto shard = lease_shard_.find(id);
    if (!grant || shard == lease_shard_.end()) {
        return not_found(fmt::format("lease {} expired or was never granted", id));
    }
    ReaderBuffer& b = buffers_[grant->slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, grant->version, b.failed.message()));
    }
    if (b.version != grant->version) {
        return unavailable(fmt::format("relay {} no longer holds version {} in its buffer",
                                       options_.reader_id, grant->version));
    }
    return std::make_pair(&b, shard->second);
}

Result<const std::byte*> RelayServe::readable(LeaseId id, uint64_t offset, uint64_t length) {
    TANDEM_ASSIGN_OR_RETURN(auto leased_shard, leased(id));
    ReaderBuffer& b = *leased_shard.first;
    const uint32_t shard = leased_shard.second;
    if (offset > b.memory->size() || length > b.memory->size() - offset) {
        return invalid_argument(
            fmt::format("read of [{}, +{}) leaves the buffer of relay {} (version {}, {} bytes)",
                        offset, length, options_.reader_id, b.version, b.memory->size()));
    }
    const auto& st = b.shards[shard];
    const std::byte* p = b.memory->data() + offset;
    if (offset + length <= options_.meta_bytes) return st.manifest_ready ? p : nullptr;
    const uint64_t begin = options_.meta_bytes + st.range.begin;
    if (offset < begin || offset + length > begin + st.range.size() || st.chunk_bytes == 0) {
        return invalid_argument(
            fmt::format("read of [{}, +{}) is outside shard {} of version {} at relay {}", offset,
                        length, shard, b.version, options_.reader_id));
    }
    if (length == 0) return p;
    const uint64_t first = (offset - begin) / st.chunk_bytes;
    const uint64_t last = (offset - begin + length - 1) / st.chunk_bytes;
    for (uint64_t c = first; c <= last; ++c) {
        if (st.verified[c] == 0) return static_cast<const std::byte*>(nullptr);
    }
    return p;
}

Result<uint64_t> RelayServe::chunks_ready(LeaseId id) {
    TANDEM_ASSIGN_OR_RETURN(auto leased_shard, leased(id));
    return leased_shard.first->shards[leased_shard.second].prefix;
}

}  // namespace tandem::weights
