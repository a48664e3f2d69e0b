#pragma once

// UCX ring transport: ranks in different processes or on different nodes. Tag-matched
// ucp_tag_send_nbx / ucp_tag_recv_nbx between neighbours, host memory. Lives in its own library
// (tandem_ring_ucx) so tandem_kernels does not link UCX.

#include <chrono>
#include <memory>

#include "kernels/ring/bootstrap.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

struct UcxRingOptions {
    std::chrono::milliseconds bootstrap_timeout{30000};  // for exchanging worker addresses
    // A thread that drives the UCX worker while the caller computes, so rendezvous transfers of
    // large K/V blocks overlap the attention kernel (the worker then runs in
    // UCS_THREAD_MODE_MULTI). Without it UCX progresses only inside poll(), wait() and flush().
    bool progress_thread = true;
    std::chrono::microseconds progress_idle_sleep{50};  // back-off when a progress pass was idle
};

// Creates this rank's endpoint of a UCX ring. Collective over `bootstrap` (all ranks call it);
// the bootstrap is only used during creation. The RingTransport methods are called by one thread
// at a time; the optional progress thread only calls ucp_worker_progress.
Result<std::unique_ptr<RingTransport>> make_ucx_ring_transport(RingBootstrap& bootstrap,
                                                               const UcxRingOptions& options = {});

}  // namespace tandem::kernels
