#pragma once

// One rank's ring endpoint, its transport chosen at run time: the ranks all-gather their
// placements (host, process, GPU) through the bootstrap, every rank applies
// choose_ring_transport (kernels/ring/ring_select.h) to the same list, and each creates its side
// of the chosen transport: NCCL (GPUs of one host; the NCCL unique id travels through the same
// bootstrap) or UCX (between hosts, or CPU ranks), behind host staging when the ring's data is on
// GPUs. Library tandem_ring_endpoint (links UCX, and NCCL where it is built).

#include <chrono>
#include <memory>
#include <vector>

#include "kernels/ring/bootstrap.h"
#include "kernels/ring/device_ring.h"
#include "kernels/ring/ring_select.h"
#include "kernels/ring/ring_transport.h"
#include "kernels/ring_ucx/ucx_transport.h"

namespace tandem::kernels {

struct RingEndpointOptions {
    RingRankPlacement placement;  // this rank (gpu: the index the scheduler assigned on the host)
    int cuda_device = 0;          // this process's CUDA device of that GPU (NCCL)
    void* nccl_stream = nullptr;  // NcclRingOptions::stream
    // GPU ranks: the ops the device ring runs with; host staging copies through them. Must
    // outlive the endpoint. Required when placement.gpu >= 0.
    RingDeviceOps* ops = nullptr;
    UcxRingOptions ucx;
    std::chrono::milliseconds bootstrap_timeout{30000};
};

struct RingEndpoint {
    RingChoice choice;
    std::vector<RingRankPlacement> placements;  // every rank's, by rank
    std::unique_ptr<RingTransport> base;        // nccl or ucx
    std::unique_ptr<RingTransport> staging;     // host staging over base, or empty
    RingTransport& transport() { return staging ? *staging : *base; }
};

// True when this build has the NCCL transport.
bool ring_nccl_built();

// Collective over `bootstrap` (every rank calls it). A ring whose ranks all live in one process
// is refused (make_in_process_ring / make_cuda_in_process_ring share memory instead).
Result<std::unique_ptr<RingEndpoint>> make_ring_endpoint(RingBootstrap& bootstrap,
                                                         const RingEndpointOptions& options);

}  // namespace tandem::kernels
