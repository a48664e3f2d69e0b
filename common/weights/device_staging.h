#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tandem::weights {

// Device memory for GPU trainers and rollouts. UCX can read device memory directly only when it
// was built with CUDA support (Context::supports_cuda_memory(), detected at run time): then a
// publisher's device slots are registered with UCX and readers get them straight into device
// memory (the ucx_device path). Debian's UCX 1.13 is not, so there device weights travel through
// host memory: the publisher copies device -> pinned slot in chunks while it checksums
// (device_pipeline.h), the reader copies each verified chunk of its pinned buffer to the device
// while later chunks are still on the network. On one node a reader can instead open the
// publisher's device slot through CUDA IPC (Reader::map_device). Each path is logged once and
// counted in stats.
//
// Device memory this object releases on destruction (an allocation, or another process's
// allocation opened through CUDA IPC). Movable; not thread-safe.
class DeviceBuffer {
public:
    using Release = std::function<void(void* data)>;
    DeviceBuffer() = default;
    DeviceBuffer(void* data, size_t size, int device, Release release)
        : data_(data), size_(size), device_(device), release_(std::move(release)) {}
    DeviceBuffer(DeviceBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)),
          device_(other.device_),
          release_(std::move(other.release_)) {}
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
        if (this != &other) {
            reset();
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
            device_ = other.device_;
            release_ = std::move(other.release_);
        }
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { reset(); }

    void* data() const { return data_; }
    size_t size() const { return size_; }
    int device() const { return device_; }

private:
    void reset() {
        if (data_ != nullptr && release_) release_(data_);
        data_ = nullptr;
    }
    void* data_ = nullptr;
    size_t size_ = 0;
    int device_ = -1;
    Release release_;
};

// What UCX must be told a staging's device memory is when it registers it (ucp_mem_map) or gets
// into it (ucp_get_nbx): CUDA memory for a real device; host memory for a staging whose "device"
// memory is host memory (tests/fakes/fake_device_staging.h can say so, to run the ucx_device path
// over a UCX without CUDA).
enum class DeviceMemoryKind { kCuda, kHost };

// Identifies a copy enqueued on a DeviceStaging; copies complete in the order enqueued.
using CopyTicket = uint64_t;

// Bytes of a CUDA IPC memory handle (cudaIpcMemHandle_t).
inline constexpr size_t kIpcHandleBytes = 64;

// Copies between host and device on one device and one stream, and CUDA IPC export/open. Built
// on the CUDA runtime when TANDEM_WITH_CUDA; otherwise create() fails with unavailable. The
// pipelines in device_pipeline.h use only this interface, so tests run them over a host-memory
// fake (tests/fakes/fake_device_staging.h). Not thread-safe: one user thread.
class DeviceStaging {
public:
    virtual ~DeviceStaging() = default;
    // unavailable (with the reason) when built without CUDA or when `device` does not exist.
    static Result<std::unique_ptr<DeviceStaging>> create(int device);
    // The same on a stream the caller owns (a cudaStream_t of `device`, e.g. an actor's
    // kernels::cuda::Stream::handle()), which must outlive the staging: its copies are ordered
    // after everything enqueued there before them, without the host waiting (a trainer publishes
    // its masters right after the optimizer's kernels). Destroying it waits for its own copies
    // only and leaves the stream alone.
    static Result<std::unique_ptr<DeviceStaging>> create_on_stream(int device, void* stream);

    virtual int device() const = 0;
    // See DeviceMemoryKind: kCuda unless the "device" memory is host memory.
    virtual DeviceMemoryKind memory_kind() const { return DeviceMemoryKind::kCuda; }
    virtual Result<DeviceBuffer> allocate(size_t bytes) = 0;
    // Pins host memory (cudaHostRegister) so copies run at DMA speed and enqueueing does not
    // block; idempotent per range.
    virtual Status pin(void* host, size_t bytes) = 0;
    // Enqueue a copy on the staging stream and return at once (for pinned host memory). Neither
    // buffer may be touched until wait() covered the ticket.
    virtual Result<CopyTicket> enqueue_to_device(void* device_dst, const void* host_src,
                                                 size_t bytes) = 0;
    virtual Result<CopyTicket> enqueue_to_host(void* host_dst, const void* device_src,
                                               size_t bytes) = 0;
    // Blocks until `ticket` and every copy enqueued before it completed; the first error among
    // them, naming the copy.
    virtual Status wait(CopyTicket ticket) = 0;
    // Synchronous device -> device copy on the staging stream.
    virtual Status copy_on_device(void* device_dst, const void* device_src, size_t bytes) = 0;
    // The CUDA IPC handle (kIpcHandleBytes) of an allocation made by allocate(), given its base.
    virtual Result<std::vector<std::byte>> export_handle(const void* device_base) = 0;
    // Opens another process's allocation from its handle (read-only by contract); closed when the
    // returned buffer goes. invalid_argument for a handle of the wrong size; the driver's error
    // (same process, no peer access, freed allocation) as unavailable.
    virtual Result<DeviceBuffer> open_handle(std::span<const std::byte> handle, size_t bytes) = 0;

    // Synchronous copies (enqueue + wait).
    Status to_device(void* device_dst, const void* host_src, size_t bytes) {
        TANDEM_ASSIGN_OR_RETURN(CopyTicket t, enqueue_to_device(device_dst, host_src, bytes));
        return wait(t);
    }
    Status to_host(void* host_dst, const void* device_src, size_t bytes) {
        TANDEM_ASSIGN_OR_RETURN(CopyTicket t, enqueue_to_host(host_dst, device_src, bytes));
        return wait(t);
    }
};

}  // namespace tandem::weights
