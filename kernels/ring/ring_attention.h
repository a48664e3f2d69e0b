#pragma once

// Ring attention prefill (forward and backward) on the CPU kernels, over any host-memory
// RingTransport.
//
// Forward: every rank holds the rows of its shard (kernels/ring/ring_layout.h) of q, k and v. K/V
// blocks travel rank -> rank + 1; at step s rank r holds the block of rank r - s, attends its
// queries to it (merging into o and lse by log-sum-exp, in place) while the next block is already
// in flight (double buffering: the shift for step s + 1 is posted before the compute of step s).
//
// Backward: the K/V blocks travel the same way, and with each block a dK/dV accumulator. At step s
// rank r computes the block's contribution into a fresh buffer, adds the accumulator that arrived
// from rank r - 1 (which left there after r - 1's compute, so its transfer overlapped this one),
// and sends the sum on. After P steps one more shift brings every accumulator home to its owner.
// dQ stays local. All accumulators are fp32.
//
// Results are bitwise reproducible for a given P and layout: every sum has a fixed order.

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ring/ring_layout.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

struct RingAttentionConfig {
    int64_t seq_len = 0;  // T: tokens over all ranks
    int hq = 0;
    int hkv = 0;
    int d = 0;
    float scale = 0.0f;
    bool causal = false;
    RingLayout layout = RingLayout::kZigzag;
    std::chrono::milliseconds timeout{60000};  // for each wait on a neighbour
};

// Checks the shapes and scale of `config` (as validate() does for one attention call).
Status validate_ring_config(const RingAttentionConfig& config);

// The attention call of one ring step: the queries of `mine` against the block of `theirs` (one
// kernel call; a zigzag shard's two runs are masked through q_split / k_split). Shared by the CPU
// ring and the device ring (kernels/ring/device_ring.h).
AttentionParams ring_block_params(const RingAttentionConfig& config, const RingShard& mine,
                                  const RingShard& theirs);
// True when the step attends nothing (an empty shard, or every key after every query).
bool ring_block_empty(const AttentionParams& p);

// One rank's side of ring attention. Driven by one thread at a time; holds a reference to its
// transport, which must outlive it. Neither copyable nor movable.
class RingAttention {
public:
    static Result<std::unique_ptr<RingAttention>> create(const RingAttentionConfig& config,
                                                         RingTransport& transport);
    RingAttention(const RingAttention&) = delete;
    RingAttention& operator=(const RingAttention&) = delete;

    const RingShard& shard() const { return shards_[rank_]; }
    int rank() const { return rank_; }
    int ranks() const { return ranks_; }

    // Local rows: q, o, dout, dq [shard().rows, hq, d]; k, v, dk, dv [shard().rows, hkv, d];
    // lse [hq, shard().rows]. Collective: every rank of the ring calls the same operation.
    Status forward(const float* q, const float* k, const float* v, float* o, float* lse);
    Status backward(const float* q, const float* k, const float* v, const float* o,
                    const float* lse, const float* dout, float* dq, float* dk, float* dv);

    // Stepped execution of the same operations, for driving all ranks of an in-process ring from
    // one thread (run_ring_stepped): prepare, then run phases 0 .. phases() - 1 in order. A phase
    // only waits for shifts that every rank posted in an earlier phase.
    Status prepare_forward(const float* q, const float* k, const float* v, float* o, float* lse);
    Status prepare_backward(const float* q, const float* k, const float* v, const float* o,
                            const float* lse, const float* dout, float* dq, float* dk, float* dv);
    int phases() const;
    Status run_phase(int phase);

private:
    enum class Op { kNone, kForward, kBackward };
    RingAttention(const RingAttentionConfig& config, RingTransport& transport);

    Status forward_phase(int step, int kind);
    Status backward_phase(int step, int kind);
    AttentionParams block_params(int owner) const;
    bool nothing_visible(const AttentionParams& p) const;
    Status attend_block(int owner, const float* kv);
    Status backward_block(int owner, const float* kv, float* acc);
    Status wait(std::optional<RingRequest>& request);
    void progress();

    const RingAttentionConfig config_;
    RingTransport& transport_;
    const int rank_;
    const int ranks_;
    std::vector<RingShard> shards_;  // every rank's shard
    int64_t max_rows_ = 0;
    int64_t block_floats_ = 0;   // one K (or V) half of a travelling buffer
    std::vector<float> kv_[2];   // travelling [K | V] buffers, double-buffered
    std::vector<float> acc_[2];  // outgoing [dK | dV] accumulators, double-buffered
    std::vector<float> acc_in_;  // incoming [dK | dV] accumulator
    int cur_ = 0;
    std::optional<RingRequest> kv_request_;
    std::optional<RingRequest> grad_request_;
    Status deferred_error_;  // a shift that failed inside progress()

    Op op_ = Op::kNone;
    const float* q_ = nullptr;
    const float* o_in_ = nullptr;
    const float* lse_in_ = nullptr;
    const float* dout_ = nullptr;
    float* o_ = nullptr;
    float* lse_ = nullptr;
    float* dq_ = nullptr;
    float* dk_ = nullptr;
    float* dv_ = nullptr;
};

// Runs the prepared operation of every rank of one ring, phase by phase, on the calling thread
// (ranks[i] must be rank i). Used to measure ring overhead without parallelism.
Status run_ring_stepped(std::span<RingAttention* const> ranks);

}  // namespace tandem::kernels
