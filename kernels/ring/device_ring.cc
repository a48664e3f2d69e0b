// Device ring attention and sharded decode: the schedule of kernels/ring/device_ring.h.
#include "kernels/ring/device_ring.h"

#include <algorithm>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace tandem::kernels {
namespace {

constexpr std::chrono::milliseconds kStagedOrderTimeout{60000};

Status need_device_transport(const RingTransport& transport, const char* who) {
    if (transport.caps().memory != RingMemory::kCuda) {
        return invalid_argument(std::string(who) + ": the transport " + transport.caps().name +
                                " moves host memory; the device ring needs a device-memory one "
                                "(nccl, or a host transport behind make_host_staged_ring)");
    }
    return Status();
}

Status non_null(const void* p, const char* what) {
    if (!p) return invalid_argument(std::string("device ring: null ") + what);
    return Status();
}

char* bytes_at(const std::shared_ptr<void>& buf, size_t offset) {
    return static_cast<char*>(buf.get()) + offset;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Ring prefill

DeviceRingAttention::DeviceRingAttention(const RingAttentionConfig& config,
                                         RingTransport& transport, RingDeviceOps& ops)
    : config_(config),
      transport_(transport),
      ops_(ops),
      rank_(transport.rank()),
      ranks_(transport.size()) {
    int64_t max_rows = 0;
    for (int r = 0; r < ranks_; ++r) {
        shards_.push_back(ring_shard(config.layout, config.seq_len, ranks_, r));
        max_rows = std::max(max_rows, shards_.back().rows);
    }
    half_bytes_ = static_cast<size_t>(max_rows) * config.hkv * config.d * dtype_bytes(ops.dtype());
}

Result<std::unique_ptr<DeviceRingAttention>> DeviceRingAttention::create(
    const RingAttentionConfig& config, RingTransport& transport, RingDeviceOps& ops) {
    TANDEM_RETURN_IF_ERROR(validate_ring_config(config));
    TANDEM_RETURN_IF_ERROR(need_device_transport(transport, "device ring attention"));
    std::unique_ptr<DeviceRingAttention> ring(new DeviceRingAttention(config, transport, ops));
    for (int i = 0; i < 2; ++i) {
        TANDEM_ASSIGN_OR_RETURN(
            ring->kv_[i], ops.allocate(std::max<size_t>(2 * ring->half_bytes_, 16),
                                       "device ring attention rank " + std::to_string(ring->rank_) +
                                           ": travelling K/V block " + std::to_string(i)));
        TANDEM_RETURN_IF_ERROR(transport.prepare(ring->kv_[i].get(), 2 * ring->half_bytes_));
    }
    return ring;
}

Status DeviceRingAttention::load_own_block(const void* k, const void* v) {
    const size_t own =
        static_cast<size_t>(shard().rows) * config_.hkv * config_.d * dtype_bytes(ops_.dtype());
    TANDEM_RETURN_IF_ERROR(ops_.copy(kv_[0].get(), k, own));
    return ops_.copy(bytes_at(kv_[0], half_bytes_), v, own);
}

Status DeviceRingAttention::forward(const void* q, const void* k, const void* v, float* o,
                                    float* lse) {
    const RingShard& mine = shard();
    if (mine.rows > 0) {
        for (auto [p, what] : {std::pair<const void*, const char*>{q, "q"},
                               {k, "k"},
                               {v, "v"},
                               {o, "o"},
                               {lse, "lse"}}) {
            TANDEM_RETURN_IF_ERROR(non_null(p, what));
        }
        TANDEM_RETURN_IF_ERROR(load_own_block(k, v));
        TANDEM_RETURN_IF_ERROR(
            ops_.clear_partial(o, mine.rows * config_.hq * config_.d, lse, mine.rows * config_.hq));
    }
    Status s = run_forward(q, o, lse);
    if (!s.ok()) {
        return s.with_context("device ring attention rank " + std::to_string(rank_) + " of " +
                              std::to_string(ranks_));
    }
    return s;
}

Status DeviceRingAttention::backward(const void* q, const void* k, const void* v, const float* o,
                                     const float* lse, const float* dout, float* dq, float* dk,
                                     float* dv) {
    const RingShard& mine = shard();
    if (mine.rows > 0) {
        for (auto [p, what] : {std::pair<const void*, const char*>{q, "q"},
                               {k, "k"},
                               {v, "v"},
                               {o, "o"},
                               {lse, "lse"},
                               {dout, "dout"},
                               {dq, "dq"},
                               {dk, "dk"},
                               {dv, "dv"}}) {
            TANDEM_RETURN_IF_ERROR(non_null(p, what));
        }
    }
    if (!acc_[0]) {  // accumulators on the first backward (forward-only users skip them)
        acc_half_floats_ = half_bytes_ / dtype_bytes(ops_.dtype());
        for (int i = 0; i < 3; ++i) {
            TANDEM_ASSIGN_OR_RETURN(
                acc_[i], ops_.allocate(std::max<size_t>(2 * acc_half_floats_ * sizeof(float), 16),
                                       "device ring attention rank " + std::to_string(rank_) +
                                           ": dK/dV accumulator " + std::to_string(i)));
            TANDEM_RETURN_IF_ERROR(
                transport_.prepare(acc_[i].get(), 2 * acc_half_floats_ * sizeof(float)));
        }
    }
    if (mine.rows > 0) {
        TANDEM_RETURN_IF_ERROR(load_own_block(k, v));
        TANDEM_RETURN_IF_ERROR(
            ops_.clear_partial(dq, mine.rows * config_.hq * config_.d, nullptr, 0));
    }
    Status s = run_backward(q, o, lse, dout, dq, dk, dv);
    if (!s.ok()) {
        return s.with_context("device ring attention backward rank " + std::to_string(rank_) +
                              " of " + std::to_string(ranks_));
    }
    return s;
}

Status DeviceRingAttention::run_forward(const void* q, float* o, float* lse) {
    std::vector<RingRequest> posted;
    int cur = 0;
    void* stream = ops_.stream();
    for (int step = 0; step < ranks_; ++step) {
        const bool more = step < ranks_ - 1;
        std::optional<RingRequest> next;
        if (more) {
            // The shift reads kv[cur] (written before) and overwrites kv[1 - cur], which the
            // previous step's attention read: both are enqueued on the stream already.
            TANDEM_RETURN_IF_ERROR(transport_.order_after(stream));
            TANDEM_ASSIGN_OR_RETURN(
                next, transport_.post_shift(kRingChannelKv, kv_[cur].get(), kv_[1 - cur].get(),
                                            2 * half_bytes_));
            posted.push_back(*next);
        }
        const int owner = (rank_ - step + ranks_) % ranks_;
        AttentionParams p = ring_block_params(config_, shard(), shards_[owner]);
        if (!ring_block_empty(p)) {
            p.accumulate = true;
            const char* kv = static_cast<const char*>(kv_[cur].get());
            TANDEM_RETURN_IF_ERROR(ops_.attend(p, q, kv, kv + half_bytes_, o, lse));
        }
        if (more) {
            TANDEM_RETURN_IF_ERROR(transport_.order_before(*next, stream));
            cur = 1 - cur;
        }
        TANDEM_RETURN_IF_ERROR(release(posted, /*poll_only=*/true));
    }
    return release(posted, /*poll_only=*/false);
}

// RingAttention::backward_phase's order with the stream ordered against the transport: the
// accumulator a step sends was cleared and written on the stream (order_after), and the one that
// arrives is added only after its shift (order_before). acc_[s % 2] is written at step s and sent
// by grad shift s; it is cleared again at step s + 2, after the stream waited for grad shift s + 1
// (so for shift s, which the transport ran before it).
Status DeviceRingAttention::run_backward(const void* q, const float* o, const float* lse,
                                         const float* dout, float* dq, float* dk, float* dv) {
    std::vector<RingRequest> posted;
    std::optional<RingRequest> grad;
    int cur = 0;
    void* stream = ops_.stream();
    const size_t kv_bytes = 2 * half_bytes_;
    const size_t acc_bytes = 2 * acc_half_floats_ * sizeof(float);
    float* acc_in = static_cast<float*>(acc_[2].get());
    for (int step = 0; step < ranks_; ++step) {
        const bool more = step < ranks_ - 1;
        std::optional<RingRequest> next;
        if (more) {
            TANDEM_RETURN_IF_ERROR(transport_.order_after(stream));
            TANDEM_ASSIGN_OR_RETURN(next, transport_.post_shift(kRingChannelKv, kv_[cur].get(),
                                                                kv_[1 - cur].get(), kv_bytes));
            posted.push_back(*next);
        }
        float* out = static_cast<float*>(acc_[step % 2].get());
        TANDEM_RETURN_IF_ERROR(
            ops_.clear_partial(out, static_cast<int64_t>(2 * acc_half_floats_), nullptr, 0));
        const int owner = (rank_ - step + ranks_) % ranks_;
        const AttentionParams p = ring_block_params(config_, shard(), shards_[owner]);
        if (!ring_block_empty(p)) {
            const char* kv = static_cast<const char*>(kv_[cur].get());
            TANDEM_RETURN_IF_ERROR(ops_.attend_backward(p, q, kv, kv + half_bytes_, o, lse, dout,
                                                        dq, out, out + acc_half_floats_, true));
        }
        if (step > 0) {  // what the earlier ranks accumulated for this block
            TANDEM_RETURN_IF_ERROR(transport_.order_before(*grad, stream));
            posted.push_back(*grad);  // released only once it was ordered against
            TANDEM_RETURN_IF_ERROR(
                ops_.add(out, acc_in, static_cast<int64_t>(2 * acc_half_floats_)));
        }
        if (ranks_ > 1) {
            TANDEM_RETURN_IF_ERROR(transport_.order_after(stream));
            TANDEM_ASSIGN_OR_RETURN(
                grad, transport_.post_shift(kRingChannelGrad, out, acc_in, acc_bytes));
        }
        if (more) {
            TANDEM_RETURN_IF_ERROR(transport_.order_before(*next, stream));
            cur = 1 - cur;
        }
        TANDEM_RETURN_IF_ERROR(release(posted, /*poll_only=*/true));
    }
    // The own block's accumulator has come home (P > 1) or never left (P = 1).
    const float* home = static_cast<const float*>(acc_[0].get());
    if (ranks_ > 1) {
        TANDEM_RETURN_IF_ERROR(transport_.order_before(*grad, stream));
        posted.push_back(*grad);
        home = acc_in;
    }
    const size_t own = static_cast<size_t>(shard().rows) * config_.hkv * config_.d * sizeof(float);
    if (own > 0) {
        TANDEM_RETURN_IF_ERROR(ops_.copy(dk, home, own));
        TANDEM_RETURN_IF_ERROR(ops_.copy(dv, home + acc_half_floats_, own));
    }
    return release(posted, /*poll_only=*/false);
}

Status DeviceRingAttention::release(std::vector<RingRequest>& posted, bool poll_only) {
    for (auto it = posted.begin(); it != posted.end();) {
        if (poll_only) {
            TANDEM_ASSIGN_OR_RETURN(bool done, transport_.poll(*it));
            if (!done) return Status();  // shifts complete in order: the rest are pending too
        } else {
            TANDEM_RETURN_IF_ERROR(transport_.wait(*it, config_.timeout));
        }
        it = posted.erase(it);
    }
    return Status();
}

// ---------------------------------------------------------------------------------------------
// Sharded decode

Result<std::unique_ptr<DeviceDecodeShard>> DeviceDecodeShard::create(const DecodeConfig& config,
                                                                     int rank, int ranks,
                                                                     int64_t capacity_tokens,
                                                                     RingDeviceOps& ops) {
    // DecodeShard validates the configuration and the rank the same way.
    const Result<DecodeShard> check = DecodeShard::create(config, rank, ranks);
    if (!check.ok()) return check.status().with_context("device decode shard");
    if (capacity_tokens <= 0) {
        return invalid_argument("device decode shard: capacity_tokens must be > 0, got " +
                                std::to_string(capacity_tokens));
    }
    std::unique_ptr<DeviceDecodeShard> shard(
        new DeviceDecodeShard(config, rank, ranks, capacity_tokens, ops));
    const size_t bytes = static_cast<size_t>(capacity_tokens) * shard->row_bytes();
    const std::string who = "device decode shard rank " + std::to_string(rank);
    TANDEM_ASSIGN_OR_RETURN(shard->k_, ops.allocate(bytes, who + ": K cache"));
    TANDEM_ASSIGN_OR_RETURN(shard->v_, ops.allocate(bytes, who + ": V cache"));
    return shard;
}

size_t DeviceDecodeShard::row_bytes() const {
    return static_cast<size_t>(config_.hkv) * config_.d * dtype_bytes(ops_.dtype());
}

int DeviceDecodeShard::owner(int64_t pos) const {
    return static_cast<int>((pos / config_.block_tokens) % ranks_);
}

Status DeviceDecodeShard::store(int64_t pos0, int64_t n, const void* k, const void* v) {
    if (n < 0 || pos0 < 0) {
        return invalid_argument("device decode shard: negative position or count");
    }
    if (n == 0) return Status();
    if (!k || !v) return invalid_argument("device decode shard: null k or v");
    if (tokens_ + n > capacity_) {
        return invalid_argument("device decode shard rank " + std::to_string(rank_) + ": " +
                                std::to_string(tokens_ + n) + " tokens exceed the capacity of " +
                                std::to_string(capacity_));
    }
    for (const Run& r : runs_) {
        if (pos0 < r.pos0 + r.rows && r.pos0 < pos0 + n) {
            return already_exists("device decode shard: positions " + std::to_string(pos0) + ".." +
                                  std::to_string(pos0 + n - 1) + " overlap stored tokens");
        }
    }
    const size_t at = static_cast<size_t>(tokens_) * row_bytes();
    const size_t bytes = static_cast<size_t>(n) * row_bytes();
    TANDEM_RETURN_IF_ERROR(ops_.copy(bytes_at(k_, at), k, bytes));
    TANDEM_RETURN_IF_ERROR(ops_.copy(bytes_at(v_, at), v, bytes));
    if (!runs_.empty() && runs_.back().pos0 + runs_.back().rows == pos0) {
        runs_.back().rows += n;
    } else {
        runs_.push_back(Run{pos0, n, tokens_});
    }
    tokens_ += n;
    return Status();
}

Status DeviceDecodeShard::append(int64_t pos0, int64_t n, const void* k, const void* v) {
    int64_t i = 0;
    while (i < n) {
        const int64_t pos = pos0 + i;
        const int64_t block_end = (pos / config_.block_tokens + 1) * config_.block_tokens;
        const int64_t len = std::min(n - i, block_end - pos);
        if (owner(pos) == rank_) {
            const size_t off = static_cast<size_t>(i) * row_bytes();
            TANDEM_RETURN_IF_ERROR(store(pos, len, static_cast<const char*>(k) + off,
                                         static_cast<const char*>(v) + off));
        }
        i += len;
    }
    return Status();
}

Status DeviceDecodeShard::attend(const void* q, int64_t n, int64_t q_pos0, float* o,
                                 float* lse) const {
    if (n <= 0) return invalid_argument("device decode shard: attend needs at least one query");
    TANDEM_RETURN_IF_ERROR(ops_.clear_partial(o, n * config_.hq * config_.d, lse, n * config_.hq));
    for (const Run& r : runs_) {
        if (r.pos0 > q_pos0 + n - 1) continue;  // in the future of every query
        const AttentionParams p = decode_run_params(config_, n, q_pos0, r.pos0, r.rows);
        const size_t off = static_cast<size_t>(r.offset) * row_bytes();
        TANDEM_RETURN_IF_ERROR(ops_.attend(p, q, bytes_at(k_, off), bytes_at(v_, off), o, lse));
    }
    return Status();
}

Status device_allgather_merge_partials(RingTransport& transport, RingDeviceOps& ops, float* table,
                                       int64_t n, int hq, int d, float* o, float* lse,
                                       std::chrono::milliseconds timeout) {
    TANDEM_RETURN_IF_ERROR(need_device_transport(transport, "device sharded decode"));
    const int ranks = transport.size();
    const int rank = transport.rank();
    const int64_t part = partial_elems(n, hq, d);
    auto slot = [&](int r) { return table + static_cast<int64_t>(r) * part; };
    void* stream = ops.stream();
    std::vector<RingRequest> posted;
    // The all-gather of allgather_merge_partials; shift s forwards what shift s - 1 brought,
    // which order_before / order_after chain through the stream.
    for (int s = 0; s + 1 < ranks; ++s) {
        const int send_from = (rank - s + ranks) % ranks;
        const int recv_from = (rank - s - 1 + 2 * ranks) % ranks;
        TANDEM_RETURN_IF_ERROR(transport.order_after(stream));
        TANDEM_ASSIGN_OR_RETURN(
            RingRequest req,
            transport.post_shift(kRingChannelPartial, slot(send_from), slot(recv_from),
                                 static_cast<size_t>(part) * sizeof(float)));
        posted.push_back(req);
        TANDEM_RETURN_IF_ERROR(transport.order_before(req, stream));
    }
    TANDEM_RETURN_IF_ERROR(ops.merge_partials(table, ranks, n, hq, d, o, lse));
    for (RingRequest req : posted) TANDEM_RETURN_IF_ERROR(transport.wait(req, timeout));
    return Status();
}

Status device_sharded_decode_attend(const DeviceDecodeShard& shard, RingTransport& transport,
                                    const void* q, int64_t n, int64_t q_pos0, float* o, float* lse,
                                    std::chrono::milliseconds timeout) {
    const DecodeConfig& c = shard.config();
    if (transport.size() != shard.ranks() || transport.rank() != shard.rank()) {
        return invalid_argument(
            "device sharded decode: the shard and the transport disagree on ranks");
    }
    const int64_t part = partial_elems(n, c.hq, c.d);
    TANDEM_ASSIGN_OR_RETURN(
        std::shared_ptr<void> table,
        shard.ops().allocate(static_cast<size_t>(part * shard.ranks()) * sizeof(float),
                             "device sharded decode: partial table"));
    float* mine = static_cast<float*>(table.get()) + static_cast<int64_t>(shard.rank()) * part;
    TANDEM_RETURN_IF_ERROR(shard.attend(q, n, q_pos0, mine, mine + n * c.hq * c.d));
    return device_allgather_merge_partials(transport, shard.ops(), static_cast<float*>(table.get()),
                                           n, c.hq, c.d, o, lse, timeout);
}

// ---------------------------------------------------------------------------------------------
// Host staging

namespace {

class HostStagedRing final : public RingTransport {
public:
    HostStagedRing(RingTransport& inner, RingDeviceOps& ops) : inner_(inner), ops_(ops) {}

    RingCaps caps() const override {
        RingCaps c = inner_.caps();
        c.name += "+host_staging";
        c.memory = RingMemory::kCuda;
        return c;
    }
    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    Status prepare(void*, size_t) override { return Status(); }  // staging is prepared per shift

    Result<RingRequest> post_shift(uint32_t channel, const void* send, void* recv,
                                   size_t bytes) override {
        if (bytes > 0 && (!send || !recv)) return invalid_argument("host staging: null buffer");
        Staged st;
        st.send.resize(bytes);
        st.recv.resize(bytes);
        st.device_recv = recv;
        // Waits for the stream, so the send buffer's kernels have finished.
        if (bytes > 0) {
            TANDEM_RETURN_IF_ERROR(ops_.copy_to_host(st.send.data(), send, bytes)
                                       .with_context("host staging: device to host"));
        }
        TANDEM_ASSIGN_OR_RETURN(st.inner,
                                inner_.post_shift(channel, st.send.data(), st.recv.data(), bytes));
        const uint64_t id = ++next_id_;
        staged_.emplace(id, std::move(st));
        return RingRequest{id};
    }

    Result<bool> poll(RingRequest request) override {
        TANDEM_ASSIGN_OR_RETURN(Staged * st, find(request));
        if (!st->landed) {
            auto done = inner_.poll(st->inner);
            if (!done.ok()) {
                staged_.erase(request.id);
                return done.status();
            }
            if (!*done) return false;
            TANDEM_RETURN_IF_ERROR(land(*st));
        }
        staged_.erase(request.id);
        return true;
    }

    Status wait(RingRequest request, std::chrono::milliseconds timeout) override {
        TANDEM_ASSIGN_OR_RETURN(Staged * st, find(request));
        if (!st->landed) {
            Status s = inner_.wait(st->inner, timeout);
            if (s.code() == StatusCode::kDeadlineExceeded) return s;  // still posted
            if (!s.ok()) {
                staged_.erase(request.id);
                return s;
            }
            TANDEM_RETURN_IF_ERROR(land(*st));
        }
        staged_.erase(request.id);
        return Status();
    }

    Status flush(std::chrono::milliseconds timeout) override {
        while (!staged_.empty()) {
            TANDEM_RETURN_IF_ERROR(wait(RingRequest{staged_.begin()->first}, timeout));
        }
        return Status();
    }

    // Data on the host is complete once the copy from the stream returned: nothing to order.
    Status order_after(void*) override { return Status(); }

    // Receives on the host, then enqueues the copy to the device on the stream (later work on
    // the stream comes after it).
    Status order_before(RingRequest request, void*) override {
        TANDEM_ASSIGN_OR_RETURN(Staged * st, find(request));
        if (st->landed) return Status();
        TANDEM_RETURN_IF_ERROR(inner_.wait(st->inner, kStagedOrderTimeout));
        return land(*st);
    }

private:
    struct Staged {
        RingRequest inner;
        std::vector<char> send, recv;
        void* device_recv = nullptr;
        bool landed = false;  // the inner shift completed and the copy to the device is enqueued
    };

    Result<Staged*> find(RingRequest request) {
        auto it = staged_.find(request.id);
        if (it == staged_.end()) return invalid_argument("host staging: unknown request");
        return &it->second;
    }

    Status land(Staged& st) {
        st.landed = true;
        if (st.recv.empty()) return Status();
        return ops_.copy_from_host(st.device_recv, st.recv.data(), st.recv.size())
            .with_context("host staging: host to device");
    }

    RingTransport& inner_;
    RingDeviceOps& ops_;
    uint64_t next_id_ = 0;
    std::unordered_map<uint64_t, Staged> staged_;
};

}  // namespace

std::unique_ptr<RingTransport> make_host_staged_ring(RingTransport& inner, RingDeviceOps& ops) {
    return std::make_unique<HostStagedRing>(inner, ops);
}

}  // namespace tandem::kernels
