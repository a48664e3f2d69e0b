#pragma once

// Internal to the reader (reader.cc, reader_fetch.cc, reader_map.cc, reader_drain.cc): the state
// behind Reader, owned by its UCX loop thread. Each shard read's state machine is ShardMachine
// (reader_shard.h), each failed operation's drain OperationDrain (reader_drain.h).

#include <xxhash.h>

#include <array>
#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/weights/piece_hasher.h"
#include "common/weights/reader.h"
#include "common/weights/reader_drain.h"

#include "common/log.h"
#include "common/weights/lease_table.h"
#include "common/weights/manifest.h"
#include "common/weights/reader_relay.h"
#include "common/weights/reader_shard.h"
#include "common/weights/slot_format.h"
#include "common/weights/slot_memory.h"
#include "common/weights/source_client.h"
#include "common/weights/ucx_loop.h"
namespace tandem::weights {

// ---------------------------------------------------------------------------------------------
// The reader's state, owned by its loop thread except where a member says otherwise.

class Reader::Core : public std::enable_shared_from_this<Reader::Core> {
public:
    static constexpr auto kLivenessInterval = std::chrono::milliseconds(100);
    // Longest a shard's chunk loop runs before it lets the loop go round (step_chunks).
    static constexpr auto kStepSlice = std::chrono::milliseconds(10);
    static constexpr uint64_t kPage = 4096;
    static constexpr uint64_t kMaxShards = 256;
    static constexpr auto kHelloValidity = std::chrono::seconds(30);

    Core(ReaderOptions options, Layout layout, const Clock& clock);
    ~Core();

    Status init();
    void shutdown();

    enum class Kind { kPull, kPartial, kMap };
    struct Operation;

    // Caller-thread entry points.
    std::future<Status> start(std::shared_ptr<Operation> op);
    Status validate(const VersionDescriptor& version) const;
    bool swap();
    std::shared_ptr<const WeightsView> current() const {
        std::lock_guard<std::mutex> lock(mu_);
        return current_;
    }
    std::optional<Version> fetched_version() const {
        std::lock_guard<std::mutex> lock(mu_);
        if (!fetched_slot_) return std::nullopt;
        return fetched_version_;
    }
    FetchStats last_fetch() const {
        std::lock_guard<std::mutex> lock(mu_);
        return last_;
    }
    DrainStats drain_stats() const {
        std::lock_guard<std::mutex> lock(mu_);
        return drain_stats_;
    }
    // Bytes this reader's relay server sent to other readers (0 without relay).
    uint64_t relay_bytes_served() const;
    // The host memory of the pull buffers (to pin for device copies); runs on the loop thread.
    std::vector<std::span<std::byte>> buffer_memory();
    const ReaderOptions& options() const { return options_; }
    bool ucx_cuda_memory() const {
        return loop_->shared_worker()->context()->supports_cuda_memory();
    }
    RelaySource relay_source() const {
        return {options_.reader_id, loop_->address(), host_identity(),
                static_cast<int64_t>(getpid())};
    }
    const Layout& layout() const { return layout_; }
    void post_if_open(std::function<void()> task);

    struct ShardFetch;
    struct InFlight {
        size_t chunk = 0;
        size_t piece = 0;
        ucx::Request get;
        std::shared_ptr<PendingCall> call;
    };
    // A chunk read piece by piece; each piece is checksummed (by the PieceHasher) as soon as the
    // pieces before it have landed, while it is still in cache, so verifying costs no second pass
    // over memory.
    struct ChunkWork {
        std::byte* dest = nullptr;
        size_t scratch = SIZE_MAX;  // partial reads: the scratch slot
        size_t pieces = 0;
        size_t issued = 0;
        size_t submitted = 0;  // pieces handed to the hasher, in order
        std::vector<uint8_t> done;
        PieceHasher::State state;
        uint64_t tag = 0;  // names the chunk's digest when it comes back
    };
    // A chunk whose digest the hasher still owes.
    struct DigestWait {
        Operation* op = nullptr;
        ShardFetch* sf = nullptr;
        size_t chunk = 0;
    };
    struct ShardFetch {
        ShardDescriptor shard;
        std::string source_name;
        std::vector<std::byte> source_address;
        std::string source_host;
        int64_t source_pid = 0;
        bool via_relay = false;

        ShardMachine machine{ShardRoute::kPartial};  // set by begin() for the operation's kind
        std::shared_ptr<SourceConnection> conn;
        std::shared_ptr<PendingCall> call;  // control call in flight
        wire::Reply lease;
        bool lease_held = false;
        std::vector<std::byte> rkey_bytes;
        ucx::RemoteKey* rkey = nullptr;
        ucx::RemoteKey* device_rkey = nullptr;  // ucx_device: the shard's device slot
        bool use_get = false;

        std::array<std::byte, kSlotHeaderBytes> header_before{};
        std::array<std::byte, kSlotHeaderBytes> header_after{};
        ucx::Request meta_get[2];
        std::shared_ptr<PendingCall> meta_call[2];
        uint64_t* manifest_dest = nullptr;
        std::vector<uint64_t> manifest_storage;
        Manifest manifest;
        std::byte* data_dest = nullptr;  // pull: chunk i lands at data_dest + i * chunk_bytes

        std::deque<size_t> todo;  // chunks to read, in order (re-reads go first)
        std::vector<uint8_t> rereads;
        size_t needed = 0;
        size_t verified = 0;
        std::deque<InFlight> inflight;
        // ucx_device: pieces got into device memory whose copy to the host buffer (to be
        // verified) is in flight, oldest first (the staging completes copies in order).
        struct HostCopy {
            size_t chunk = 0;
            size_t piece = 0;
            CopyTicket ticket = 0;
        };
        std::deque<HostCopy> host_copies;
        std::map<size_t, ChunkWork> active;  // chunks being read, by index
        size_t awaiting_digests = 0;         // chunks whose digest the hasher owes
        uint64_t ready = 0;                  // chunks the source says are readable (relays)
        std::shared_ptr<PendingCall> await_call;

        // Partial reads.
        HostBuffer scratch;
        std::vector<size_t> free_scratch;
        std::vector<CopyRange> copies;  // in shard-local source offsets

        Clock::TimePoint next_renew{};
        Clock::TimePoint next_liveness{};
        std::shared_ptr<PendingCall> renew_call;
        uint64_t rereads_done = 0;
        uint64_t piece_bytes = 0;  // one get or one read request
    };

    struct Operation {
        Kind kind = Kind::kPull;
        VersionDescriptor version;
        std::optional<RelaySource> relay;
        std::vector<TensorSelection> selection;
        std::promise<Status> promise;
        Clock::TimePoint started{};
        std::vector<std::unique_ptr<ShardFetch>> shards;
        bool finished = false;
        // kPull: the buffer being filled.
        uint32_t slot = 0;
        // kPull: told of every chunk once it is verified (its bytes in the buffer, their offset
        // in the layout, their length), on the loop thread; must not block.
        std::function<void(const std::byte* host, uint64_t offset, uint64_t bytes)> on_verified;
        // kPull on the ucx_device path: chunks are got from each shard's device slot straight
        // into `device` (the layout's bytes, `device_memory` telling UCX what memory it is), then
        // each piece is copied by `staging` into the host buffer, where it is verified (and
        // relayed). The staging is used on the loop thread only while the operation runs.
        std::byte* device = nullptr;
        ucs_memory_type_t device_memory = UCS_MEMORY_TYPE_CUDA;
        DeviceStaging* staging = nullptr;
        uint64_t device_to_host_copies = 0;
        Clock::TimePoint claim_retry{};
        // kPartial: the result.
        PartialPlan plan;
        HostBuffer partial;
        // kMap: the result.
        std::shared_ptr<const MappedWeights> mapped;
        // A failed operation whose requests UCX may still complete: it (and the memory those
        // requests target) stays alive, and kPull's buffer stays out of use, until they are done.
        OperationDrain drain;
        bool holds_slot = false;  // kPull: op.slot must not be claimed until the drain ends
        bool draining() const { return drain.active(); }
    };

private:
    using Buffer = ReaderBuffer;
    struct MapLease {
        std::shared_ptr<SourceConnection> conn;
        LeaseId lease = 0;
        std::shared_ptr<PendingCall> renew_call;
    };
    struct MapEntry {
        std::vector<MapLease> leases;
        std::chrono::milliseconds ttl{0};
        Clock::TimePoint next_renew{};
        std::shared_ptr<std::atomic<bool>> lease_lost;
    };

    SlotHeader& header(uint32_t slot) {
        return *reinterpret_cast<SlotHeader*>(buffers_[slot].memory->data());
    }
    bool poll();
    void begin(Operation& op);
    void step(Operation& op, ShardFetch& sf);
    void step_chunks(Operation& op, ShardFetch& sf);
    void issue_read(Operation& op, ShardFetch& sf, size_t chunk, ChunkWork& work);
    bool start_chunk(Operation& op, ShardFetch& sf);
    // A piece arrived: its bytes are in the host buffer (hashed from here), or for ucx_device in
    // device memory (copied to the host buffer first, see host_copies).
    void piece_done(Operation& op, ShardFetch& sf, size_t chunk, size_t piece);
    // The piece's bytes are in the host buffer: hand them to the hasher in order.
    void piece_landed(Operation& op, ShardFetch& sf, size_t chunk, size_t piece);
    // ucx_device: waits for the oldest copies to the host until at most `keep` are in flight.
    void finish_host_copies(Operation& op, ShardFetch& sf, size_t keep);
    // Copies to the host a ucx_device shard keeps in flight while its gets go on.
    static constexpr size_t kHostCopyDepth = 4;
    void chunk_hashed(Operation& op, ShardFetch& sf, size_t chunk, uint64_t actual);
    void chunk_verified(Operation& op, ShardFetch& sf, size_t chunk, size_t scratch);
    Status accept_lease(Operation& op, ShardFetch& sf);
    Status check_meta(Operation& op, ShardFetch& sf);
    Status finish_map(Operation& op);
    void complete(Operation& op);
    void fail(Operation& op, const Status& status);
    // Requests of `op` UCX has not completed yet that write into memory (gets, rendezvous
    // receives, for data, headers and manifests).
    static size_t outstanding(Operation& op);
    class DrainHandle;  // an operation as its drain sees it (reader_drain.cc)
    // Starts the drain of failed `op` if it has requests in flight (`holds_slot`: a pull's
    // buffer stays out of use meanwhile).
    void start_drain(Operation& op, bool holds_slot);
    // Advances a failed operation's drain; true once it holds nothing in flight.
    bool drain(Operation& op);
    // Gives up the memory `op`'s stale requests target: kept (never reused or freed) for the life
    // of the process; a pull's buffer is replaced by fresh memory.
    void retire(std::shared_ptr<Operation> op, bool replace);
    bool any_slot_draining() const;
    void release_lease(ShardFetch& sf);
    Status control_timeout(ShardFetch& sf, const PendingCall& call);
    void renew_leases(Operation& op, ShardFetch& sf);
    void renew_maps();
    void drop_map(uint64_t id);
    uint32_t shard_index_of(const Operation& op, const ShardFetch& sf) const;

    const ReaderOptions options_;
    const Layout layout_;
    const Clock& clock_;
    const Logger log_;
    uint64_t meta_bytes_ = 0;  // header + manifests; data starts here in each buffer

    std::unique_ptr<UcxLoop> loop_;
    std::unique_ptr<SourceClient> client_;
    ReaderBuffers buffers_;
    LeaseTable table_;
    std::unique_ptr<RelayServe> relay_;     // with options_.relay: serves buffers_ downstream
    std::unique_ptr<SourceServer> server_;  // on relay_
    std::unique_ptr<PieceHasher> hasher_;
    std::unordered_map<uint64_t, DigestWait> digest_waits_;
    uint64_t next_tag_ = 1;
    std::vector<std::shared_ptr<Operation>> ops_;
    std::map<uint64_t, MapEntry> maps_;
    uint64_t next_map_ = 1;
    uint64_t poller_ = 0;
    std::vector<std::shared_ptr<Operation>> retired_;  // ops whose requests never completed
    std::vector<std::shared_ptr<SlotMemory>> retired_memory_;
    std::optional<uint32_t> dead_slot_;  // retired with no replacement

    std::mutex post_mu_;
    bool open_ = true;  // guarded by post_mu_: the loop still accepts tasks

    mutable std::mutex mu_;
    std::shared_ptr<const WeightsView> current_;  // guarded by mu_
    std::optional<uint32_t> fetched_slot_;        // guarded by mu_
    Version fetched_version_ = 0;                 // guarded by mu_
    FetchStats last_;                             // guarded by mu_
    DrainStats drain_stats_;                      // guarded by mu_
};

}  // namespace tandem::weights
