// Run-time choice and creation of a rank's ring transport (kernels/ring/ring_endpoint.h).
#include "kernels/ring/ring_endpoint.h"

#include <string>

#if TANDEM_RING_ENDPOINT_NCCL
#include "kernels/ring_nccl/nccl_transport.h"
#endif

namespace tandem::kernels {

bool ring_nccl_built() { return TANDEM_RING_ENDPOINT_NCCL != 0; }

Result<std::unique_ptr<RingEndpoint>> make_ring_endpoint(RingBootstrap& bootstrap,
                                                         const RingEndpointOptions& options) {
    const std::string who = "ring endpoint rank " + std::to_string(bootstrap.rank());
    if (options.placement.gpu >= 0 && !options.ops) {
        return invalid_argument(who + ": on GPU " + std::to_string(options.placement.gpu) +
                                " but no RingDeviceOps given");
    }
    auto all =
        bootstrap.allgather(encode_ring_placement(options.placement), options.bootstrap_timeout);
    if (!all.ok()) return all.status().with_context(who + ": sharing placements");
    auto ep = std::make_unique<RingEndpoint>();
    for (size_t r = 0; r < all->size(); ++r) {
        TANDEM_ASSIGN_OR_RETURN(RingRankPlacement p,
                                decode_ring_placement((*all)[r], static_cast<int>(r)));
        ep->placements.push_back(std::move(p));
    }
    RingSelectOptions select;
    select.nccl_available = ring_nccl_built();
    TANDEM_ASSIGN_OR_RETURN(ep->choice, choose_ring_transport(ep->placements, select));
    switch (ep->choice.backend) {
        case RingBackend::kInProcess:
            return invalid_argument(who + ": " + ep->choice.reason +
                                    ": make the ranks with make_in_process_ring (shared memory)");
        case RingBackend::kNccl: {
#if TANDEM_RING_ENDPOINT_NCCL
            NcclRingOptions o;
            o.device = options.cuda_device;
            o.stream = options.nccl_stream;
            o.bootstrap_timeout = options.bootstrap_timeout;
            auto t = make_nccl_ring_transport(bootstrap, o);
            if (!t.ok()) return t.status().with_context(who + ": " + ep->choice.reason);
            ep->base = std::move(t).value();
            return ep;
#else
            return internal_error(who + ": chose nccl in a build without it");
#endif
        }
        case RingBackend::kUcx: {
            auto t = make_ucx_ring_transport(bootstrap, options.ucx);
            if (!t.ok()) return t.status().with_context(who + ": " + ep->choice.reason);
            ep->base = std::move(t).value();
            if (ep->choice.host_staging)
                ep->staging = make_host_staged_ring(*ep->base, *options.ops);
            return ep;
        }
    }
    return internal_error(who + ": unknown ring backend");
}

}  // namespace tandem::kernels
