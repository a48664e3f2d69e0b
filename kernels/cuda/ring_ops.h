#pragma once

// The CUDA RingDeviceOps of the device ring (kernels/ring/device_ring.h): block attention with
// attention_forward_cuda, the merge kernels of kernels/cuda/attention_merge.h, memory from the
// actor's DeviceAllocator, everything on the actor's Stream.

#include <memory>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda/runtime.h"
#include "kernels/ring/device_ring.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels::cuda {

// `stream` and `allocator` (one actor's, same device) must outlive the ops. dtype: of q, k, v.
std::unique_ptr<RingDeviceOps> make_cuda_ring_ops(const Stream& stream, DeviceAllocator& allocator,
                                                  DType dtype);

// The ranks of a device-memory ring whose ranks are threads of this process on GPUs (one shared
// GPU, or peers): the in-process ring with a synchronous cudaMemcpy (device to device, peer
// access when the runtime allows) per matched shift, and order_after waiting for the rank's
// stream. Host-driven: every shift blocks its second poster for the copy, so it does not overlap
// compute the way NCCL does; meant for several ranks on one GPU (tests, the benchmark).
std::vector<std::unique_ptr<RingTransport>> make_cuda_in_process_ring(int ranks);

}  // namespace tandem::kernels::cuda
