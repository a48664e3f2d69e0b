// Host side of kernels/cuda/runtime.h (plain C++ against the CUDA runtime API).
#include "kernels/cuda/runtime.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

namespace tandem::kernels::cuda {

namespace {

constexpr size_t kBlockAlign = 512;

std::string mib(size_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

}  // namespace

Status cuda_status(int code, std::string_view op) {
    const auto err = static_cast<cudaError_t>(code);
    std::string msg(op);
    msg += ": ";
    msg += cudaGetErrorString(err);
    msg += " (";
    msg += cudaGetErrorName(err);
    msg += ")";
    switch (err) {
        case cudaErrorMemoryAllocation:
        case cudaErrorNoDevice:
        case cudaErrorInsufficientDriver:
        case cudaErrorInvalidDevice:
            return unavailable(std::move(msg));
        default:
            return internal_error(std::move(msg));
    }
}

// ---- Stream ----

Result<std::unique_ptr<Stream>> Stream::create(int device) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess)
        return cuda_status(err, "cudaSetDevice(" + std::to_string(device) + ")");
    cudaStream_t s = nullptr;
    err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (err != cudaSuccess) return cuda_status(err, "cudaStreamCreateWithFlags");
    return std::unique_ptr<Stream>(new Stream(device, s));
}

Stream::~Stream() {
    const cudaError_t err = cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
    if (err != cudaSuccess) {
        std::fprintf(stderr, "tandem cuda: cudaStreamDestroy: %s\n", cudaGetErrorString(err));
    }
}

Status Stream::synchronize(std::string_view what) const {
    const cudaError_t err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
    if (err != cudaSuccess) {
        return cuda_status(err, std::string("cudaStreamSynchronize after ") + std::string(what));
    }
    return Status();
}

// ---- DeviceBuffer ----

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : owner_(o.owner_), ptr_(o.ptr_), bytes_(o.bytes_), block_bytes_(o.block_bytes_) {
    o.owner_ = nullptr;
    o.ptr_ = nullptr;
    o.bytes_ = o.block_bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
        reset();
        owner_ = o.owner_;
        ptr_ = o.ptr_;
        bytes_ = o.bytes_;
        block_bytes_ = o.block_bytes_;
        o.owner_ = nullptr;
        o.ptr_ = nullptr;
        o.bytes_ = o.block_bytes_ = 0;
    }
    return *this;
}

void DeviceBuffer::reset() {
    if (owner_ && ptr_) owner_->give_back(ptr_, block_bytes_);
    owner_ = nullptr;
    ptr_ = nullptr;
    bytes_ = block_bytes_ = 0;
}

// ---- DeviceAllocator ----

Result<std::unique_ptr<DeviceAllocator>> DeviceAllocator::create(int device) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return cuda_status(err, "cudaGetDeviceCount");
    if (device < 0 || device >= count) {
        return unavailable("device allocator: CUDA device " + std::to_string(device) +
                           " does not exist (" + std::to_string(count) + " visible)");
    }
    return std::unique_ptr<DeviceAllocator>(new DeviceAllocator(device));
}

DeviceAllocator::~DeviceAllocator() {
    if (live_ > 0) {
        std::fprintf(stderr,
                     "tandem cuda: device allocator destroyed with %zu live buffers (%s); they "
                     "leak\n",
                     live_, mib(in_use_).c_str());
    }
    const Status s = release_cached();
    if (!s.ok()) std::fprintf(stderr, "tandem cuda: %s\n", s.to_string().c_str());
}

Result<DeviceBuffer> DeviceAllocator::allocate(size_t bytes, std::string_view what) {
    const size_t block = (bytes == 0 ? 1 : (bytes + kBlockAlign - 1) / kBlockAlign) * kBlockAlign;
    void* ptr = nullptr;
    size_t got = block;
    auto it = free_.lower_bound(block);
    if (it != free_.end() && it->first <= 2 * block) {
        got = it->first;
        ptr = it->second;
        free_.erase(it);
    } else {
        cudaError_t err = cudaSetDevice(device_);
        if (err == cudaSuccess) err = cudaMalloc(&ptr, block);
        if (err == cudaErrorMemoryAllocation && !free_.empty()) {
            (void)cudaGetLastError();  // clear the sticky-free error before retrying
            TANDEM_RETURN_IF_ERROR(release_cached());
            err = cudaMalloc(&ptr, block);
        }
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            return cuda_status(err, "device allocator: allocating " + mib(bytes) + " for " +
                                        std::string(what) + " (in use " + mib(in_use_) + ", peak " +
                                        mib(peak_) + ", reserved " + mib(reserved_) + ")");
        }
        reserved_ += block;
    }
    in_use_ += got;
    ++live_;
    if (in_use_ > peak_) peak_ = in_use_;
    return DeviceBuffer(this, ptr, bytes, got);
}

void DeviceAllocator::give_back(void* ptr, size_t block_bytes) {
    free_.emplace(block_bytes, ptr);
    in_use_ -= block_bytes;
    --live_;
}

Status DeviceAllocator::release_cached() {
    if (free_.empty()) return Status();
    cudaError_t first = cudaSetDevice(device_);
    for (const auto& [bytes, ptr] : free_) {
        const cudaError_t err = cudaFree(ptr);
        if (err != cudaSuccess && first == cudaSuccess) first = err;
        reserved_ -= bytes;
    }
    free_.clear();
    if (first != cudaSuccess) return cuda_status(first, "device allocator: cudaFree");
    return Status();
}

// ---- copies ----

namespace {

Status copy(const Stream& stream, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
            const char* op) {
    if (bytes == 0) return Status();
    if (!dst || !src) return invalid_argument(std::string(op) + ": null pointer");
    const cudaError_t err =
        cudaMemcpyAsync(dst, src, bytes, kind, static_cast<cudaStream_t>(stream.handle()));
    if (err != cudaSuccess) return cuda_status(err, op);
    return Status();
}

}  // namespace

Status copy_to_device(const Stream& stream, void* dst, const void* src, size_t bytes) {
    return copy(stream, dst, src, bytes, cudaMemcpyHostToDevice, "copy_to_device");
}

Status copy_to_host(const Stream& stream, void* dst, const void* src, size_t bytes) {
    return copy(stream, dst, src, bytes, cudaMemcpyDeviceToHost, "copy_to_host");
}

Status copy_on_device(const Stream& stream, void* dst, const void* src, size_t bytes) {
    return copy(stream, dst, src, bytes, cudaMemcpyDeviceToDevice, "copy_on_device");
}

Status fill_zero(const Stream& stream, void* dst, size_t bytes) {
    if (bytes == 0) return Status();
    const cudaError_t err =
        cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(stream.handle()));
    if (err != cudaSuccess) return cuda_status(err, "fill_zero");
    return Status();
}

}  // namespace tandem::kernels::cuda
