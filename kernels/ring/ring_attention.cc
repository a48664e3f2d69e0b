#include "kernels/ring/ring_attention.h"

#include <cstring>
#include <limits>
#include <string>

namespace tandem::kernels {
namespace {

constexpr int kForwardPhasesPerStep = 3;   // post K/V shift, compute, wait K/V shift
constexpr int kBackwardPhasesPerStep = 5;  // post K/V, compute, wait grad, post grad, wait K/V

}  // namespace

RingAttention::RingAttention(const RingAttentionConfig& config, RingTransport& transport)
    : config_(config), transport_(transport), rank_(transport.rank()), ranks_(transport.size()) {
    for (int r = 0; r < ranks_; ++r) {
        shards_.push_back(ring_shard(config.layout, config.seq_len, ranks_, r));
        max_rows_ = std::max(max_rows_, shards_.back().rows);
    }
    block_floats_ = max_rows_ * config.hkv * config.d;
    // Gradient accumulators are allocated by the first backward (forward-only users skip them).
    for (auto* buf : {&kv_[0], &kv_[1]}) buf->assign(static_cast<size_t>(2 * block_floats_), 0.0f);
}

Result<std::unique_ptr<RingAttention>> RingAttention::create(const RingAttentionConfig& config,
                                                             RingTransport& transport) {
    TANDEM_RETURN_IF_ERROR(validate_ring_config(config));
    if (transport.caps().memory != RingMemory::kHost) {
        return invalid_argument("ring attention: the CPU ring needs a host-memory transport, " +
                                transport.caps().name +
                                " moves device memory (DeviceRingAttention in "
                                "kernels/ring/device_ring.h runs on it)");
    }
    std::unique_ptr<RingAttention> ring(new RingAttention(config, transport));
    const size_t bytes = ring->kv_[0].size() * sizeof(float);
    for (auto* buf : {&ring->kv_[0], &ring->kv_[1]}) {
        TANDEM_RETURN_IF_ERROR(transport.prepare(buf->data(), bytes));
    }
    return ring;
}

Status RingAttention::prepare_forward(const float* q, const float* k, const float* v, float* o,
                                      float* lse) {
    const RingShard& mine = shard();
    const int64_t kv_elems = mine.rows * config_.hkv * config_.d;
    if (mine.rows > 0 && (!q || !k || !v || !o || !lse)) {
        return invalid_argument("ring attention: null tensor pointer");
    }
    if (kv_elems > 0) {
        std::memcpy(kv_[0].data(), k, static_cast<size_t>(kv_elems) * sizeof(float));
        std::memcpy(kv_[0].data() + block_floats_, v,
                    static_cast<size_t>(kv_elems) * sizeof(float));
    }
    std::fill(o, o + mine.rows * config_.hq * config_.d, 0.0f);
    std::fill(lse, lse + mine.rows * config_.hq, -std::numeric_limits<float>::infinity());
    q_ = q;
    o_ = o;
    lse_ = lse;
    cur_ = 0;
    op_ = Op::kForward;
    return Status();
}

Status RingAttention::prepare_backward(const float* q, const float* k, const float* v,
                                       const float* o, const float* lse, const float* dout,
                                       float* dq, float* dk, float* dv) {
    const RingShard& mine = shard();
    const int64_t kv_elems = mine.rows * config_.hkv * config_.d;
    if (mine.rows > 0 && (!q || !k || !v || !o || !lse || !dout || !dq || !dk || !dv)) {
        return invalid_argument("ring attention: null tensor pointer");
    }
    if (kv_elems > 0) {
        std::memcpy(kv_[0].data(), k, static_cast<size_t>(kv_elems) * sizeof(float));
        std::memcpy(kv_[0].data() + block_floats_, v,
                    static_cast<size_t>(kv_elems) * sizeof(float));
    }
    if (acc_in_.empty()) {
        const size_t n = kv_[0].size();
        for (auto* buf : {&acc_[0], &acc_[1], &acc_in_}) {
            buf->assign(n, 0.0f);
            TANDEM_RETURN_IF_ERROR(transport_.prepare(buf->data(), n * sizeof(float)));
        }
    }
    std::fill(dq, dq + mine.rows * config_.hq * config_.d, 0.0f);
    q_ = q;
    o_in_ = o;
    lse_in_ = lse;
    dout_ = dout;
    dq_ = dq;
    dk_ = dk;
    dv_ = dv;
    cur_ = 0;
    op_ = Op::kBackward;
    return Status();
}

int RingAttention::phases() const {
    if (op_ == Op::kForward) return kForwardPhasesPerStep * ranks_;
    if (op_ == Op::kBackward) return kBackwardPhasesPerStep * ranks_ + 1;
    return 0;
}

Status RingAttention::run_phase(int phase) {
    if (phase < 0 || phase >= phases()) {
        return invalid_argument("ring attention: phase " + std::to_string(phase) +
                                " outside the prepared operation");
    }
    Status s = op_ == Op::kForward
                   ? forward_phase(phase / kForwardPhasesPerStep, phase % kForwardPhasesPerStep)
                   : backward_phase(phase / kBackwardPhasesPerStep, phase % kBackwardPhasesPerStep);
    if (!s.ok()) {
        op_ = Op::kNone;
        return s.with_context("ring attention rank " + std::to_string(rank_) + " of " +
                              std::to_string(ranks_));
    }
    if (phase == phases() - 1) op_ = Op::kNone;
    return s;
}

Status RingAttention::forward(const float* q, const float* k, const float* v, float* o,
                              float* lse) {
    TANDEM_RETURN_IF_ERROR(prepare_forward(q, k, v, o, lse));
    for (int ph = 0, n = phases(); ph < n; ++ph) TANDEM_RETURN_IF_ERROR(run_phase(ph));
    return Status();
}

Status RingAttention::backward(const float* q, const float* k, const float* v, const float* o,
                               const float* lse, const float* dout, float* dq, float* dk,
                               float* dv) {
    TANDEM_RETURN_IF_ERROR(prepare_backward(q, k, v, o, lse, dout, dq, dk, dv));
    for (int ph = 0, n = phases(); ph < n; ++ph) TANDEM_RETURN_IF_ERROR(run_phase(ph));
    return Status();
}

Status RingAttention::wait(std::optional<RingRequest>& request) {
    if (!deferred_error_.ok()) {  // progress() saw a shift fail
        Status s = deferred_error_;
        deferred_error_ = Status();
        request.reset();
        return s;
    }
    if (!request) return Status();  // already completed by progress()
    const RingRequest r = *request;
    request.reset();
    return transport_.wait(r, config_.timeout);
}

void RingAttention::progress() {
    // Lets transports that progress only when called (UCX) move data between kernel calls. A
    // completed request is consumed here; a failed one is reported by the next wait().
    for (auto* req : {&kv_request_, &grad_request_}) {
        if (!*req) continue;
        Result<bool> done = transport_.poll(**req);
        if (!done.ok()) {
            if (deferred_error_.ok()) deferred_error_ = done.status();
            req->reset();
        } else if (*done) {
            req->reset();
        }
    }
}

Status RingAttention::forward_phase(int step, int kind) {
    const size_t bytes = kv_[0].size() * sizeof(float);
    const bool more = step < ranks_ - 1;
    switch (kind) {
        case 0:  // post the shift that brings the next block while this one is used
            if (more) {
                TANDEM_ASSIGN_OR_RETURN(kv_request_,
                                        transport_.post_shift(kRingChannelKv, kv_[cur_].data(),
                                                              kv_[1 - cur_].data(), bytes));
            }
            return Status();
        case 1:
            return attend_block((rank_ - step + ranks_) % ranks_, kv_[cur_].data());
        default:
            if (more) {
                TANDEM_RETURN_IF_ERROR(wait(kv_request_));
                cur_ = 1 - cur_;
            }
            return Status();
    }
}

Status RingAttention::backward_phase(int step, int kind) {
    const size_t bytes = kv_[0].size() * sizeof(float);
    if (step == ranks_) {  // final phase: the own block's accumulator has come home
        const RingShard& mine = shard();
        const size_t n = static_cast<size_t>(mine.rows * config_.hkv * config_.d);
        const float* home = acc_in_.data();
        if (ranks_ > 1) {
            TANDEM_RETURN_IF_ERROR(wait(grad_request_));
        } else {
            home = acc_[0].data();
        }
        if (n > 0) {
            std::memcpy(dk_, home, n * sizeof(float));
            std::memcpy(dv_, home + block_floats_, n * sizeof(float));
        }
        return Status();
    }
    const bool more = step < ranks_ - 1;
    float* out = acc_[step % 2].data();
    switch (kind) {
        case 0:
            if (more) {
                TANDEM_ASSIGN_OR_RETURN(kv_request_,
                                        transport_.post_shift(kRingChannelKv, kv_[cur_].data(),
                                                              kv_[1 - cur_].data(), bytes));
            }
            return Status();
        case 1:
            std::fill(acc_[step % 2].begin(), acc_[step % 2].end(), 0.0f);
            return backward_block((rank_ - step + ranks_) % ranks_, kv_[cur_].data(), out);
        case 2:  // add what earlier ranks accumulated for this block
            if (step > 0) {
                TANDEM_RETURN_IF_ERROR(wait(grad_request_));
                const float* in = acc_in_.data();
                for (size_t i = 0, n = acc_in_.size(); i < n; ++i) out[i] += in[i];
            }
            return Status();
        case 3:
            if (ranks_ > 1) {
                TANDEM_ASSIGN_OR_RETURN(
                    grad_request_,
                    transport_.post_shift(kRingChannelGrad, out, acc_in_.data(), bytes));
            }
            return Status();
        default:
            if (more) {
                TANDEM_RETURN_IF_ERROR(wait(kv_request_));
                cur_ = 1 - cur_;
            }
            return Status();
    }
}

Status validate_ring_config(const RingAttentionConfig& config) {
    AttentionParams p;
    p.tq = config.seq_len;
    p.tk = config.seq_len;
    p.hq = config.hq;
    p.hkv = config.hkv;
    p.d = config.d;
    p.scale = config.scale;
    return validate(p);
}

AttentionParams ring_block_params(const RingAttentionConfig& config, const RingShard& mine,
                                  const RingShard& theirs) {
    AttentionParams p;
    p.tq = mine.rows;
    p.tk = theirs.rows;
    p.hq = config.hq;
    p.hkv = config.hkv;
    p.d = config.d;
    p.scale = config.scale;
    p.causal = config.causal;
    // A shard is at most two runs of positions (zigzag); the kernel masks both in one call, so
    // each step is one kernel call over all local queries and the whole block.
    if (!mine.segments.empty()) p.q_pos0 = mine.segments[0].pos0;
    if (mine.segments.size() > 1) {
        p.q_split = mine.segments[1].local0;
        p.q_pos1 = mine.segments[1].pos0;
    }
    if (!theirs.segments.empty()) p.k_pos0 = theirs.segments[0].pos0;
    if (theirs.segments.size() > 1) {
        p.k_split = theirs.segments[1].local0;
        p.k_pos1 = theirs.segments[1].pos0;
    }
    return p;
}

bool ring_block_empty(const AttentionParams& p) {
    return p.tq == 0 || p.tk == 0 || (p.causal && key_position(p, 0) > query_position(p, p.tq - 1));
}

AttentionParams RingAttention::block_params(int owner) const {
    return ring_block_params(config_, shard(), shards_[owner]);
}

bool RingAttention::nothing_visible(const AttentionParams& p) const { return ring_block_empty(p); }

Status RingAttention::attend_block(int owner, const float* kv) {
    AttentionParams p = block_params(owner);
    if (nothing_visible(p)) return Status();
    p.accumulate = true;
    TANDEM_RETURN_IF_ERROR(attention_forward_cpu(p, q_, kv, kv + block_floats_, o_, lse_));
    progress();
    return Status();
}

Status RingAttention::backward_block(int owner, const float* kv, float* acc) {
    const AttentionParams p = block_params(owner);
    if (nothing_visible(p)) return Status();
    TANDEM_RETURN_IF_ERROR(attention_backward_cpu(p, q_, kv, kv + block_floats_, o_in_, lse_in_,
                                                  dout_, dq_, acc, acc + block_floats_, true));
    progress();
    return Status();
}

Status run_ring_stepped(std::span<RingAttention* const> ranks) {
    if (ranks.empty()) return Status();
    const int phases = ranks[0]->phases();
    for (size_t i = 0; i < ranks.size(); ++i) {
        if (ranks[i]->rank() != static_cast<int>(i) || ranks[i]->phases() != phases) {
            return invalid_argument("run_ring_stepped: ranks out of order or not prepared alike");
        }
    }
    for (int ph = 0; ph < phases; ++ph) {
        for (RingAttention* r : ranks) TANDEM_RETURN_IF_ERROR(r->run_phase(ph));
    }
    return Status();
}

}  // namespace tandem::kernels
