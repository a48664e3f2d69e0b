#pragma once

// The CUDA runtime pieces every device launcher shares, without CUDA headers for callers: one
// stream per actor (passed explicitly to every launcher; nothing here synchronises unless its name
// says so), a device-memory allocator that reports its peak, RAII buffers, and async copies.
// Errors name the operation and carry cudaGetErrorString's text.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tandem::kernels::cuda {

// A bf16 value in device memory: the upper 16 bits of an IEEE fp32, rounded to nearest even
// (kernels/half.h converts on the host). A distinct type so bf16 and fp32 pointers never mix.
struct Bf16 {
    uint16_t bits;
};
static_assert(sizeof(Bf16) == 2);

// Status for a failed CUDA runtime call: "<op>: <cudaGetErrorString> (<error name>)". `code` is a
// cudaError_t. Out-of-memory and missing devices/drivers are unavailable, the rest internal.
Status cuda_status(int code, std::string_view op);

// A non-blocking CUDA stream on one device (it never waits for the legacy default stream). One per
// actor; every launcher takes it explicitly. Not copyable; destroying it waits for nothing (the
// runtime frees it once its work completes). Thread-compatible: one owner enqueues.
class Stream {
public:
    static Result<std::unique_ptr<Stream>> create(int device);
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    void* handle() const { return stream_; }  // a cudaStream_t
    int device() const { return device_; }
    // Blocks the calling thread until the stream's work is done; `what` names the wait in errors.
    // The only synchronising call of this header besides DeviceAllocator::release_cached().
    Status synchronize(std::string_view what) const;

private:
    Stream(int device, void* stream) : device_(device), stream_(stream) {}
    int device_;
    void* stream_;
};

class DeviceAllocator;

// A block of device memory from a DeviceAllocator; returns it to the allocator when destroyed.
// Movable, not copyable. The allocator must outlive its buffers.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer&& other) noexcept;
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    template <typename T = void>
    T* as() const {
        return static_cast<T*>(ptr_);
    }
    size_t bytes() const { return bytes_; }
    bool empty() const { return ptr_ == nullptr; }

private:
    friend class DeviceAllocator;
    DeviceBuffer(DeviceAllocator* owner, void* ptr, size_t bytes, size_t block_bytes)
        : owner_(owner), ptr_(ptr), bytes_(bytes), block_bytes_(block_bytes) {}
    void reset();
    DeviceAllocator* owner_ = nullptr;
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
    size_t block_bytes_ = 0;
};

// Device memory of one actor on one device. Blocks come from cudaMalloc (rounded up to 512
// bytes) and go back to a free list when their buffer dies; a later allocation reuses a free block
// of at most twice its size. Reuse is safe because the actor enqueues all work on its one stream:
// a block freed after a launch is reused by launches that come later on the same stream. A buffer
// used on another stream must only be destroyed after that stream was synchronised.
// Reports bytes in use (blocks held by live buffers), their peak, and bytes reserved from the
// driver. Not thread-safe: owned by one actor's thread.
class DeviceAllocator {
public:
    static Result<std::unique_ptr<DeviceAllocator>> create(int device);
    // Frees the cached blocks; logs to stderr when buffers are still alive (they leak).
    ~DeviceAllocator();
    DeviceAllocator(const DeviceAllocator&) = delete;
    DeviceAllocator& operator=(const DeviceAllocator&) = delete;

    // `what` names the buffer in errors ("allocating 12.0 MiB for logits ...").
    Result<DeviceBuffer> allocate(size_t bytes, std::string_view what);

    int device() const { return device_; }
    size_t bytes_in_use() const { return in_use_; }
    size_t peak_bytes() const { return peak_; }
    size_t reserved_bytes() const { return reserved_; }
    void reset_peak() { peak_ = in_use_; }
    // Returns the free list to the driver (cudaFree synchronises the device).
    Status release_cached();

private:
    friend class DeviceBuffer;
    explicit DeviceAllocator(int device) : device_(device) {}
    void give_back(void* ptr, size_t block_bytes);

    int device_;
    size_t in_use_ = 0, peak_ = 0, reserved_ = 0, live_ = 0;
    std::multimap<size_t, void*> free_;  // block bytes -> block
};

// Asynchronous copies and fills on `stream`. Host memory may be pageable (then the runtime stages
// it; the host buffer may be reused as soon as copy_to_device returns) or pinned; copy_to_host
// into pageable memory is complete only after stream.synchronize().
Status copy_to_device(const Stream& stream, void* dst, const void* src, size_t bytes);
Status copy_to_host(const Stream& stream, void* dst, const void* src, size_t bytes);
Status copy_on_device(const Stream& stream, void* dst, const void* src, size_t bytes);
Status fill_zero(const Stream& stream, void* dst, size_t bytes);

}  // namespace tandem::kernels::cuda
