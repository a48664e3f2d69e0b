// The reader's device paths: fetch into device memory through the pinned host buffer, chunk by
// chunk as chunks are verified, and same-host CUDA IPC maps of a publisher's device slots.

#include <unistd.h>

#include <thread>

#include <fmt/format.h>

#include "common/weights/reader_core.h"

namespace tandem::weights {

std::vector<std::span<std::byte>> Reader::Core::buffer_memory() {
    return loop_->call([this] {
        std::vector<std::span<std::byte>> out;
        for (auto& b : buffers_) out.emplace_back(b.memory->data(), b.memory->size());
        return out;
    });
}

DevicePathChoice Reader::device_path(const VersionDescriptor& version,
                                     const DeviceStaging* staging) const {
    DevicePathInputs in;
    in.host = host_identity();
    in.pid = static_cast<int64_t>(getpid());
    in.ipc_available = staging != nullptr;
    in.ucx_cuda_memory = core_->ucx_cuda_memory() ||
                         (staging != nullptr && staging->memory_kind() == DeviceMemoryKind::kHost);
    return choose_device_path(version, in);
}

namespace {

// Logs the path once per change of path (not per version).
void log_path(std::mutex& mu, std::optional<DeviceWeightPath>& logged, const std::string& reader,
              const VersionDescriptor& v, DeviceWeightPath path, std::string_view why, int device) {
    {
        std::lock_guard<std::mutex> lock(mu);
        if (logged == path) return;
        logged = path;
    }
    Logger("weights")
        .with({.job = v.job.str(), .actor = reader, .version = v.version})
        .info("reading weights into device {} by {}: {}", device, device_weight_path_name(path),
              why);
}

}  // namespace

Status Reader::fetch_to_device(const VersionDescriptor& version, DeviceStaging& staging,
                               DeviceWeights& target, const RelaySource* relay) {
    const uint64_t total = layout().total_bytes();
    target.version.reset();  // its bytes are about to change
    if (target.buffer.size() < total) {
        return invalid_argument(fmt::format(
            "fetching version {} to device {}: the device buffer has {} bytes, the layout {}",
            version.version, staging.device(), target.buffer.size(), total));
    }
    const DevicePathChoice choice = device_path(version, &staging);
    std::string why = choice.reason;
    bool fell_back = false;
    if (relay != nullptr) {
        why = fmt::format("reading relay {} (relays serve host memory)", relay->reader);
    } else if (choice.path == DeviceWeightPath::kUcxDevice) {
        bool broken = false;
        {
            std::lock_guard<std::mutex> lock(device_mu_);
            broken = ucx_device_failed_.has_value();
            if (broken) why = fmt::format("ucx_device failed before: {}", *ucx_device_failed_);
        }
        if (!broken) {
            Status direct = fetch_device_direct(version, staging, target, choice.reason);
            if (direct.ok()) return direct;
            // The host slot serves every version too: read it. A refused chunk may be this
            // version's device slot only; anything else (UCX cannot get that memory after all, a
            // timeout) keeps this reader on the pinned path from now on.
            fell_back = true;
            why = fmt::format("ucx_device failed: {}", direct.message());
            Logger("weights")
                .with({.job = version.job.str(),
                       .actor = core_->options().reader_id,
                       .version = version.version})
                .warn("{}; fetching through pinned host memory", why);
            if (direct.code() != StatusCode::kDataLoss) {
                std::lock_guard<std::mutex> lock(device_mu_);
                ucx_device_failed_ = direct.message();
            }
        }
    } else if (choice.path != DeviceWeightPath::kPinnedHost) {
        why = fmt::format("a copy was asked for ({}: map_device() would avoid it)", choice.reason);
    }
    log_path(device_mu_, logged_path_, core_->options().reader_id, version,
             DeviceWeightPath::kPinnedHost, why, staging.device());
    // Pinned buffers make each chunk's copy a DMA that does not block the enqueue; pin() is a
    // no-op after the first time.
    for (auto region : core_->buffer_memory()) {
        TANDEM_RETURN_IF_ERROR(staging.pin(region.data(), region.size())
                                   .with_context("pinning the reader's host buffer"));
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto uploader = std::make_shared<DeviceUploader>(staging, target.buffer.data(), total);
    auto op = std::make_shared<Core::Operation>();
    op->kind = Core::Kind::kPull;
    op->version = version;
    if (relay != nullptr) op->relay = *relay;  // verified chunk by chunk like the publishers'
    // The operation may outlive this call (a failed one drains); the uploader lives as long.
    op->on_verified = [uploader](const std::byte* host, uint64_t offset, uint64_t bytes) {
        uploader->ready(host, offset, bytes);
    };
    std::future<Status> fetched = core_->start(op);
    std::thread waiter([&] { uploader->finish(fetched.get()); });
    Status s = uploader->run();
    waiter.join();
    const auto st = uploader->stats();
    {
        std::lock_guard<std::mutex> lock(device_mu_);
        last_device_ = {
            version.version,
            DeviceWeightPath::kPinnedHost,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
            st.bytes,
            st.copies,
            st.overlapped_bytes,
            relay != nullptr,
            fell_back};
    }
    if (!s.ok()) {
        return s.with_context(
            fmt::format("fetching version {} into device {}", version.version, staging.device()));
    }
    device_staged_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    target.version = version.version;
    return Status();
}

Status Reader::fetch_device_direct(const VersionDescriptor& version, DeviceStaging& staging,
                                   DeviceWeights& target, const std::string& why) {
    log_path(device_mu_, logged_path_, core_->options().reader_id, version,
             DeviceWeightPath::kUcxDevice, why, staging.device());
    // Each chunk's copy to the host (to verify it) is a DMA into pinned memory.
    for (auto region : core_->buffer_memory()) {
        TANDEM_RETURN_IF_ERROR(staging.pin(region.data(), region.size())
                                   .with_context("pinning the reader's host buffer"));
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto op = std::make_shared<Core::Operation>();
    op->kind = Core::Kind::kPull;
    op->version = version;
    op->device = static_cast<std::byte*>(target.buffer.data());
    op->device_memory = staging.memory_kind() == DeviceMemoryKind::kHost ? UCS_MEMORY_TYPE_HOST
                                                                         : UCS_MEMORY_TYPE_CUDA;
    op->staging = &staging;
    // The caller's thread waits here, so the loop thread is the staging's only user meanwhile.
    // A failed operation may still drain after this returns; it no longer copies by then.
    Status s = core_->start(op).get();
    {
        std::lock_guard<std::mutex> lock(device_mu_);
        last_device_ = {
            version.version,
            DeviceWeightPath::kUcxDevice,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
            s.ok() ? layout().total_bytes() : 0,
            op->device_to_host_copies,
            0,
            false};
    }
    if (!s.ok()) {
        return s.with_context(fmt::format("fetching version {} into device {} by ucx_device",
                                          version.version, staging.device()));
    }
    device_staged_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    target.version = version.version;
    return Status();
}

Result<std::shared_ptr<const DeviceMappedWeights>> Reader::map_device(
    const VersionDescriptor& version, DeviceStaging& staging) {
    const DevicePathChoice choice = device_path(version, &staging);
    if (choice.path != DeviceWeightPath::kCudaIpc) {
        return invalid_argument(fmt::format("version {} cannot be mapped on device {}: {}",
                                            version.version, staging.device(), choice.reason));
    }
    const auto t0 = std::chrono::steady_clock::now();
    // The host mapping takes and renews the leases that keep the slots (host and device) alive.
    TANDEM_ASSIGN_OR_RETURN(auto leases, map(version));
    std::vector<DeviceMappedWeights::Shard> shards;
    for (const auto& s : version.shards) {
        auto opened = staging.open_handle(s.cuda_ipc_handle, s.range.size());
        if (!opened.ok()) {
            return opened.status().with_context(
                fmt::format("opening version {} shard {} of {} on device {}", version.version,
                            s.index, s.publisher, staging.device()));
        }
        shards.push_back({s.range, std::move(*opened)});
    }
    log_path(device_mu_, logged_path_, core_->options().reader_id, version,
             DeviceWeightPath::kCudaIpc, choice.reason, staging.device());
    {
        std::lock_guard<std::mutex> lock(device_mu_);
        last_device_ = {
            version.version,
            DeviceWeightPath::kCudaIpc,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
            0,
            0,
            0,
            false};
    }
    return std::shared_ptr<const DeviceMappedWeights>(
        std::make_shared<DeviceMappedWeights>(std::move(leases), std::move(shards)));
}

DeviceFetchStats Reader::last_device_fetch() const {
    std::lock_guard<std::mutex> lock(device_mu_);
    return last_device_;
}

}  // namespace tandem::weights
