// DeviceStaging on the CUDA runtime (built when TANDEM_WITH_CUDA).

#include <cuda_runtime_api.h>

#include <cstring>
#include <deque>
#include <map>

#include <fmt/format.h>

#include "common/weights/device_staging.h"

namespace tandem::weights {

namespace {

static_assert(sizeof(cudaIpcMemHandle_t) == kIpcHandleBytes);

Status cuda_status(cudaError_t e, std::string_view what) {
    if (e == cudaSuccess) return Status();
    return unavailable(
        fmt::format("CUDA {}: {} ({})", what, cudaGetErrorString(e), cudaGetErrorName(e)));
}

// Owns (or borrows) a stream, the events of copies in flight and the host ranges it pinned. Not
// thread-safe.
class CudaStaging final : public DeviceStaging {
public:
    CudaStaging(int device, cudaStream_t stream, bool owns_stream)
        : device_(device), stream_(stream), owns_stream_(owns_stream) {}
    ~CudaStaging() override {
        cudaSetDevice(device_);
        if (owns_stream_) cudaStreamSynchronize(stream_);
        for (const auto& p : pending_) {
            // A borrowed stream: wait for this staging's copies only (they read pinned memory
            // unregistered below), not for the owner's later work.
            if (!owns_stream_) cudaEventSynchronize(p.event);
            cudaEventDestroy(p.event);
        }
        for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
        for (const auto& [p, bytes] : pinned_) cudaHostUnregister(p);
        if (owns_stream_) cudaStreamDestroy(stream_);
    }

    int device() const override { return device_; }

    Result<DeviceBuffer> allocate(size_t bytes) override {
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_), "selecting the device"));
        void* p = nullptr;
        TANDEM_RETURN_IF_ERROR(
            cuda_status(cudaMalloc(&p, bytes), fmt::format("allocating {} bytes", bytes)));
        const int device = device_;
        return DeviceBuffer(p, bytes, device_, [device](void* data) {
            cudaSetDevice(device);
            cudaFree(data);
        });
    }

    Status pin(void* host, size_t bytes) override {
        if (pinned_.count(host) != 0) return Status();
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaHostRegister(host, bytes, cudaHostRegisterDefault),
                                           "pinning host staging memory"));
        pinned_.emplace(host, bytes);
        return Status();
    }

    Result<CopyTicket> enqueue_to_device(void* dst, const void* src, size_t bytes) override {
        return enqueue(dst, src, bytes, cudaMemcpyHostToDevice, "copy to device");
    }
    Result<CopyTicket> enqueue_to_host(void* dst, const void* src, size_t bytes) override {
        return enqueue(dst, src, bytes, cudaMemcpyDeviceToHost, "copy to host");
    }

    Status wait(CopyTicket ticket) override {
        Status first;
        while (!pending_.empty() && pending_.front().ticket <= ticket) {
            const Pending p = pending_.front();
            pending_.pop_front();
            Status s =
                cuda_status(cudaEventSynchronize(p.event),
                            fmt::format("{} of {} bytes (copy {})", p.what, p.bytes, p.ticket));
            if (first.ok() && !s.ok()) first = std::move(s);
            free_events_.push_back(p.event);
        }
        return first;
    }

    Status copy_on_device(void* dst, const void* src, size_t bytes) override {
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_), "selecting the device"));
        TANDEM_RETURN_IF_ERROR(
            cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_),
                        "device to device copy"));
        return cuda_status(cudaStreamSynchronize(stream_), "device to device copy");
    }

    Result<std::vector<std::byte>> export_handle(const void* base) override {
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_), "selecting the device"));
        cudaIpcMemHandle_t handle{};
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaIpcGetMemHandle(&handle, const_cast<void*>(base)),
                                           "exporting an IPC handle"));
        std::vector<std::byte> out(kIpcHandleBytes);
        std::memcpy(out.data(), &handle, kIpcHandleBytes);
        return out;
    }

    Result<DeviceBuffer> open_handle(std::span<const std::byte> bytes, size_t size) override {
        if (bytes.size() != kIpcHandleBytes) {
            return invalid_argument(fmt::format("CUDA IPC handle has {} bytes, expected {}",
                                                bytes.size(), kIpcHandleBytes));
        }
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_), "selecting the device"));
        cudaIpcMemHandle_t handle{};
        std::memcpy(&handle, bytes.data(), kIpcHandleBytes);
        void* p = nullptr;
        TANDEM_RETURN_IF_ERROR(
            cuda_status(cudaIpcOpenMemHandle(&p, handle, cudaIpcMemLazyEnablePeerAccess),
                        "opening an IPC handle"));
        const int device = device_;
        return DeviceBuffer(p, size, device_, [device](void* data) {
            cudaSetDevice(device);
            cudaIpcCloseMemHandle(data);
        });
    }

private:
    struct Pending {
        CopyTicket ticket;
        cudaEvent_t event;
        const char* what;
        size_t bytes;
    };

    Result<CopyTicket> enqueue(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                               const char* what) {
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_), "selecting the device"));
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(dst, src, bytes, kind, stream_),
                                           fmt::format("{} of {} bytes", what, bytes)));
        cudaEvent_t event = nullptr;
        if (!free_events_.empty()) {
            event = free_events_.back();
            free_events_.pop_back();
        } else {
            TANDEM_RETURN_IF_ERROR(cuda_status(
                cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "creating an event"));
        }
        Status recorded = cuda_status(cudaEventRecord(event, stream_), "recording an event");
        if (!recorded.ok()) {
            free_events_.push_back(event);
            return recorded;
        }
        pending_.push_back({next_ticket_, event, what, bytes});
        return next_ticket_++;
    }

    const int device_;
    cudaStream_t stream_;
    const bool owns_stream_;
    std::map<void*, size_t> pinned_;
    std::deque<Pending> pending_;  // copies enqueued and not yet waited for, in order
    std::vector<cudaEvent_t> free_events_;
    CopyTicket next_ticket_ = 1;
};

}  // namespace

namespace {

Status check_device(int device) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        return unavailable(fmt::format("no CUDA device: {}",
                                       e == cudaSuccess ? "none found" : cudaGetErrorString(e)));
    }
    if (device < 0 || device >= count) {
        return invalid_argument(
            fmt::format("CUDA device {} does not exist ({} found)", device, count));
    }
    return cuda_status(cudaSetDevice(device), "selecting the device");
}

}  // namespace

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create(int device) {
    TANDEM_RETURN_IF_ERROR(check_device(device));
    cudaStream_t stream = nullptr;
    TANDEM_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                       "creating a stream"));
    return std::unique_ptr<DeviceStaging>(new CudaStaging(device, stream, true));
}

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create_on_stream(int device, void* stream) {
    if (stream == nullptr) {
        return invalid_argument(
            "device staging on a caller's stream: the stream is null (the legacy default stream "
            "would serialise every stream of the device)");
    }
    TANDEM_RETURN_IF_ERROR(check_device(device));
    return std::unique_ptr<DeviceStaging>(
        new CudaStaging(device, static_cast<cudaStream_t>(stream), false));
}

}  // namespace tandem::weights
