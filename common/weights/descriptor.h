#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/weights/layout.h"

namespace tandem::weights {

// Where one shard of a version lives: enough for a reader anywhere to lease and read it, and for a
// same-host reader to map it. Announced by the publisher on commit; recorded by the coordinator's
// version table; valid while the publisher lives and until the slot is reclaimed.
struct ShardDescriptor {
    uint32_t index = 0;
    ByteRange range;                        // the bytes of the full layout this shard holds
    std::string publisher;                  // actor id, e.g. "job-000001/trainer-0"
    std::vector<std::byte> worker_address;  // the publisher's UCX worker
    uint64_t remote_address = 0;            // the slot region's base in the publisher
    std::vector<std::byte> rkey;            // packed remote key of the slot region
    uint64_t bytes = 0;                     // data bytes (range.size())
    uint64_t manifest_digest = 0;           // Manifest::digest() of the shard's chunks
    uint64_t chunk_bytes = 0;
    uint32_t slot = 0;
    // Same-host mapping: the publisher's host identity, pid and the region's path.
    std::string host;
    int64_t pid = 0;
    std::string shm_path;
    // Same-host device path: the CUDA IPC handle (kIpcHandleBytes) of the publisher's device copy
    // of this slot, empty when it has none. A capability like the rkey: it travels only to
    // authenticated actors, HTTP redacts it, and no log line prints it (describe_for_log()).
    std::vector<std::byte> cuda_ipc_handle;
    // Device path across hosts (ucx_device): the publisher's device copy of this slot, registered
    // with a UCX that supports CUDA memory: its address and packed remote key (shard bytes from
    // offset 0, no header or manifest: those stay in the host slot). Empty when the publisher has
    // none. Capabilities like the rkey (redacted, never logged).
    uint64_t device_remote_address = 0;
    std::vector<std::byte> device_rkey;
};

// A version of a job's weights: complete once every one of shard_count shards is committed.
struct VersionDescriptor {
    JobId job;
    Version version = 0;
    uint64_t layout_fingerprint = 0;
    uint32_t shard_count = 1;
    std::vector<ShardDescriptor> shards;  // ordered by index when complete

    bool complete() const;
    const ShardDescriptor* shard(uint32_t index) const;
};

// JSON with binary fields in base64: for persistence and for people (`tandem versions`).
nlohmann::json to_json(const VersionDescriptor& descriptor);
Result<VersionDescriptor> descriptor_from_json(const nlohmann::json& json);

// Control-plane form: a JSON body whose binary fields name frames ("worker_address_frame": 0),
// plus the frames themselves, as the ZeroMQ envelope carries them.
struct WireDescriptor {
    nlohmann::json body;
    std::vector<std::vector<std::byte>> frames;
};
WireDescriptor encode_wire(const VersionDescriptor& descriptor);
Result<VersionDescriptor> decode_wire(const nlohmann::json& body,
                                      const std::vector<std::vector<std::byte>>& frames);

// One line for logs: job, version, fingerprint and per shard its index, range, publisher, host,
// slot and which paths it offers ("ipc" when it has a device slot, "ucx_device" when that slot is
// registered with UCX), never a capability (worker address, rkeys, remote addresses, shared-memory
// path, IPC handle).
std::string describe_for_log(const VersionDescriptor& descriptor);

std::string base64_encode(std::span<const std::byte> bytes);
Result<std::vector<std::byte>> base64_decode(std::string_view text);

// What a publisher tells the control plane. Implementations must be thread-safe: the publisher
// calls them from its trainer thread. The coordinator-backed one arrives with the control plane.
class Announcer {
public:
    virtual ~Announcer() = default;
    // One shard of a version was committed; `shard_version.shards` holds exactly that shard.
    virtual Status announce(const VersionDescriptor& shard_version) = 0;
    // The slot that held this shard was reclaimed: the version can no longer be read from it.
    virtual void retire(JobId job, Version version, uint32_t shard) = 0;
};

// An in-process version table: merges announced shards into versions and hands out complete
// ones. Stands in for the coordinator in tests, benchmarks and single-process setups.
// Thread-safe.
class VersionDirectory final : public Announcer {
public:
    Status announce(const VersionDescriptor& shard_version) override;
    void retire(JobId job, Version version, uint32_t shard) override;

    std::optional<VersionDescriptor> get(JobId job, Version version) const;  // complete only
    std::optional<VersionDescriptor> newest(JobId job) const;                // complete only
    // Blocks until a complete version >= `at_least` exists, or the deadline passes.
    Result<VersionDescriptor> wait_for(JobId job, Version at_least,
                                       std::chrono::steady_clock::time_point deadline) const;
    // Drops every version that has a shard from `publisher` (it died).
    void mark_publisher_gone(const std::string& publisher);

private:
    mutable std::mutex mu_;
    mutable std::condition_variable changed_;
    std::map<std::pair<uint64_t, Version>, VersionDescriptor> versions_;  // guarded by mu_
};

// A reader that serves what it fetched to other readers.
struct RelaySource {
    std::string reader;                     // actor id
    std::vector<std::byte> worker_address;  // its UCX worker
    std::string host;
    int64_t pid = 0;
};

nlohmann::json to_json(const RelaySource& relay);
Result<RelaySource> relay_source_from_json(const nlohmann::json& json);

// Who reads from whom: readers in a tree under the publishers with `fan_out` children per node.
// `source` is the index of the parent reader in `readers`, or nullopt for the publishers.
struct RelayAssignment {
    std::string reader;
    std::optional<size_t> source;
    uint32_t depth = 1;  // 1: reads from the publishers
};
std::vector<RelayAssignment> plan_relay_tree(const std::vector<std::string>& readers,
                                             uint32_t fan_out);

}  // namespace tandem::weights
