// CUDA RingDeviceOps (kernels/cuda/ring_ops.h).
#include "kernels/cuda/ring_ops.h"

#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda/attention_backward.h"
#include "kernels/cuda/attention_merge.h"
#include "kernels/ring/in_process_transport.h"

namespace tandem::kernels::cuda {
namespace {

class CudaRingOps final : public RingDeviceOps {
public:
    CudaRingOps(const Stream& stream, DeviceAllocator& allocator, DType dtype)
        : stream_(stream), allocator_(allocator), dtype_(dtype) {}

    std::string name() const override {
        return std::string("cuda:") + std::to_string(stream_.device()) + " " + dtype_name(dtype_);
    }
    DType dtype() const override { return dtype_; }
    void* stream() const override { return stream_.handle(); }

    Result<std::shared_ptr<void>> allocate(size_t bytes, std::string_view what) override {
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer buf, allocator_.allocate(bytes, what));
        auto holder = std::make_shared<DeviceBuffer>(std::move(buf));
        return std::shared_ptr<void>(holder, holder->as<void>());
    }
    Status copy(void* dst, const void* src, size_t bytes) override {
        return copy_on_device(stream_, dst, src, bytes);
    }
    Status copy_to_host(void* host, const void* src, size_t bytes) override {
        TANDEM_RETURN_IF_ERROR(cuda::copy_to_host(stream_, host, src, bytes));
        return stream_.synchronize("ring ops: copy to host");
    }
    Status copy_from_host(void* dst, const void* host, size_t bytes) override {
        return copy_to_device(stream_, dst, host, bytes);
    }
    Status clear_partial(float* o, int64_t o_elems, float* lse, int64_t lse_elems) override {
        return clear_attention_partial(stream_, o, o_elems, lse, lse_elems);
    }
    Status attend(const AttentionParams& p, const void* q, const void* k, const void* v, float* o,
                  float* lse) override {
        return attention_forward_cuda(p, dtype_, q, k, v, o, lse, stream_.handle());
    }
    Status merge_partials(const float* table, int parts, int64_t n, int hq, int d, float* o,
                          float* lse) override {
        return merge_attention_table(stream_, table, parts, partial_elems(n, hq, d), n, hq, d, o,
                                     lse);
    }

    Status attend_backward(const AttentionParams& p, const void* q, const void* k, const void* v,
                           const float* o, const float* lse, const float* dout, float* dq,
                           float* dk, float* dv, bool accumulate_grads) override {
        return attention_backward(stream_, p, dtype_, q, k, v, o, lse, dout, dq, dk, dv,
                                  accumulate_grads);
    }
    Status add(float* dst, const float* src, int64_t n) override {
        return accumulate_f32(stream_, dst, src, n);
    }

private:
    const Stream& stream_;
    DeviceAllocator& allocator_;
    const DType dtype_;
};

}  // namespace

std::unique_ptr<RingDeviceOps> make_cuda_ring_ops(const Stream& stream, DeviceAllocator& allocator,
                                                  DType dtype) {
    return std::make_unique<CudaRingOps>(stream, allocator, dtype);
}

std::vector<std::unique_ptr<RingTransport>> make_cuda_in_process_ring(int ranks) {
    InProcessRingOptions o;
    o.memory = RingMemory::kCuda;
    o.name = "in_process_cuda";
    o.copy = [](void* dst, const void* src, size_t bytes) -> Status {
        cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cudaStreamLegacy);
        if (err == cudaSuccess) err = cudaStreamSynchronize(cudaStreamLegacy);
        if (err != cudaSuccess) return cuda_status(err, "in-process cuda ring: cudaMemcpyAsync");
        return Status();
    };
    o.sync_stream = [](void* stream) -> Status {
        const cudaError_t err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
        if (err != cudaSuccess) return cuda_status(err, "in-process cuda ring: stream synchronize");
        return Status();
    };
    return make_in_process_ring(ranks, o);
}

}  // namespace tandem::kernels::cuda
