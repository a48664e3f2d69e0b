#pragma once

// In-process ring transport: ranks are threads (or one thread stepping every rank) of one
// process, sharing memory. Used by tests, the tandem-attn tool and CPU runs.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

// A device-memory in-process ring (threads sharing one GPU: kernels/cuda/ring_ops.h, or a host
// fake that claims device memory in tests): `copy` moves the bytes of a matched shift (complete
// when it returns; an error fails the shift on both sides), `sync_stream` makes the work enqueued
// on a stream complete (order_after calls it); order_before blocks until the shift has been
// copied, at most `order_timeout`.
struct InProcessRingOptions {
    RingMemory memory = RingMemory::kHost;
    std::string name = "in_process";
    std::function<Status(void* dst, const void* src, size_t bytes)> copy;  // empty: memcpy
    std::function<Status(void* stream)> sync_stream;                       // empty: nothing to wait
    std::chrono::milliseconds order_timeout{60000};
};

// Makes the `size` ranks of one in-process ring; element r is rank r. The ranks share state
// (kept alive until the last one is destroyed) and may be driven from different threads. A shift
// is copied by whichever rank posts the second side of it, so post_shift never blocks and a
// single thread can step all ranks in turn.
std::vector<std::unique_ptr<RingTransport>> make_in_process_ring(int size);
std::vector<std::unique_ptr<RingTransport>> make_in_process_ring(
    int size, const InProcessRingOptions& options);

}  // namespace tandem::kernels
