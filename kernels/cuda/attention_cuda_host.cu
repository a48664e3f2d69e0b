// Host staging and timing around attention_forward_cuda (see kernels/attention_cuda_host.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/attention_cuda_host.h"
#include "kernels/half.h"

namespace tandem::kernels {
namespace {

Status cuda_status(const char* what, cudaError_t err) {
    return unavailable(std::string("cuda: ") + what + ": " + cudaGetErrorString(err));
}

// Device allocation released on scope exit; used by one thread.
class DeviceMemory {
public:
    DeviceMemory() = default;
    DeviceMemory(const DeviceMemory&) = delete;
    DeviceMemory& operator=(const DeviceMemory&) = delete;
    ~DeviceMemory() {
        if (ptr_) cudaFree(ptr_);
    }
    Status allocate(size_t bytes) {
        const cudaError_t err = cudaMalloc(&ptr_, bytes > 0 ? bytes : 16);
        return err == cudaSuccess ? Status() : cuda_status("cudaMalloc", err);
    }
    void* get() const { return ptr_; }

private:
    void* ptr_ = nullptr;
};

// CUDA event pair and stream for timing, released on scope exit; used by one thread.
class TimingResources {
public:
    TimingResources(const TimingResources&) = delete;
    TimingResources& operator=(const TimingResources&) = delete;
    TimingResources() = default;
    ~TimingResources() {
        if (start) cudaEventDestroy(start);
        if (stop) cudaEventDestroy(stop);
        if (stream) cudaStreamDestroy(stream);
    }
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
    cudaStream_t stream = nullptr;
};

std::vector<unsigned char> to_dtype(const float* x, size_t n, DType dtype) {
    std::vector<unsigned char> out(n * dtype_bytes(dtype));
    for (size_t i = 0; i < n; ++i) {
        if (dtype == DType::kF32) {
            std::memcpy(&out[i * 4], &x[i], 4);
        } else {
            const uint16_t b =
                dtype == DType::kBF16 ? float_to_bf16_bits(x[i]) : float_to_half_bits(x[i]);
            std::memcpy(&out[i * 2], &b, 2);
        }
    }
    return out;
}

Status upload(DeviceMemory& mem, const std::vector<unsigned char>& bytes) {
    TANDEM_RETURN_IF_ERROR(mem.allocate(bytes.size()));
    const cudaError_t err =
        cudaMemcpy(mem.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
    return err == cudaSuccess ? Status() : cuda_status("cudaMemcpy to device", err);
}

}  // namespace

Status attention_forward_cuda_from_host(const AttentionParams& p, DType dtype, const float* q,
                                        const float* k, const float* v, float* o, float* lse) {
    TANDEM_RETURN_IF_ERROR(validate(p));
    if (p.accumulate) return invalid_argument("attention_forward_cuda_from_host: no accumulate");
    const size_t nq = static_cast<size_t>(p.tq) * p.hq * p.d;
    const size_t nkv = static_cast<size_t>(p.tk) * p.hkv * p.d;
    const size_t nlse = static_cast<size_t>(p.tq) * p.hq;
    DeviceMemory dq, dk, dv, dout, dlse;
    TANDEM_RETURN_IF_ERROR(upload(dq, to_dtype(q, nq, dtype)));
    TANDEM_RETURN_IF_ERROR(upload(dk, to_dtype(k, nkv, dtype)));
    TANDEM_RETURN_IF_ERROR(upload(dv, to_dtype(v, nkv, dtype)));
    TANDEM_RETURN_IF_ERROR(dout.allocate(nq * sizeof(float)));
    TANDEM_RETURN_IF_ERROR(dlse.allocate(nlse * sizeof(float)));
    TANDEM_RETURN_IF_ERROR(attention_forward_cuda(p, dtype, dq.get(), dk.get(), dv.get(),
                                                  static_cast<float*>(dout.get()),
                                                  static_cast<float*>(dlse.get()), nullptr));
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) return cuda_status("attention kernel", err);
    err = cudaMemcpy(o, dout.get(), nq * sizeof(float), cudaMemcpyDeviceToHost);
    if (err == cudaSuccess) {
        err = cudaMemcpy(lse, dlse.get(), nlse * sizeof(float), cudaMemcpyDeviceToHost);
    }
    return err == cudaSuccess ? Status() : cuda_status("cudaMemcpy to host", err);
}

Result<CudaTiming> time_attention_cuda(const AttentionParams& p, DType dtype, int warmup,
                                       int calls) {
    TANDEM_RETURN_IF_ERROR(validate(p));
    if (calls <= 0) return invalid_argument("time_attention_cuda: calls must be > 0");
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    cudaDeviceProp prop{};
    if (err == cudaSuccess) err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) return cuda_status("no CUDA device", err);
    const size_t nq = static_cast<size_t>(p.tq) * p.hq * p.d;
    const size_t nkv = static_cast<size_t>(p.tk) * p.hkv * p.d;
    // Deterministic pseudo-random inputs in [-1, 1).
    std::vector<float> host(std::max(nq, nkv));
    uint32_t state = 12345u;
    for (auto& x : host) {
        state = state * 1664525u + 1013904223u;
        x = static_cast<float>(state >> 8) / 8388608.0f - 1.0f;
    }
    DeviceMemory dq, dk, dv, dout, dlse;
    TANDEM_RETURN_IF_ERROR(upload(dq, to_dtype(host.data(), nq, dtype)));
    TANDEM_RETURN_IF_ERROR(upload(dk, to_dtype(host.data(), nkv, dtype)));
    TANDEM_RETURN_IF_ERROR(upload(dv, to_dtype(host.data(), nkv, dtype)));
    TANDEM_RETURN_IF_ERROR(dout.allocate(nq * sizeof(float)));
    TANDEM_RETURN_IF_ERROR(dlse.allocate(static_cast<size_t>(p.tq) * p.hq * sizeof(float)));
    TimingResources t;
    err = cudaStreamCreate(&t.stream);
    if (err == cudaSuccess) err = cudaEventCreate(&t.start);
    if (err == cudaSuccess) err = cudaEventCreate(&t.stop);
    if (err != cudaSuccess) return cuda_status("creating events", err);
    auto run = [&] {
        return attention_forward_cuda(p, dtype, dq.get(), dk.get(), dv.get(),
                                      static_cast<float*>(dout.get()),
                                      static_cast<float*>(dlse.get()), t.stream);
    };
    for (int i = 0; i < warmup; ++i) TANDEM_RETURN_IF_ERROR(run());
    cudaEventRecord(t.start, t.stream);
    for (int i = 0; i < calls; ++i) TANDEM_RETURN_IF_ERROR(run());
    cudaEventRecord(t.stop, t.stream);
    err = cudaEventSynchronize(t.stop);
    if (err != cudaSuccess) return cuda_status("attention kernel", err);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, t.start, t.stop);
    return CudaTiming{ms * 1e-3 / calls, calls, prop.name};
}

}  // namespace tandem::kernels
