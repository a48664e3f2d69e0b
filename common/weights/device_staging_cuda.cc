// DeviceStaging on the CUDA runtime (built when TANDEM_WITH_CUDA).

#include <cuda_runtime_api.h>

#include <map>

#include <fmt/format.h>

#include "common/weights/device_staging.h"

namespace tandem::weights {

namespace {

Status cuda_status(cudaError_t e, std::string_view what) {
    if (e == cudaSuccess) return Status();
    return unavailable(fmt::format("CUDA {}: {}", what, cudaGetErrorString(e)));
}

// Owns a stream and the host ranges it pinned. Not thread-safe.
class CudaStaging final : public DeviceStaging {
public:
    CudaStaging(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
    ~CudaStaging() override {
        cudaSetDevice(device_);
        for (const auto& [p, bytes] : pinned_) cudaHostUnregister(p);
        cudaStreamDestroy(stream_);
    }

    int device() const override { return device_; }

    Result<DeviceBuffer> allocate(size_t bytes) override {
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_), "selecting the device"));
        void* p = nullptr;
        TANDEM_RETURN_IF_ERROR(
            cuda_status(cudaMalloc(&p, bytes), fmt::format("allocating {} bytes", bytes)));
        return DeviceBuffer(p, bytes, device_);
    }

    Status pin(void* host, size_t bytes) override {
        if (pinned_.count(host) != 0) return Status();
        TANDEM_RETURN_IF_ERROR(cuda_status(cudaHostRegister(host, bytes, cudaHostRegisterDefault),
                                           "pinning host staging memory"));
        pinned_.emplace(host, bytes);
        return Status();
    }

    Status to_device(void* dst, const void* src, size_t bytes) override {
        TANDEM_RETURN_IF_ERROR(cuda_status(
            cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy to device"));
        return cuda_status(cudaStreamSynchronize(stream_), "copy to device");
    }

    Status to_host(void* dst, const void* src, size_t bytes) override {
        TANDEM_RETURN_IF_ERROR(cuda_status(
            cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host"));
        return cuda_status(cudaStreamSynchronize(stream_), "copy to host");
    }

private:
    const int device_;
    cudaStream_t stream_;
    std::map<void*, size_t> pinned_;
};

}  // namespace

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create(int device) {
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
    TANDEM_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device), "selecting the device"));
    cudaStream_t stream = nullptr;
    TANDEM_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                       "creating a stream"));
    return std::unique_ptr<DeviceStaging>(new CudaStaging(device, stream));
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      device_(o.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
        if (data_ != nullptr) cudaFree(data_);
        data_ = std::exchange(o.data_, nullptr);
        size_ = std::exchange(o.size_, 0);
        device_ = o.device_;
    }
    return *this;
}

DeviceBuffer::~DeviceBuffer() {
    if (data_ != nullptr) {
        cudaSetDevice(device_);
        cudaFree(data_);
    }
}

}  // namespace tandem::weights
