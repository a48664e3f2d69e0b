#include "common/weights/device_pipeline.h"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

namespace tandem::weights {

Status copy_from_device_chunked(DeviceStaging& staging, std::span<std::byte> host_dst,
                                const void* device_src, uint64_t chunk_bytes,
                                const DeviceChunkDone& on_chunk) {
    if (chunk_bytes == 0) return invalid_argument("copy from device: chunk_bytes is 0");
    const auto* src = static_cast<const std::byte*>(device_src);
    const uint64_t total = host_dst.size();
    const size_t chunks = static_cast<size_t>((total + chunk_bytes - 1) / chunk_bytes);
    auto range = [&](size_t k) {
        const uint64_t begin = k * chunk_bytes;
        return std::span<std::byte>(host_dst.data() + begin,
                                    std::min<uint64_t>(chunk_bytes, total - begin));
    };
    std::optional<CopyTicket> last;  // the newest copy enqueued
    auto enqueue = [&](size_t k) -> Result<CopyTicket> {
        auto r = range(k);
        auto t = staging.enqueue_to_host(r.data(), src + k * chunk_bytes, r.size());
        if (t.ok()) last = *t;
        return t;
    };
    // On failure: let the copies in flight finish before the caller abandons host_dst.
    auto fail = [&](Status s, size_t k) {
        if (last) (void)staging.wait(*last);  // its error is secondary to `s`
        return s.with_context(
            fmt::format("copying chunk {} of {} from device {}", k, chunks, staging.device()));
    };
    if (chunks == 0) return Status();
    auto next = enqueue(0);
    if (!next.ok()) return fail(next.status(), 0);
    for (size_t k = 0; k < chunks; ++k) {
        const CopyTicket current = *next;
        if (k + 1 < chunks) {
            next = enqueue(k + 1);  // in flight while chunk k is checksummed
            if (!next.ok()) return fail(next.status(), k + 1);
        }
        Status copied = staging.wait(current);
        if (!copied.ok()) return fail(copied, k);
        Status done = on_chunk(k, range(k));
        if (!done.ok()) return fail(done, k);
    }
    return Status();
}

void DeviceUploader::ready(const std::byte* host, uint64_t offset, uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({host, offset, bytes});
    stats_.max_pending = std::max<uint64_t>(stats_.max_pending, pending_.size());
    changed_.notify_one();
}

void DeviceUploader::finish(Status producer) {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    producer_ = std::move(producer);
    changed_.notify_one();
}

Status DeviceUploader::run() {
    std::optional<CopyTicket> last;
    Status copy_error;
    uint64_t covered = 0;
    std::vector<Range> batch;
    for (;;) {
        bool finished = false;
        {
            std::unique_lock<std::mutex> lock(mu_);
            changed_.wait(lock, [&] { return finished_ || !pending_.empty(); });
            batch.swap(pending_);
            finished = finished_;
        }
        for (const Range& r : batch) {
            if (!copy_error.ok()) break;  // drain the producer, copy nothing more
            if (r.offset > bytes_ || r.bytes > bytes_ - r.offset) {
                copy_error = internal_error(fmt::format(
                    "copy to device {}: range [{}, {}) lies outside the {} bytes of the "
                    "destination",
                    staging_.device(), r.offset, r.offset + r.bytes, bytes_));
                break;
            }
            auto t = staging_.enqueue_to_device(device_dst_ + r.offset, r.host, r.bytes);
            if (!t.ok()) {
                copy_error = t.status().with_context(
                    fmt::format("copying bytes [{}, {}) to device {}", r.offset, r.offset + r.bytes,
                                staging_.device()));
                break;
            }
            last = *t;
            covered += r.bytes;
            std::lock_guard<std::mutex> lock(mu_);
            ++stats_.copies;
            stats_.bytes += r.bytes;
            if (!finished) stats_.overlapped_bytes += r.bytes;
        }
        batch.clear();
        if (finished) break;
    }
    if (last) {
        Status waited = staging_.wait(*last);
        if (copy_error.ok() && !waited.ok()) {
            copy_error =
                waited.with_context(fmt::format("copying to device {}", staging_.device()));
        }
    }
    Status producer;
    {
        std::lock_guard<std::mutex> lock(mu_);
        producer = producer_;
    }
    if (!producer.ok()) return producer;
    if (!copy_error.ok()) return copy_error;
    if (covered != bytes_) {
        return internal_error(
            fmt::format("copy to device {}: the producer finished with {} of {} bytes announced",
                        staging_.device(), covered, bytes_));
    }
    return Status();
}

DeviceUploader::Stats DeviceUploader::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

std::string_view device_weight_path_name(DeviceWeightPath path) {
    switch (path) {
        case DeviceWeightPath::kPinnedHost:
            return "pinned_host";
        case DeviceWeightPath::kUcxDevice:
            return "ucx_device";
        case DeviceWeightPath::kCudaIpc:
            return "cuda_ipc";
    }
    return "unknown";
}

DevicePathChoice choose_device_path(const VersionDescriptor& version, const DevicePathInputs& in) {
    // Why not ucx_device, or "" when every shard is a device slot this UCX can read.
    std::string ucx_why;
    if (!in.ucx_cuda_memory) {
        ucx_why = "this UCX cannot register CUDA memory";
    } else {
        for (const auto& s : version.shards) {
            if (s.device_rkey.empty()) {
                ucx_why = fmt::format(
                    "this UCX can read device memory, but shard {} (publisher {}) has no device "
                    "slot registered with UCX",
                    s.index, s.publisher);
                break;
            }
        }
    }
    if (version.shards.empty()) {
        return {DeviceWeightPath::kPinnedHost, "the version has no shards"};
    }
    // Why not CUDA IPC, or "" when every shard is another process's device slot on this host.
    std::string ipc_why;
    if (!in.ipc_available) ipc_why = "no device staging to open CUDA IPC handles with";
    for (const auto& s : version.shards) {
        if (!ipc_why.empty()) break;
        if (s.cuda_ipc_handle.empty()) {
            ipc_why = fmt::format("shard {} (publisher {}) has no device slot to share", s.index,
                                  s.publisher);
        } else if (s.host != in.host) {
            ipc_why = fmt::format("shard {} was published on another host ({})", s.index, s.host);
        } else if (s.pid == in.pid) {
            ipc_why = fmt::format(
                "shard {} was published by this process (CUDA IPC opens other processes' memory)",
                s.index);
        }
    }
    if (ipc_why.empty()) {
        return {DeviceWeightPath::kCudaIpc,
                fmt::format("all {} shards are device slots on this host", version.shards.size())};
    }
    if (ucx_why.empty()) {
        return {DeviceWeightPath::kUcxDevice,
                fmt::format("all {} shards are device slots registered with UCX, and this UCX "
                            "reads into device memory ({})",
                            version.shards.size(), ipc_why)};
    }
    return {DeviceWeightPath::kPinnedHost, fmt::format("{}; {}", ipc_why, ucx_why)};
}

}  // namespace tandem::weights
