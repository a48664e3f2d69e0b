#pragma once

// Ring attention prefill and sharded decode on device memory: the device twins of
// kernels/ring/ring_attention.h (forward, backward) and kernels/ring/sharded_decode.h, over a
// transport that moves device memory (RingCaps::memory == kCuda: NCCL, the in-process ring of
// threads sharing a GPU, or a host transport behind HostStagedRing).
//
// Every tensor, every travelling K/V block and every partial lives in the memory of a
// RingDeviceOps, and all work is enqueued on its one stream (the actor's). The transport is
// ordered against that stream with RingTransport::order_after / order_before, so NCCL shifts run
// on their own stream and overlap the block attention:
//
//   step s:  order_after(stream)           the shift may overwrite the block step s - 1 read
//            post_shift(kv[cur] -> kv[1-cur])
//            attend(block of rank r - s)   enqueued; runs while the next block travels
//            order_before(shift, stream)   step s + 1's attention waits for its block
//
// Per-block attention is attention_forward_cuda in accumulate mode (the in-kernel log-sum-exp
// merge, as the CPU ring); decode partials are merged by the device merge kernel
// (kernels/cuda/attention_merge.h) in rank order, so every rank holds the same result.
// Calls return after enqueueing and after every shift they posted has completed on the host's
// view (the requests are released); the results are ready when the stream reaches that point.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ring/ring_attention.h"
#include "kernels/ring/ring_layout.h"
#include "kernels/ring/ring_transport.h"
#include "kernels/ring/sharded_decode.h"

namespace tandem::kernels {

// The device work of the ring, enqueued on one stream. CUDA: kernels/cuda/ring_ops.h
// (make_cuda_ring_ops); a host fake on the CPU kernels: tests/fakes/host_ring_ops.h.
// Pointers are in the ops' memory space unless named host.
class RingDeviceOps {
public:
    virtual ~RingDeviceOps() = default;
    virtual std::string name() const = 0;
    virtual DType dtype() const = 0;   // of q, k, v and of the travelling K/V blocks
    virtual void* stream() const = 0;  // a cudaStream_t: the one the transport is ordered with
    // Memory in the ops' space, freed when the last owner drops it; `what` names it in errors.
    virtual Result<std::shared_ptr<void>> allocate(size_t bytes, std::string_view what) = 0;
    virtual Status copy(void* dst, const void* src, size_t bytes) = 0;
    // copy_to_host is complete when it returns (it waits for the stream); copy_from_host may
    // reuse `host` as soon as it returns.
    virtual Status copy_to_host(void* host, const void* src, size_t bytes) = 0;
    virtual Status copy_from_host(void* dst, const void* host, size_t bytes) = 0;
    // The empty partial: o := 0 [o_elems], lse := -inf [lse_elems].
    virtual Status clear_partial(float* o, int64_t o_elems, float* lse, int64_t lse_elems) = 0;
    // attention_forward_cuda (p.accumulate as given).
    virtual Status attend(const AttentionParams& p, const void* q, const void* k, const void* v,
                          float* o, float* lse) = 0;
    // The table of sharded decode (slot r at table + r * partial_elems(n, hq, d) holds
    // [o [n, hq, d] | lse [hq, n]]): o, lse := slot 0 (+) ... (+) slot parts - 1, the merge of
    // kernels/merge.h in rank order.
    virtual Status merge_partials(const float* table, int parts, int64_t n, int hq, int d, float* o,
                                  float* lse) = 0;
    // The attention backward of one block (kernels/cuda/attention_backward.h; p.accumulate
    // false): dq, dk, dv fp32, added to what they hold when accumulate_grads.
    virtual Status attend_backward(const AttentionParams& p, const void* q, const void* k,
                                   const void* v, const float* o, const float* lse,
                                   const float* dout, float* dq, float* dk, float* dv,
                                   bool accumulate_grads) = 0;
    // dst[i] += src[i] for i < n (fp32).
    virtual Status add(float* dst, const float* src, int64_t n) = 0;
};

// One rank's side of device ring attention (forward). Driven by one thread; the transport and
// the ops must outlive it. Neither copyable nor movable.
class DeviceRingAttention {
public:
    // Fails when the transport moves host memory (use RingAttention, or HostStagedRing).
    static Result<std::unique_ptr<DeviceRingAttention>> create(const RingAttentionConfig& config,
                                                               RingTransport& transport,
                                                               RingDeviceOps& ops);
    DeviceRingAttention(const DeviceRingAttention&) = delete;
    DeviceRingAttention& operator=(const DeviceRingAttention&) = delete;

    const RingShard& shard() const { return shards_[rank_]; }
    int rank() const { return rank_; }
    int ranks() const { return ranks_; }

    // Local rows in the ops' memory: q [shard().rows, hq, d], k and v [shard().rows, hkv, d] of
    // ops.dtype(); o [shard().rows, hq, d] and lse [hq, shard().rows] fp32. Collective.
    Status forward(const void* q, const void* k, const void* v, float* o, float* lse);
    // RingAttention::backward's schedule on the device: the K/V blocks travel as in forward and
    // with each a dK/dV accumulator (fp32), added to on every rank and brought home by one last
    // shift; dq stays local. o, lse from forward, dout [rows, hq, d]; dq [rows, hq, d], dk and
    // dv [rows, hkv, d] fp32 outputs. Collective.
    Status backward(const void* q, const void* k, const void* v, const float* o, const float* lse,
                    const float* dout, float* dq, float* dk, float* dv);

private:
    DeviceRingAttention(const RingAttentionConfig& config, RingTransport& transport,
                        RingDeviceOps& ops);
    Status run_forward(const void* q, float* o, float* lse);
    Status run_backward(const void* q, const float* o, const float* lse, const float* dout,
                        float* dq, float* dk, float* dv);
    Status load_own_block(const void* k, const void* v);
    Status release(std::vector<RingRequest>& posted, bool poll_only);

    const RingAttentionConfig config_;
    RingTransport& transport_;
    RingDeviceOps& ops_;
    const int rank_;
    const int ranks_;
    std::vector<RingShard> shards_;
    size_t half_bytes_ = 0;         // one K (or V) half of a travelling block
    std::shared_ptr<void> kv_[2];   // travelling [K | V] blocks, double-buffered
    std::shared_ptr<void> acc_[3];  // [dK | dV] fp32: two outgoing, one incoming (backward)
    size_t acc_half_floats_ = 0;    // one dK (or dV) half of an accumulator
};

// One rank's shard of the KV cache of one sequence in the ops' memory: DecodeShard's append
// policy (block round-robin) with a fixed capacity. Owned by one thread.
class DeviceDecodeShard {
public:
    static Result<std::unique_ptr<DeviceDecodeShard>> create(const DecodeConfig& config, int rank,
                                                             int ranks, int64_t capacity_tokens,
                                                             RingDeviceOps& ops);
    int rank() const { return rank_; }
    int ranks() const { return ranks_; }
    int64_t tokens() const { return tokens_; }
    int64_t capacity() const { return capacity_; }
    const DecodeConfig& config() const { return config_; }
    RingDeviceOps& ops() const { return ops_; }
    int owner(int64_t pos) const;

    // k, v: [n, hkv, d] of ops.dtype() in the ops' memory (as DecodeShard::store / append).
    Status store(int64_t pos0, int64_t n, const void* k, const void* v);
    Status append(int64_t pos0, int64_t n, const void* k, const void* v);
    // This rank's partial of queries q [n, hq, d] at q_pos0 ..: o [n, hq, d], lse [hq, n].
    Status attend(const void* q, int64_t n, int64_t q_pos0, float* o, float* lse) const;

private:
    struct Run {
        int64_t pos0;
        int64_t rows;
        int64_t offset;
    };
    DeviceDecodeShard(const DecodeConfig& config, int rank, int ranks, int64_t capacity,
                      RingDeviceOps& ops)
        : config_(config), rank_(rank), ranks_(ranks), capacity_(capacity), ops_(ops) {}
    size_t row_bytes() const;

    DecodeConfig config_;
    int rank_;
    int ranks_;
    int64_t capacity_;
    RingDeviceOps& ops_;
    int64_t tokens_ = 0;
    std::vector<Run> runs_;
    std::shared_ptr<void> k_, v_;  // [capacity, hkv, d]
};

// The collective half of a device decode step (allgather_merge_partials on device memory):
// `table` holds `transport.size()` slots of partial_elems(n, hq, d) floats in the ops' memory, this
// rank's slot filled. P - 1 shifts on kRingChannelPartial, then the merge kernel in rank order.
Status device_allgather_merge_partials(RingTransport& transport, RingDeviceOps& ops, float* table,
                                       int64_t n, int hq, int d, float* o, float* lse,
                                       std::chrono::milliseconds timeout);

// One decode step on every rank: the local partial, the all-gather, the merge (o [n, hq, d],
// lse [hq, n] in the ops' memory; the same on every rank).
Status device_sharded_decode_attend(const DeviceDecodeShard& shard, RingTransport& transport,
                                    const void* q, int64_t n, int64_t q_pos0, float* o, float* lse,
                                    std::chrono::milliseconds timeout);

// A device-memory face for a host-memory transport (UCX between hosts with a UCX that cannot
// move CUDA memory): a shift copies the send buffer to host staging (waiting for the stream),
// shifts the staging buffers, and copies the received bytes to the device buffer in
// order_before() (or in wait() / poll(), whichever comes first). Each posted shift holds its own
// host staging (pageable, freed when it is released). Owns neither the inner transport nor the
// ops, which must outlive it.
std::unique_ptr<RingTransport> make_host_staged_ring(RingTransport& inner, RingDeviceOps& ops);

}  // namespace tandem::kernels
