#pragma once

// Moving weights between device memory and the weight plane's host memory, overlapped with the
// host-side work, over the DeviceStaging interface (so the ordering logic is tested on CPU with
// tests/fakes/fake_device_staging.h), and the choice of path for a device reader.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/weights/descriptor.h"
#include "common/weights/device_staging.h"

namespace tandem::weights {

// Publishing from device memory: copies `device_src` into `host_dst` (same size) chunk by chunk,
// keeping the copy of chunk k + 1 in flight while `on_chunk(k, bytes)` runs on chunk k (the
// publisher checksums there). on_chunk sees every chunk once, in order, after its copy completed.
// On a copy error or an error of on_chunk it returns that error after the copies still in flight
// completed, so nothing writes into host_dst afterwards (the caller abandons it).
using DeviceChunkDone = std::function<Status(size_t chunk, std::span<const std::byte> bytes)>;
Status copy_from_device_chunked(DeviceStaging& staging, std::span<std::byte> host_dst,
                                const void* device_src, uint64_t chunk_bytes,
                                const DeviceChunkDone& on_chunk);

// Fetching into device memory: a producer (the reader's loop thread) announces host ranges as
// they are verified, in any order and from any thread; run(), on the caller's thread, enqueues
// one host -> device copy per range as it arrives, so the copies overlap the network reads of
// later chunks, and returns once the producer finished and every copy completed. Thread-safe
// between ready()/finish() and run(); run() once.
class DeviceUploader {
public:
    DeviceUploader(DeviceStaging& staging, void* device_dst, uint64_t bytes)
        : staging_(staging), device_dst_(static_cast<std::byte*>(device_dst)), bytes_(bytes) {}

    // The destination's bytes [offset, offset + bytes) are at `host`, which stays unchanged until
    // run() returns.
    void ready(const std::byte* host, uint64_t offset, uint64_t bytes);
    // No more ranges will come; `producer` is the producer's result. Once.
    void finish(Status producer);
    // The producer's error if it failed, else the first copy error, else internal when the ranges
    // did not cover the destination exactly once (a producer bug). Always waits for the copies in
    // flight before returning.
    Status run();

    struct Stats {
        uint64_t copies = 0;
        uint64_t bytes = 0;
        uint64_t overlapped_bytes = 0;  // enqueued before the producer finished
        uint64_t max_pending = 0;       // most ranges waiting to be enqueued at once
    };
    Stats stats() const;

private:
    struct Range {
        const std::byte* host;
        uint64_t offset;
        uint64_t bytes;
    };
    DeviceStaging& staging_;
    std::byte* const device_dst_;
    const uint64_t bytes_;

    mutable std::mutex mu_;
    std::condition_variable changed_;
    std::vector<Range> pending_;  // guarded by mu_
    bool finished_ = false;       // guarded by mu_
    Status producer_;             // guarded by mu_
    Stats stats_;                 // guarded by mu_
};

// How a device reader gets a version.
enum class DeviceWeightPath {
    kPinnedHost,  // fetch into the pinned host buffer, copy each verified chunk to the device
    kUcxDevice,   // one-sided gets from the publisher's device slots straight into device
                  // memory (UCX with CUDA on both sides); each chunk copied to the pinned host
                  // buffer to be verified
    kCudaIpc,     // same node: open the publisher's device slot, no copy
};
std::string_view device_weight_path_name(DeviceWeightPath path);

struct DevicePathInputs {
    std::string host;            // this process's host identity (host_identity())
    int64_t pid = 0;             // this process
    bool ipc_available = false;  // the reader has a device staging that can open handles
    // The reader's UCX can register and get into its device memory: supports_cuda_memory() of
    // its context, or a staging whose device memory is host memory (DeviceMemoryKind::kHost).
    bool ucx_cuda_memory = false;
};
struct DevicePathChoice {
    DeviceWeightPath path = DeviceWeightPath::kPinnedHost;
    std::string reason;  // names the shard or capability that decided; no capability values
};
// kCudaIpc when every shard carries an IPC handle and was published on this host by another
// process; else kUcxDevice when every shard is a device slot registered with UCX
// (ShardDescriptor::device_rkey: the publisher's UCX supports CUDA memory) and this reader's UCX
// can get into device memory; otherwise kPinnedHost. The reason names the shard or capability
// that decided.
DevicePathChoice choose_device_path(const VersionDescriptor& version,
                                    const DevicePathInputs& inputs);

}  // namespace tandem::weights
