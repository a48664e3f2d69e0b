#include "common/weights/reader_core.h"

#include <fmt/format.h>

namespace tandem::weights {

// Drain: a failed operation's UCX requests that may still write into its memory (drain.h). The
// operation, and the buffer or scratch memory its requests target, stay out of use until UCX has
// completed them, their endpoints were force-closed, or the memory is retired for good.

size_t Reader::Core::outstanding(Operation& op) {
    size_t n = 0;
    auto receiving = [](const std::shared_ptr<PendingCall>& call) {
        return call && call->recv.pending();
    };
    for (auto& sfp : op.shards) {
        ShardFetch& sf = *sfp;
        for (auto& f : sf.inflight) n += (f.get.pending() || receiving(f.call)) ? 1 : 0;
        for (int i = 0; i < 2; ++i) {
            n += (sf.meta_get[i].pending() || receiving(sf.meta_call[i])) ? 1 : 0;
        }
    }
    return n;
}

bool Reader::Core::any_slot_draining() const {
    for (const auto& op : ops_) {
        if (op->draining && op->holds_slot) return true;
    }
    return false;
}

bool Reader::Core::drain(Operation& op) {
    const auto now = clock_.now();
    const size_t left = outstanding(op);
    switch (op.drain.next(left, now)) {
        case DrainStep::kWait:
            return false;
        case DrainStep::kDone: {
            op.draining = false;
            for (auto& sf : op.shards) sf->inflight.clear();
            log_.with({.version = op.version.version})
                .info("version {}: requests in flight drained{}", op.version.version,
                      op.drain.forced() ? " after force-closing the connection" : "");
            std::lock_guard<std::mutex> lock(mu_);
            --drain_stats_.draining;
            return true;
        }
        case DrainStep::kForceClose: {
            size_t closed = 0;
            for (auto& sf : op.shards) {
                if (!sf->conn || sf->conn->endpoint->closed()) continue;
                client_->forget(sf->conn, UCS_ERR_CANCELED);
                sf->conn->endpoint->close_now(options_.ucx.close_timeout_ms);
                ++closed;
            }
            log_.with({.version = op.version.version})
                .warn(
                    "version {}: {} request(s) still in flight {} ms after the failure; "
                    "force-closed {} connection(s)",
                    op.version.version, left, options_.drain_timeout_ms.count(), closed);
            std::lock_guard<std::mutex> lock(mu_);
            drain_stats_.forced_closes += closed;
            return false;
        }
        case DrainStep::kRetire:
            op.draining = false;  // the caller retires it
            log_.with({.version = op.version.version})
                .error(
                    "version {}: {} request(s) still in flight after force-closing the "
                    "connection; retiring {} for good",
                    op.version.version, left,
                    op.holds_slot ? fmt::format("buffer {}", op.slot)
                                  : std::string("the operation's memory"));
            return false;
    }
    return false;
}

void Reader::Core::retire(std::shared_ptr<Operation> op, bool replace) {
    if (op->holds_slot && replace) {
        Buffer& b = buffers_[op->slot];
        auto fresh = SlotMemory::create(
            loop_->worker().context(), b.memory->size(),
            fmt::format("tandem-weights-reader{}-r{}", op->slot, retired_memory_.size() + 1));
        retired_memory_.push_back(b.memory);
        if (fresh.ok()) {
            b.memory = std::move(*fresh);
            init_header(header(op->slot));
        } else {
            // No memory for a replacement: pulls that claim this slot are refused.
            log_.error("cannot replace retired buffer {}: {}", op->slot,
                       fresh.status().to_string());
            dead_slot_ = op->slot;
        }
    }
    op->holds_slot = false;
    retired_.push_back(std::move(op));
    std::lock_guard<std::mutex> lock(mu_);
    ++drain_stats_.retired_buffers;
    --drain_stats_.draining;
}

}  // namespace tandem::weights
