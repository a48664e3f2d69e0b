#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/status.h"
#include "common/weights/descriptor.h"
#include "common/weights/device_staging.h"
#include "common/weights/layout.h"
#include "common/weights/lease_table.h"
#include "common/weights/manifest.h"
#include "common/weights/memory.h"
#include "common/weights/piece_hasher.h"
#include "common/weights/slot_format.h"
#include "common/weights/slot_memory.h"
#include "common/weights/source_server.h"
#include "common/weights/ucx.h"
#include "common/weights/ucx_loop.h"

namespace tandem::weights {

struct PublisherOptions {
    JobId job;
    std::string publisher_id = "trainer-0";  // actor id, e.g. "job-000001/trainer-0"
    uint32_t slots = 3;
    uint64_t chunk_bytes = kDefaultChunkBytes;
    std::chrono::milliseconds lease_ttl_ms{5000};
    // This publisher's part of a sharded version: shard_index of shard_count, byte ranges from
    // Layout::shard_ranges(shard_count).
    uint32_t shard_index = 0;
    uint32_t shard_count = 1;
    ucx::UcxOptions ucx;
    SourceServerOptions server;
    // publish() checksums on a helper thread while it copies the next block (false: inline).
    bool checksum_on_helper_thread = true;
    // publish_from_device() also keeps a device copy of each slot and announces its CUDA IPC
    // handle, so rollouts on this node open it instead of fetching (Reader::map_device); where
    // this UCX supports CUDA memory (detected at run time) the copy is also registered with UCX
    // and announced (device_rkey), so readers elsewhere get it straight into their device memory
    // (the ucx_device path). Costs `slots` x the shard's bytes of device memory.
    bool device_slots = false;
};

class Publisher;

// Exclusive write access to one slot for one version. Write the shard's bytes into data(), then
// commit(); destroying it uncommitted abandons the write and frees the slot. Used on the thread
// that called Publisher::begin(); movable.
class SlotWriter {
public:
    SlotWriter(SlotWriter&& other) noexcept;
    SlotWriter& operator=(SlotWriter&&) = delete;
    SlotWriter(const SlotWriter&) = delete;
    ~SlotWriter();

    Version version() const { return version_; }
    uint32_t slot() const { return slot_; }
    // The shard's bytes, laid out as the layout's range shard_range() (offset 0 = range begin).
    std::span<std::byte> data() { return data_; }
    // Checksums every chunk, closes the slot's seqlock header and announces the shard.
    Status commit();

private:
    friend class Publisher;
    SlotWriter(Publisher* publisher, uint32_t slot, Version version, std::span<std::byte> data)
        : publisher_(publisher), slot_(slot), version_(version), data_(data) {}
    Status commit_with(std::optional<Manifest> manifest);

    Publisher* publisher_;
    uint32_t slot_;
    Version version_;
    std::span<std::byte> data_;
};

// The trainer side of the weight plane: K slots of memfd shared memory, registered with UCX once,
// each holding one immutable version (of this publisher's shard) with a seqlock header and a
// per-chunk manifest. Readers lease a version and read it remotely or map it; the publisher
// reclaims the oldest slot without a live lease and waits at most one TTL for dead readers.
// Threading: begin()/publish() from one trainer thread at a time; requests from readers are
// served on the publisher's own UCX loop thread; the other accessors are thread-safe.
class Publisher : private SlotProvider {
public:
    static Result<std::unique_ptr<Publisher>> create(PublisherOptions options, Layout layout,
                                                     Announcer& announcer,
                                                     const Clock& clock = SystemClock::instance());
    Publisher(const Publisher&) = delete;
    Publisher& operator=(const Publisher&) = delete;
    // Stops serving and retires the versions it announced.
    ~Publisher() override;

    // A slot to write `version` into (versions must increase). Waits for a slot at most one
    // lease TTL.
    Result<SlotWriter> begin(Version version);
    // Copies `shard_bytes` (shard_range().size() bytes) into a slot, checksumming on the way,
    // and commits it as `version`.
    Status publish(Version version, std::span<const std::byte> shard_bytes);
    // Reads a safetensors file, checks it against the layout (fingerprints named on mismatch)
    // and publishes this publisher's shard of it. Nothing is published if the file is bad.
    Status publish_safetensors(const std::string& path, Version version = 0);
    // Publishes this shard from device memory: copied into the (pinned) host slot chunk by chunk,
    // each chunk checksummed while the next one is copied (copy_from_device_chunked): the host
    // slot holds the header, the manifest and the bytes every reader can read; with device_slots
    // also copied into the slot's device copy and its CUDA IPC handle (and, where UCX supports
    // the staging's memory, its UCX registration) announced. A copy failing midway abandons the
    // slot: no version is committed or announced. Logged once; counted in stats().device_staged.
    Status publish_from_device(Version version, const void* device_shard, DeviceStaging& staging);

    const Layout& layout() const { return layout_; }
    ByteRange shard_range() const { return range_; }
    const PublisherOptions& options() const { return options_; }
    // The UCX worker address readers connect to.
    const std::vector<std::byte>& worker_address() const { return loop_->address(); }
    // The newest committed version, if any.
    std::optional<Version> newest() const;

    struct Stats {
        uint64_t published = 0;
        uint64_t reclaim_waits = 0;        // begin() had to wait for leases to end
        uint64_t device_staged = 0;        // publishes from device memory staged through host
        uint64_t device_slot_exports = 0;  // of those, announced with a CUDA IPC handle
        uint64_t ucx_device_exports = 0;   // of those, announced registered with UCX too
        double last_copy_seconds = 0;      // copy + checksum of the last publish()
        double last_commit_seconds = 0;    // header + announcement
        size_t live_leases = 0;
        uint64_t requests_served = 0;
        uint64_t requests_refused = 0;  // answered with an error (expired lease, bad range, ...)
        uint64_t bytes_served = 0;
    };
    Stats stats() const;

private:
    friend class SlotWriter;
    struct Slot {
        std::unique_ptr<SlotMemory> memory;
        uint64_t manifest_digest = 0;
        // With device_slots: the slot's device copy and its IPC handle, made on first use;
        // device_current while it holds the version being committed (publishing thread only).
        DeviceBuffer device;
        std::vector<std::byte> ipc_handle;
        // `device` registered with UCX (ucx_device); destroyed before `device` is freed.
        std::unique_ptr<ucx::MemoryRegion> device_region;
        bool device_current = false;
    };

    Publisher(PublisherOptions options, Layout layout, Announcer& announcer, const Clock& clock);
    Status init();
    SlotHeader& header(uint32_t slot) {
        return *reinterpret_cast<SlotHeader*>(slots_[slot].memory->data());
    }
    Status commit(uint32_t slot, Version version, std::optional<Manifest> manifest);
    // Copies src into dst in blocks, checksumming each chunk on the hasher's thread meanwhile.
    Manifest copy_and_checksum(std::span<std::byte> dst, std::span<const std::byte> src);
    // Whether this UCX can register `staging`'s device memory (CUDA support, or a staging whose
    // device memory is host memory).
    bool ucx_can_register(const DeviceStaging& staging) const;
    // Copies the shard into the slot's device copy (allocated, exported and, where UCX can,
    // registered on first use).
    Status fill_device_slot(Slot& slot, const void* device_shard, DeviceStaging& staging);
    void abort(uint32_t slot);

    // SlotProvider, on the loop thread.
    Result<std::optional<LeaseOffer>> acquire(JobId job, Version version, uint32_t shard,
                                              const std::string& holder) override;
    Result<LeaseGrant> renew(LeaseId id) override;
    void release(LeaseId id) override;
    Result<const std::byte*> readable(LeaseId id, uint64_t offset, uint64_t length) override;
    Result<uint64_t> chunks_ready(LeaseId id) override;

    const PublisherOptions options_;
    const Layout layout_;
    const ByteRange range_;
    const SlotFormat format_;
    Announcer& announcer_;
    const Clock& clock_;
    const Logger log_;
    std::vector<Slot> slots_;
    std::unique_ptr<UcxLoop> loop_;
    std::unique_ptr<SourceServer> server_;  // loop thread
    bool ucx_cuda_memory_ = false;          // set in init()
    bool device_region_warned_ = false;     // publishing thread only
    bool device_staging_logged_ = false;    // publishing thread only
    std::unique_ptr<PieceHasher> hasher_;   // publishing thread only

    mutable std::mutex mu_;
    std::condition_variable lease_released_;
    LeaseTable leases_;               // guarded by mu_
    std::optional<Version> newest_;   // guarded by mu_
    std::vector<Version> announced_;  // guarded by mu_
    Stats stats_;                     // guarded by mu_
};

}  // namespace tandem::weights
