#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/weights/descriptor.h"
#include "common/weights/device_pipeline.h"
#include "common/weights/device_staging.h"
#include "common/weights/layout.h"
#include "common/weights/memory.h"
#include "common/weights/source_server.h"
#include "common/weights/ucx.h"

namespace tandem::weights {

// How chunks move from a source into the reader.
enum class ReadPath {
    // One-sided gets where UCX does them natively on the endpoint (shared memory, RDMA), active
    // message request/response where it would emulate them (TCP): decided per connection from
    // the lanes UCX reports.
    kAuto,
    kGet,            // always ucp_get_nbx
    kActiveMessage,  // always request/response active messages
};
std::string_view read_path_name(ReadPath path);

struct ReaderOptions {
    JobId job;
    std::string reader_id = "rollout-0";  // actor id, the lease holder in logs
    ucx::UcxOptions ucx;
    ReadPath read_path = ReadPath::kAuto;
    // Chunks (the manifest's unit) are read in pieces: one get of piece_bytes (small enough to
    // be checksummed while still in cache) or one request of am_piece_bytes (large, since every
    // request costs a round of messages). Capped at the chunk size.
    uint64_t piece_bytes = 256 << 10;
    uint64_t am_piece_bytes = 4 << 20;
    uint32_t window_reads = 16;  // pieces in flight per shard
    // Checksum pieces on a helper thread, overlapping the next copy (set false on one core).
    bool verify_on_helper_thread = true;
    // A control round trip (hello, lease, renew, header) must answer within this.
    std::chrono::milliseconds request_timeout_ms{5000};
    // Reads in flight with no chunk arriving for this long fail the fetch.
    std::chrono::milliseconds stall_timeout_ms{5000};
    // A failed fetch waits this long for the UCX requests it still has in flight (gets, rendezvous
    // receives) before it force-closes their endpoints; see drain.h and docs/weights.md.
    std::chrono::milliseconds drain_timeout_ms{2000};
    // Smallest chunk size a source may use (sizes the reader's manifest space).
    uint64_t min_chunk_bytes = 4096;
    // Where the job's publishers leave their layouts by fingerprint (job_layouts_dir in
    // reader_mismatch.h); when set, a layout mismatch names the first differing tensor.
    std::string layouts_dir;
    // Serve fetched versions to other readers (relay tree); see relay_source().
    bool relay = false;
    std::chrono::milliseconds relay_lease_ttl_ms{5000};
    SourceServerOptions server;
};

// A fetched, verified version in one of the reader's two buffers. Immutable and safe to share
// between threads; the buffer is not reused while any view of it is alive.
class WeightsView {
public:
    Version version() const { return version_; }
    const Layout& layout() const { return layout_; }
    // The whole layout's buffer (tensors at their offsets).
    std::span<const std::byte> bytes() const { return bytes_; }
    // One tensor's bytes; empty if the layout has no such tensor.
    std::span<const std::byte> tensor(std::string_view name) const;

    WeightsView(Version version, Layout layout, std::span<const std::byte> bytes,
                std::shared_ptr<const void> keepalive)
        : version_(version),
          layout_(std::move(layout)),
          bytes_(bytes),
          keepalive_(std::move(keepalive)) {}

private:
    Version version_;
    Layout layout_;
    std::span<const std::byte> bytes_;
    std::shared_ptr<const void> keepalive_;
};

// The result of a partial read: the selected tensors (row ranges cut) in a compact layout.
struct PartialWeights {
    Version version = 0;
    Layout layout;
    HostBuffer data;
    std::span<const std::byte> tensor(std::string_view name) const;
};

// A version used in place from the publisher's shared memory (read-only mapping, zero copies).
// The reader renews its leases while this object lives and releases them when it is destroyed.
// Thread-safe.
class MappedWeights {
public:
    Version version() const { return version_; }
    const Layout& layout() const { return layout_; }
    // One tensor's bytes in the publisher's slot; empty if the layout has no such tensor.
    std::span<const std::byte> tensor(std::string_view name) const;
    // Whole-buffer view when the version has one shard; empty otherwise.
    std::span<const std::byte> bytes() const;
    // True while every lease is held and every slot header still shows this version. Check it at
    // step boundaries: once false, the slot may be rewritten and the weights must be dropped.
    bool still_valid() const;

    struct Shard {
        ByteRange range;
        ReadOnlyMapping mapping;
        uint64_t data_offset = 0;
        uint64_t seq = 0;  // header seq when mapped
    };
    MappedWeights(Version version, Layout layout, std::vector<Shard> shards,
                  std::shared_ptr<std::atomic<bool>> lease_lost)
        : version_(version),
          layout_(std::move(layout)),
          shards_(std::move(shards)),
          lease_lost_(std::move(lease_lost)) {}
    ~MappedWeights();
    void set_on_destroy(std::function<void()> fn) { on_destroy_ = std::move(fn); }

private:
    Version version_;
    Layout layout_;
    std::vector<Shard> shards_;
    std::shared_ptr<std::atomic<bool>> lease_lost_;
    std::function<void()> on_destroy_;
};

// A version in device memory, filled by Reader::fetch_to_device. `version` is set only once every
// byte arrived, was verified and reached the device: a failed fetch leaves it empty, so a
// half-written buffer is never taken for a version. Rollouts keep two and generate on the other
// while one fills. Owned by the caller; one fetch into it at a time.
struct DeviceWeights {
    DeviceBuffer buffer;  // at least layout().total_bytes()
    std::optional<Version> version;
};

// A version used in place from a same-host publisher's device slots, opened through CUDA IPC
// (read-only by contract: the slot belongs to the publisher). The leases (held through the
// version's shared-memory mapping) keep the slots from being reclaimed while this lives; on
// destruction the handles are closed first, then the leases released. Thread-safe.
class DeviceMappedWeights {
public:
    struct Shard {
        ByteRange range;
        DeviceBuffer memory;  // the opened handle: range.size() bytes on this reader's device
    };
    DeviceMappedWeights(std::shared_ptr<const MappedWeights> leases, std::vector<Shard> shards)
        : leases_(std::move(leases)), shards_(std::move(shards)) {}
    DeviceMappedWeights(const DeviceMappedWeights&) = delete;
    DeviceMappedWeights& operator=(const DeviceMappedWeights&) = delete;
    ~DeviceMappedWeights() {
        shards_.clear();  // close the handles before the leases let the slots go
        leases_.reset();
    }

    Version version() const { return leases_->version(); }
    // The whole layout on the device when the version has one shard; nullptr otherwise.
    const void* data() const { return shards_.size() == 1 ? shards_[0].memory.data() : nullptr; }
    const std::vector<Shard>& shards() const { return shards_; }
    // False once a lease was lost: drop the weights at the next step boundary (MappedWeights).
    bool still_valid() const { return leases_->still_valid(); }

private:
    std::shared_ptr<const MappedWeights> leases_;
    std::vector<Shard> shards_;
};

// How the last device fetch or device map went.
struct DeviceFetchStats {
    Version version = 0;
    DeviceWeightPath path = DeviceWeightPath::kPinnedHost;
    double seconds = 0;
    uint64_t bytes = 0;
    // pinned_host: host -> device copies (one per verified chunk); ucx_device: device -> host
    // copies (one per chunk got, to verify it on the host).
    uint64_t copies = 0;
    uint64_t overlapped_bytes = 0;  // of bytes, copied while later chunks were still fetched
    bool via_relay = false;         // read from another reader (relay tree), not the publishers
    bool fell_back = false;         // pinned_host after a failed ucx_device attempt
};

struct FetchStats {
    Version version = 0;
    double seconds = 0;
    uint64_t bytes = 0;
    uint64_t chunks = 0;
    uint64_t rereads = 0;
    ReadPath path = ReadPath::kAuto;  // the path used (kGet or kActiveMessage)
    bool via_relay = false;
};

// What failed operations still had in flight, and how it was drained (drain.h).
struct DrainStats {
    uint64_t operations = 0;     // failed operations that had requests in flight
    uint64_t requests = 0;       // requests in flight when they failed (gets, rendezvous receives)
    uint64_t forced_closes = 0;  // endpoints force-closed because the wait ran out
    uint64_t retired_buffers = 0;  // memory given up because not even that completed them
    uint64_t draining = 0;         // operations draining now
};

// The rollout side of the weight plane. fetch() pulls a version into the spare of two registered
// buffers (pipelined reads, every chunk verified, lease released after a header re-check) while
// generation keeps using current(); swap() at a step boundary makes it current. map() uses a
// same-host publisher's slot in place; fetch_partial() reads a subset of tensors and rows. With
// `relay` on, other readers can read what this one fetched, chunk by chunk as it arrives.
// Threading: one caller thread at a time for fetch/swap/map (a background fetch thread is fine);
// current() and the views are thread-safe; UCX work runs on the reader's own loop thread.
class Reader {
public:
    static Result<std::unique_ptr<Reader>> create(ReaderOptions options, Layout layout,
                                                  const Clock& clock = SystemClock::instance());
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    ~Reader();

    // Fetches every shard of `version` (complete, same layout) from its publishers, or from
    // `relay` when given. Does not change current().
    Status fetch(const VersionDescriptor& version, const RelaySource* relay = nullptr);
    std::future<Status> fetch_async(VersionDescriptor version,
                                    std::optional<RelaySource> relay = std::nullopt);
    // At a step boundary: makes the last fetched version current; false if there is none new.
    bool swap();
    std::shared_ptr<const WeightsView> current() const;
    std::optional<Version> fetched_version() const;

    Result<PartialWeights> fetch_partial(const VersionDescriptor& version,
                                         const std::vector<TensorSelection>& selection);
    // Same host only (the descriptor's host identity must match this host).
    Result<std::shared_ptr<const MappedWeights>> map(const VersionDescriptor& version);

    // What the coordinator hands to readers that should read from this one.
    RelaySource relay_source() const;
    // GPU rollout: copies current() into `device` (layout().total_bytes() bytes) through the
    // reader's pinned host buffer, since this UCX cannot fetch into device memory. Logged once and
    // counted in device_staged(). Call at the step boundary after swap().
    Status copy_current_to_device(DeviceStaging& staging, DeviceBuffer& device);
    uint64_t device_staged() const;

    // Which device path suits `version` from this reader (choose_device_path with this host,
    // process and UCX; `staging` null means no CUDA IPC).
    DevicePathChoice device_path(const VersionDescriptor& version,
                                 const DeviceStaging* staging) const;
    // GPU rollout: fetches `version` like fetch() into the pinned host buffer (from its
    // publishers, or from `relay` when given: every chunk verified against the manifest as
    // there) and copies every chunk to `target` as soon as it is verified, overlapping those
    // copies with the network reads of later chunks (DeviceUploader). When device_path() says
    // kUcxDevice (and no relay is given) the chunks are got from the publishers' device slots
    // straight into `target` instead, each then copied to the host buffer to be verified; if that
    // fails the pinned path reads the host slots (a warning; fell_back in the stats), and a
    // failure other than a refused chunk keeps this reader on the pinned path.
    // target.version is cleared at the start and set when all arrived; on failure it stays empty.
    // Like fetch(), swap() then makes the host copy current, and with `relay` on this reader serves
    // the version downstream from that host copy while it arrives. Logged once per path;
    // last_device_fetch() says how it went. fetch_via_relay_tree() adds the publisher fallback.
    Status fetch_to_device(const VersionDescriptor& version, DeviceStaging& staging,
                           DeviceWeights& target, const RelaySource* relay = nullptr);
    // GPU rollout on the publisher's node: opens every shard's device slot through CUDA IPC
    // (device_path() must say kCudaIpc) and holds the leases; switching versions copies nothing.
    Result<std::shared_ptr<const DeviceMappedWeights>> map_device(const VersionDescriptor& version,
                                                                  DeviceStaging& staging);
    DeviceFetchStats last_device_fetch() const;
    const Layout& layout() const;
    FetchStats last_fetch() const;
    DrainStats drain_stats() const;
    // Bytes other readers read from this one through the relay tree.
    uint64_t relay_bytes_served() const;

    class Core;

private:
    explicit Reader(std::shared_ptr<Core> core) : core_(std::move(core)) {}
    // fetch_to_device on the ucx_device path: gets from the publishers' device slots straight
    // into target, each chunk copied to the pinned host buffer and verified there.
    Status fetch_device_direct(const VersionDescriptor& version, DeviceStaging& staging,
                               DeviceWeights& target, const std::string& why);
    std::shared_ptr<Core> core_;
    std::atomic<uint64_t> device_staged_{0};
    mutable std::mutex device_mu_;
    DeviceFetchStats last_device_;                 // guarded by device_mu_
    std::optional<DeviceWeightPath> logged_path_;  // guarded by device_mu_
    // Why ucx_device failed for reasons other than a refused chunk; then never tried again.
    std::optional<std::string> ucx_device_failed_;  // guarded by device_mu_
};

// Fetches the newest version `newest()` offers (it must be at least `at_least`). When that version
// is reclaimed or overwritten before the read completes (the reader's lease ran out, or the
// publisher moved on), tries again with the then-newest one, up to `attempts` times. Returns the
// version fetched; swap() makes it current.
Result<Version> fetch_newest(Reader& reader,
                             const std::function<std::optional<VersionDescriptor>()>& newest,
                             Version at_least = 0, int attempts = 4);

// The relay tree's source selection, the same for host fetches (Reader::fetch) and device
// fetches (Reader::fetch_to_device): `assigned` is the coordinator's answer to this reader's
// join (an error when none came in time, nullopt when the tree puts this reader under the
// publishers, else the relay to read); `read(relay)` reads the version from `relay`, or from
// the publishers when it is null. A relay read that fails (the relay died or fell behind, a
// chunk failed its checksum twice, a timeout) is followed by one read from the publishers.
struct RelayTreeFetch {
    Status status;                // of the read that decided: the publishers' when it fell back
    std::string source;           // "publisher", or the relay's reader id when it served
    std::optional<Status> relay;  // why the relay was not used (no place in time, its failure)
    bool fell_back = false;       // a relay read failed and the publishers were read instead
};
RelayTreeFetch fetch_via_relay_tree(const Result<std::optional<RelaySource>>& assigned,
                                    const std::function<Status(const RelaySource*)>& read);

}  // namespace tandem::weights
