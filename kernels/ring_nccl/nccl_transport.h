#pragma once

// NCCL ring transport: ranks are GPUs (one per rank), shift buffers are device memory. Built only
// with CUDA (target tandem_ring_nccl). Callers need no CUDA header: the stream is a `void*`.

#include <chrono>
#include <memory>

#include "kernels/ring/bootstrap.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

struct NcclRingOptions {
    int device = 0;  // this rank's CUDA device
    // cudaStream_t for the transfers: a shift is ordered after the work already on it. nullptr:
    // the transport owns a stream and orders each shift after the legacy default stream's work.
    void* stream = nullptr;
    std::chrono::milliseconds bootstrap_timeout{30000};
};

// Creates this rank's endpoint. Collective over `bootstrap` (rank 0 makes the NCCL unique id,
// every rank joins the communicator). A shift is one ncclGroupStart / ncclSend / ncclRecv /
// ncclGroupEnd on the stream followed by an event, so posting never blocks the host and the
// grouped pair cannot deadlock; poll() and wait() query the event. A ring of one rank copies
// device to device. Each call selects `device` on the calling thread first.
Result<std::unique_ptr<RingTransport>> make_nccl_ring_transport(RingBootstrap& bootstrap,
                                                                const NcclRingOptions& options);

}  // namespace tandem::kernels
