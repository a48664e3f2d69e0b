#pragma once

// The CUDA ContextParallelRankOps (common/gpu/context_parallel_device.h): one rank's layer
// arithmetic with the device model's weights and kernels/cuda ops (bf16 GEMM inputs and q/k/v,
// fp32 residual stream, attention output and logits, the ops DeviceModel's forward runs), and the
// ring ops of kernels/cuda/ring_ops.h in bf16. No CUDA headers needed by callers. Never run on a
// device (no device was lent when it was written).

#include <memory>

#include "common/gpu/context_parallel_device.h"
#include "common/gpu/device_model.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runtime.h"

namespace tandem::gpu {

// `model` (loaded), `alloc`, `gemm` and `stream` (one actor's, one device) must outlive the ops.
Result<std::unique_ptr<ContextParallelRankOps>> make_cuda_context_parallel_ops(
    DeviceModel& model, kernels::cuda::DeviceAllocator& alloc, kernels::cuda::Gemm& gemm,
    const kernels::cuda::Stream& stream);

}  // namespace tandem::gpu
