#pragma once

// The rollout's weights on a CUDA device (rollout.device: cuda). Each version comes the way
// weights::Reader::device_path chooses for it: on the trainer's node, the trainer's device slot
// opened through CUDA IPC (Reader::map_device: no host copy, leases held while it is open);
// otherwise Reader::fetch_to_device into one fp32 device buffer (each verified chunk copied up
// while later chunks are on the network). The published bytes are the trainer's fp32 masters; at
// the step boundary (swap) the generator converts them into its bf16 weights with a device
// kernel (DeviceWeightSink), then the mapped slot is closed (handles first, then the leases) or
// the fp32 buffer is free for the next fetch. Until then the generator keeps the previous version:
// fetching and mapping run in the background, as on the CPU. A failed map falls back to a fetch.
// Each version's path and why is logged once and counted in stats() and the weights telemetry.
// Owned by the rollout's loop thread (RolloutLoop); the fetch runs on a thread of its own.

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "common/rl/weight_telemetry.h"
#include "common/runtime/job_runtime.h"
#include "common/weights/reader.h"
#include "rollout_node/rollout_loop.h"

namespace tandem::rollout {

// fp32 bytes [offset, offset + bytes) of the layout's flat buffer, at `data` in device memory.
struct DevicePiece {
    const void* data = nullptr;
    uint64_t offset = 0;
    uint64_t bytes = 0;
};

// Checks that `pieces` cover [0, total_bytes) exactly once in order, each a whole number of fp32
// values; invalid_argument naming the version and the piece otherwise.
Status check_device_pieces(Version version, std::span<const DevicePiece> pieces,
                           uint64_t total_bytes);

// What the generator computes with (gpu::DeviceGenerator's bf16 weights in production).
class DeviceWeightSink {
public:
    virtual ~DeviceWeightSink() = default;
    // Converts `pieces` (checked by check_device_pieces) into the generator's weights and returns
    // once the conversion completed, so their memory may be closed or rewritten afterwards. On
    // error the generator holds no usable version.
    virtual Status load_device(Version version, std::span<const DevicePiece> pieces) = 0;
};

// The weight plane as a device rollout uses it: weights::Reader with a DeviceStaging in
// production (make_reader_device_source), a fake in tests. map/fetch/allocate run on the fetch
// thread, one at a time; swap_host on the loop thread.
class DeviceWeightSource {
public:
    virtual ~DeviceWeightSource() = default;
    virtual uint64_t total_bytes() const = 0;
    virtual int device() const = 0;
    virtual weights::DevicePathChoice path(const weights::VersionDescriptor& v) const = 0;
    virtual Result<std::shared_ptr<const weights::DeviceMappedWeights>> map(
        const weights::VersionDescriptor& v) = 0;
    // Into target.buffer (total_bytes()), from the publishers or from `relay` when given; also
    // leaves the host copy as the reader's fetched one.
    virtual Status fetch(const weights::VersionDescriptor& v, weights::DeviceWeights& target,
                         const weights::RelaySource* relay) = 0;
    // What this reader joins a version's relay tree with when it serves what it fetches
    // (ReaderOptions::relay); nullopt when it reads the publishers only.
    virtual std::optional<weights::RelaySource> relay_source() const = 0;
    virtual Result<weights::DeviceBuffer> allocate(uint64_t bytes) = 0;
    virtual weights::DeviceFetchStats last() const = 0;
    // Makes the host copy of the last fetch the reader's current one (Reader::swap).
    virtual void swap_host() = 0;
};

// How long a relaying reader waits for its place in a version's relay tree before it reads the
// publishers.
inline constexpr auto kRelaySourceWait = std::chrono::seconds(2);

// Both references must outlive the returned object. `relay`: the reader was created with
// ReaderOptions::relay, so its fetches join the relay tree (fetch_via_relay_tree).
std::unique_ptr<DeviceWeightSource> make_reader_device_source(weights::Reader& reader,
                                                              weights::DeviceStaging& staging,
                                                              bool relay = false);

class DeviceRolloutWeights final : public Weights {
public:
    DeviceRolloutWeights(runtime::JobRuntime& rt, DeviceWeightSource& source,
                         DeviceWeightSink& sink);
    ~DeviceRolloutWeights() override;  // waits for a fetch in flight

    void start_fetch(const runtime::PublishedVersion& v) override;
    bool fetching() const override { return fetching_.valid(); }
    std::optional<Status> wait_fetch(Clock::TimePoint deadline) override;
    // Converts the fetched or mapped version into the generator's weights, then closes the
    // mapping. An error leaves no current version (the generator's weights may be half written).
    Status swap() override;
    std::optional<Version> current() const override { return current_; }
    double last_fetch_s() const override { return last_fetch_s_; }

    struct Stats {
        uint64_t cuda_ipc = 0;         // versions opened through CUDA IPC
        uint64_t pinned_host = 0;      // versions fetched through the pinned host buffer
        uint64_t ucx_device = 0;       // versions got from device slots into device memory
        uint64_t ipc_fallbacks = 0;    // of pinned_host: CUDA IPC was chosen but could not open
        uint64_t via_relay = 0;        // of pinned_host: read from another rollout (relay tree)
        uint64_t relay_fallbacks = 0;  // of pinned_host: a relay failed, the publishers served
        uint64_t switches = 0;         // versions converted into the generator's weights
        std::string last_path;         // of the last version fetched or mapped
        std::string last_reason;       // why
    };
    const Stats& stats() const { return stats_; }

private:
    // A version fetched or mapped, not yet switched in. Written by the fetch thread before its
    // future is ready; read by the loop thread after get().
    struct Pending {
        Version version = 0;
        weights::DeviceWeightPath path = weights::DeviceWeightPath::kPinnedHost;
        std::string reason;
        bool fallback = false;
        std::string source = "publisher";  // or the relay's reader id
        bool relay_fallback = false;
        std::shared_ptr<const weights::DeviceMappedWeights> mapped;  // kCudaIpc
        double seconds = 0;
        uint64_t bytes = 0;
    };
    Status fetch(const weights::VersionDescriptor& v);  // on the fetch thread

    runtime::JobRuntime& rt_;
    DeviceWeightSource& source_;
    DeviceWeightSink& sink_;
    weights::DeviceWeights fp32_;  // the pinned path's target, allocated at its first use
    std::future<Status> fetching_;
    std::optional<Pending> fetched_;  // see Pending
    std::optional<Pending> ready_;    // fetched and checked, switched in by swap()
    std::optional<Version> current_;
    double last_fetch_s_ = 0;
    int64_t fetch_start_ns_ = 0;
    Stats stats_;
    rl::WeightTelemetry telemetry_;
};

}  // namespace tandem::rollout
