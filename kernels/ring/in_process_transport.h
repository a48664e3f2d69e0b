#pragma once

// In-process ring transport: ranks are threads (or one thread stepping every rank) of one
// process, sharing memory. Used by tests, the tandem-attn tool and CPU runs.

#include <memory>
#include <vector>

#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

// Makes the `size` ranks of one in-process ring; element r is rank r. The ranks share state
// (kept alive until the last one is destroyed) and may be driven from different threads. A shift
// is copied by whichever rank posts the second side of it, so post_shift never blocks and a
// single thread can step all ranks in turn.
std::vector<std::unique_ptr<RingTransport>> make_in_process_ring(int size);

}  // namespace tandem::kernels
