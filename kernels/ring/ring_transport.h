#pragma once

// The ring transport: how ring attention moves K/V blocks (and their gradients) between ranks.
// Backends: in-process (threads, kernels/ring/in_process_transport.h), UCX (processes or nodes,
// kernels/ring_ucx/) and NCCL (GPUs, kernels/ring_nccl/). The ring code never names a backend.
//
// The one collective is a *shift*: every rank sends a buffer to rank + 1 and receives one from
// rank - 1 (mod size). Life cycle: prepare() buffers once (optional), post_shift() many times,
// poll() or wait() each request, flush() before tearing down.
//
// Contract, checked by the contract suite every backend runs:
// - Every rank posts the same sequence of shifts (same channels, same byte counts, same order);
//   the k-th shift of rank r receives what rank r - 1 sent in its k-th shift. Channels name the
//   streams of data (K/V, gradients, partials) for backends that tag messages (UCX); a backend
//   that orders everything on one stream (NCCL) relies on the common order alone.
// - post_shift never waits for a peer, so posting the receive and the send together in one call
//   is what makes the ring deadlock-free: no rank can block in a send that its neighbour will
//   only match after its own send. Backends order the two sides internally (UCX posts the receive
//   first, NCCL groups them).
// - The send buffer must stay unchanged, and the receive buffer untouched, until the request
//   completes. A shift of a rank with itself (size 1) copies send to recv.
// - wait() returns deadline_exceeded after `timeout` and leaves the request posted; waiting again
//   may still complete it. Destroying a transport cancels what is still posted.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace tandem::kernels {

enum class RingMemory { kHost, kCuda };

struct RingCaps {
    std::string name;                       // "in_process", "ucx", "nccl"
    RingMemory memory = RingMemory::kHost;  // where shift buffers must live
    int max_in_flight = 0;                  // posted, not yet completed shifts per rank
    bool cross_process = false;             // ranks may live in different processes or nodes
};

// Handle of a posted shift. Valid until wait() returns, or poll() reports it done.
struct RingRequest {
    uint64_t id = 0;
};

// One rank's endpoint of a ring. Not thread-safe: one thread drives a rank at a time; different
// ranks may be driven by different threads.
class RingTransport {
public:
    virtual ~RingTransport() = default;

    virtual RingCaps caps() const = 0;
    virtual int rank() const = 0;
    virtual int size() const = 0;

    // Declares memory that later shifts send from or receive into, so backends that register
    // memory (UCX) do it once. Optional: unprepared buffers work, possibly slower.
    virtual Status prepare(void* base, size_t bytes) = 0;

    // Posts one shift on `channel`: `bytes` from `send` to rank + 1, `bytes` into `recv` from
    // rank - 1. Never blocks on a peer.
    virtual Result<RingRequest> post_shift(uint32_t channel, const void* send, void* recv,
                                           size_t bytes) = 0;

    // Makes progress; true when both sides of the shift are complete (the request is then
    // released). An error also releases it.
    virtual Result<bool> poll(RingRequest request) = 0;

    // Blocks until the shift completes, fails, or `timeout` passes (deadline_exceeded; the
    // request stays posted).
    virtual Status wait(RingRequest request, std::chrono::milliseconds timeout) = 0;

    // Waits for every posted shift of this rank.
    virtual Status flush(std::chrono::milliseconds timeout) = 0;

    // Stream ordering, for device-memory transports (caps().memory == kCuda) and the device ring
    // (kernels/ring/device_ring.h). `stream` is a cudaStream_t (nullptr: the legacy default one).
    // order_after: the shifts posted from now on start after the work enqueued on `stream` so
    // far (the kernels that write their send buffers and last read their receive buffers).
    // order_before: the work enqueued on `stream` from now on starts after `request`'s transfer;
    // the request stays posted (poll() or wait() still release it). NCCL orders on the device
    // without blocking the host; a host-driven backend may block until the ordering holds. A
    // host-memory transport has no streams: both return invalid_argument.
    virtual Status order_after(void* stream);
    virtual Status order_before(RingRequest request, void* stream);
};

inline Status RingTransport::order_after(void*) {
    return invalid_argument("ring transport " + caps().name +
                            ": moves host memory, it has no stream to order after");
}
inline Status RingTransport::order_before(RingRequest, void*) {
    return invalid_argument("ring transport " + caps().name +
                            ": moves host memory, it has no stream to order before");
}

// Shift channels used by the ring algorithms in kernels/ring.
inline constexpr uint32_t kRingChannelKv = 0;       // K/V blocks (prefill, backward)
inline constexpr uint32_t kRingChannelGrad = 1;     // dK/dV accumulators travelling home
inline constexpr uint32_t kRingChannelPartial = 2;  // decode partials (all-gather)

}  // namespace tandem::kernels
