// In-process ring: one shared hub of per-link FIFO queues guarded by one mutex.
#include "kernels/ring/in_process_transport.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace tandem::kernels {
namespace {

// Completion state of one posted shift; written by either neighbour under Hub::mu.
struct Op {
    bool send_done = false;
    bool recv_done = false;
    Status error;
    bool done() const { return !error.ok() || (send_done && recv_done); }
};

struct Pending {
    int owner = 0;  // the rank that posted this side
    const void* send = nullptr;
    void* recv = nullptr;
    size_t bytes = 0;
    std::shared_ptr<Op> op;
};

struct Link {
    std::deque<Pending> sends;  // posted sends towards the link's receiving rank
    std::deque<Pending> recvs;  // posted receives of the receiving rank
};

// Shared by every rank of one ring; all fields guarded by mu.
struct Hub {
    Hub(int n, InProcessRingOptions o)
        : size(n), options(std::move(o)), links(static_cast<size_t>(n)) {}
    std::mutex mu;
    std::condition_variable cv;
    const int size;
    const InProcessRingOptions options;
    std::vector<std::map<uint32_t, Link>> links;  // [receiving rank][channel]
};

Status size_mismatch(size_t send, size_t recv, uint32_t channel) {
    return invalid_argument("in-process ring: shift on channel " + std::to_string(channel) +
                            " sends " + std::to_string(send) + " bytes into a receive of " +
                            std::to_string(recv) + " bytes");
}

// Completes a matched (send, recv) pair; called with hub.mu held. Copying under the lock keeps
// teardown simple: a rank that cancels its requests knows no copy into its buffers is running.
void complete(const Hub& hub, const Pending& s, const Pending& r, uint32_t channel) {
    if (s.bytes != r.bytes) {
        s.op->error = size_mismatch(s.bytes, r.bytes, channel);
        r.op->error = s.op->error;
        return;
    }
    if (s.bytes > 0) {
        if (hub.options.copy) {
            Status copied = hub.options.copy(r.recv, s.send, s.bytes);
            if (!copied.ok()) {
                s.op->error = copied.with_context("in-process ring: copying a shift on channel " +
                                                  std::to_string(channel));
                r.op->error = s.op->error;
                return;
            }
        } else {
            std::memcpy(r.recv, s.send, s.bytes);
        }
    }
    s.op->send_done = true;
    r.op->recv_done = true;
}

// One rank's endpoint. Driven by one thread at a time.
class InProcessTransport final : public RingTransport {
public:
    InProcessTransport(std::shared_ptr<Hub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}

    ~InProcessTransport() override {
        // Cancel what this rank still has posted so no neighbour copies into freed buffers.
        std::lock_guard<std::mutex> lock(hub_->mu);
        for (auto& per_rank : hub_->links) {
            for (auto& [channel, link] : per_rank) {
                std::erase_if(link.sends, [&](const Pending& p) { return p.owner == rank_; });
                std::erase_if(link.recvs, [&](const Pending& p) { return p.owner == rank_; });
            }
        }
        for (auto& [id, op] : requests_) {
            if (!op->done()) op->error = unavailable("in-process ring: rank destroyed");
        }
        hub_->cv.notify_all();
    }

    RingCaps caps() const override {
        return RingCaps{hub_->options.name, hub_->options.memory, 1 << 20, false};
    }
    int rank() const override { return rank_; }
    int size() const override { return hub_->size; }
    Status prepare(void*, size_t) override { return Status(); }

    Result<RingRequest> post_shift(uint32_t channel, const void* send, void* recv,
                                   size_t bytes) override {
        if (bytes > 0 && (!send || !recv)) {
            return invalid_argument("in-process ring: null buffer in post_shift");
        }
        auto op = std::make_shared<Op>();
        {
            std::lock_guard<std::mutex> lock(hub_->mu);
            const int next = (rank_ + 1) % hub_->size;
            Pending mine_send{rank_, send, nullptr, bytes, op};
            Pending mine_recv{rank_, nullptr, recv, bytes, op};
            Link& out = hub_->links[next][channel];
            if (!out.recvs.empty()) {
                const Pending peer = out.recvs.front();
                out.recvs.pop_front();
                complete(*hub_, mine_send, peer, channel);
            } else {
                out.sends.push_back(mine_send);
            }
            Link& in = hub_->links[rank_][channel];
            if (!in.sends.empty()) {
                const Pending peer = in.sends.front();
                in.sends.pop_front();
                complete(*hub_, peer, mine_recv, channel);
            } else {
                in.recvs.push_back(mine_recv);
            }
        }
        hub_->cv.notify_all();
        const uint64_t id = ++next_id_;
        requests_.emplace(id, std::move(op));
        return RingRequest{id};
    }

    Status order_after(void* stream) override {
        if (hub_->options.memory == RingMemory::kHost) return RingTransport::order_after(stream);
        return hub_->options.sync_stream ? hub_->options.sync_stream(stream) : Status();
    }

    // The copy runs on the host when both sides are posted: wait for it, keep the request.
    Status order_before(RingRequest request, void* stream) override {
        if (hub_->options.memory == RingMemory::kHost) {
            return RingTransport::order_before(request, stream);
        }
        auto it = requests_.find(request.id);
        if (it == requests_.end()) return invalid_argument("in-process ring: unknown request");
        std::unique_lock<std::mutex> lock(hub_->mu);
        const Op& op = *it->second;
        const auto deadline = std::chrono::steady_clock::now() + hub_->options.order_timeout;
        if (!hub_->cv.wait_until(lock, deadline, [&] { return op.done(); })) {
            return deadline_exceeded("in-process ring: rank " + std::to_string(rank_) + " waited " +
                                     std::to_string(hub_->options.order_timeout.count()) +
                                     " ms to order a stream after a shift");
        }
        return op.error;
    }

    Result<bool> poll(RingRequest request) override {
        auto it = requests_.find(request.id);
        if (it == requests_.end()) return invalid_argument("in-process ring: unknown request");
        Status error;
        {
            std::lock_guard<std::mutex> lock(hub_->mu);
            if (!it->second->done()) return false;
            error = it->second->error;
        }
        requests_.erase(it);
        if (!error.ok()) return error;
        return true;
    }

    Status wait(RingRequest request, std::chrono::milliseconds timeout) override {
        auto it = requests_.find(request.id);
        if (it == requests_.end()) return invalid_argument("in-process ring: unknown request");
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        Status error;
        {
            std::unique_lock<std::mutex> lock(hub_->mu);
            const Op& op = *it->second;
            if (!hub_->cv.wait_until(lock, deadline, [&] { return op.done(); })) {
                return deadline_exceeded("in-process ring: rank " + std::to_string(rank_) +
                                         " waited " + std::to_string(timeout.count()) +
                                         " ms for a shift (a neighbour has not posted it)");
            }
            error = op.error;
        }
        requests_.erase(it);
        return error;
    }

    Status flush(std::chrono::milliseconds timeout) override {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!requests_.empty()) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            TANDEM_RETURN_IF_ERROR(wait(RingRequest{requests_.begin()->first},
                                        std::max(left, std::chrono::milliseconds(0))));
        }
        return Status();
    }

private:
    std::shared_ptr<Hub> hub_;
    const int rank_;
    uint64_t next_id_ = 0;
    std::unordered_map<uint64_t, std::shared_ptr<Op>> requests_;
};

}  // namespace

std::vector<std::unique_ptr<RingTransport>> make_in_process_ring(int size) {
    return make_in_process_ring(size, InProcessRingOptions{});
}

std::vector<std::unique_ptr<RingTransport>> make_in_process_ring(
    int size, const InProcessRingOptions& options) {
    std::vector<std::unique_ptr<RingTransport>> out;
    if (size <= 0) return out;
    auto hub = std::make_shared<Hub>(size, options);
    for (int r = 0; r < size; ++r) out.push_back(std::make_unique<InProcessTransport>(hub, r));
    return out;
}

}  // namespace tandem::kernels
