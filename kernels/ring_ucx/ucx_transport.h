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
};

// Creates this rank's endpoint of a UCX ring. Collective over `bootstrap` (all ranks call it);
// the bootstrap is only used during creation. Each rank's worker is driven by one thread at a
// time (UCS_THREAD_MODE_SERIALIZED); UCX makes progress only inside poll(), wait() and flush(),
// which ring attention calls between kernel invocations.
Result<std::unique_ptr<RingTransport>> make_ucx_ring_transport(RingBootstrap& bootstrap,
                                                               const UcxRingOptions& options = {});

}  // namespace tandem::kernels
