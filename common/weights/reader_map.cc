#include "common/weights/reader_core.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <xxhash.h>

namespace tandem::weights {

// Same-host mapped versions: opening the publisher's slots read-only and keeping their leases.

Status Reader::Core::finish_map(Operation& op) {
    const Version v = op.version.version;
    std::vector<MappedWeights::Shard> shards;
    for (const auto& sf : op.shards) {
        if (sf->shard.shm_path.empty() || sf->shard.host != host_identity()) {
            return invalid_argument(
                fmt::format("version {} shard {} lives on host {}; mapping needs this host ({})", v,
                            sf->shard.index, sf->shard.host, host_identity()));
        }
        // The slot's shared-memory path is a capability (docs/security.md): errors, which get
        // logged, name the version, shard and publisher instead.
        const std::string slot_name = fmt::format("the slot of version {} shard {} of {}", v,
                                                  sf->shard.index, sf->source_name);
        auto mapping = ReadOnlyMapping::open(sf->shard.shm_path);
        if (!mapping.ok()) {
            std::string message = mapping.status().message();
            for (size_t at = message.find(sf->shard.shm_path); at != std::string::npos;
                 at = message.find(sf->shard.shm_path, at)) {
                message.replace(at, sf->shard.shm_path.size(), "its segment");
            }
            return Status(mapping.status().code(), message)
                .with_context(fmt::format("mapping {}", slot_name));
        }
        if (mapping->size() < sf->lease.data_offset + sf->lease.data_bytes) {
            return invalid_argument(
                fmt::format("{} is {} bytes, too small for the lease", slot_name, mapping->size()));
        }
        const HeaderSnapshot h = read_header(*reinterpret_cast<const SlotHeader*>(mapping->data()));
        if (!h.closed() || h.fields.version != v ||
            h.fields.layout_fingerprint != layout_.fingerprint() ||
            h.fields.manifest_digest != sf->shard.manifest_digest) {
            return unavailable(fmt::format(
                "the mapped slot {} no longer holds version {} (header: version {}, seq {})",
                sf->lease.slot, v, h.fields.version, h.seq));
        }
        shards.push_back({sf->shard.range, std::move(*mapping), sf->lease.data_offset, h.seq});
    }
    MapEntry entry;
    entry.lease_lost = std::make_shared<std::atomic<bool>>(false);
    for (auto& sf : op.shards) {
        entry.leases.push_back({sf->conn, sf->lease.lease_id, nullptr});
        entry.ttl = std::chrono::milliseconds(sf->lease.ttl_ms);
        sf->lease_held = false;  // the map entry renews and releases it now
    }
    entry.next_renew = clock_.now() + entry.ttl / 3;
    const uint64_t id = next_map_++;
    auto mapped = std::make_shared<MappedWeights>(v, layout_, std::move(shards), entry.lease_lost);
    mapped->set_on_destroy([weak = weak_from_this(), id] {
        if (auto core = weak.lock()) {
            core->post_if_open([raw = core.get(), id] { raw->drop_map(id); });
        }
    });
    maps_.emplace(id, std::move(entry));
    op.mapped = std::move(mapped);
    return Status();
}

void Reader::Core::drop_map(uint64_t id) {
    auto it = maps_.find(id);
    if (it == maps_.end()) return;
    for (auto& l : it->second.leases) {
        client_->cancel(l.renew_call);
        if (l.conn->endpoint->failed()) continue;
        wire::Request rq;
        rq.type = wire::RequestType::kRelease;
        rq.lease_id = l.lease;
        client_->send_only(*l.conn, rq);
    }
    maps_.erase(it);
}

void Reader::Core::renew_maps() {
    const auto now = clock_.now();
    for (auto& [id, entry] : maps_) {
        bool renew_now = now >= entry.next_renew;
        for (auto& l : entry.leases) {
            if (l.renew_call) {
                if (l.renew_call->done()) {
                    if (!l.renew_call->status.ok()) {
                        // Relaxed: see MappedWeights::still_valid.
                        entry.lease_lost->store(true, std::memory_order_relaxed);
                        log_.warn("lost the lease on a mapped version: {}",
                                  l.renew_call->status.message());
                    }
                    l.renew_call.reset();
                } else if (now - l.renew_call->sent_at >= options_.request_timeout_ms) {
                    client_->cancel(l.renew_call);
                    l.renew_call.reset();
                    entry.lease_lost->store(true, std::memory_order_relaxed);  // as above
                }
            }
            if (renew_now && !l.renew_call) {
                if (!client_->check_alive(*l.conn).ok()) {
                    entry.lease_lost->store(true, std::memory_order_relaxed);  // as above
                    continue;
                }
                wire::Request rq;
                rq.type = wire::RequestType::kRenew;
                rq.lease_id = l.lease;
                l.renew_call = client_->call(*l.conn, rq);
            }
        }
        if (renew_now)
            entry.next_renew = now + std::max(entry.ttl / 3, std::chrono::milliseconds(1));
    }
}

}  // namespace tandem::weights
