#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common/status.h"

namespace tandem::weights {

// Device memory for GPU trainers and rollouts. UCX can read device memory directly only when it
// was built with CUDA support (Context::supports_cuda_memory()); Debian's UCX 1.13 is not, so
// device weights travel through host memory: the publisher copies device -> pinned slot before
// checksumming, the reader copies its verified pinned buffer -> device after fetching. Both say so
// in their logs and count it in their stats.
//
// A device buffer, freed on destruction. Movable; not thread-safe.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(void* data, size_t size, int device) : data_(data), size_(size), device_(device) {}
    DeviceBuffer(DeviceBuffer&& other) noexcept;
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer();

    void* data() const { return data_; }
    size_t size() const { return size_; }

private:
    void* data_ = nullptr;
    size_t size_ = 0;
    int device_ = -1;
};

// Copies between host and device on one device and stream. Built on the CUDA runtime when
// TANDEM_WITH_CUDA; otherwise create() fails with unavailable. Not thread-safe: one user thread.
class DeviceStaging {
public:
    virtual ~DeviceStaging() = default;
    // unavailable (with the reason) when built without CUDA or when `device` does not exist.
    static Result<std::unique_ptr<DeviceStaging>> create(int device);

    virtual int device() const = 0;
    virtual Result<DeviceBuffer> allocate(size_t bytes) = 0;
    // Pins host memory (cudaHostRegister) so copies run at DMA speed; idempotent per range.
    virtual Status pin(void* host, size_t bytes) = 0;
    // Synchronous copies on the staging stream.
    virtual Status to_device(void* device_dst, const void* host_src, size_t bytes) = 0;
    virtual Status to_host(void* host_dst, const void* device_src, size_t bytes) = 0;
};

}  // namespace tandem::weights
