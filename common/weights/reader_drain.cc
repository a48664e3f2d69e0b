#include "common/weights/reader_drain.h"

#include "common/weights/reader_core.h"

#include <fmt/format.h>

namespace tandem::weights {

DrainEvent OperationDrain::start(DrainTarget& target, Clock::TimePoint now,
                                 std::chrono::milliseconds wait,
                                 std::chrono::milliseconds force_wait) {
    DrainEvent e;
    e.outstanding = target.outstanding();
    if (e.outstanding == 0) {
        e.kind = DrainEvent::Kind::kDrained;
        return e;
    }
    tracker_ = DrainTracker(now, wait, force_wait);
    active_ = true;
    e.kind = DrainEvent::Kind::kStarted;
    return e;
}

DrainEvent OperationDrain::step(DrainTarget& target, Clock::TimePoint now) {
    DrainEvent e;
    if (!active_) {
        e.kind = DrainEvent::Kind::kDrained;  // over already: nothing more to count
        e.forced = tracker_.forced();
        return e;
    }
    e.outstanding = target.outstanding();
    switch (tracker_.next(e.outstanding, now)) {
        case DrainStep::kWait:
            e.kind = DrainEvent::Kind::kWaiting;
            break;
        case DrainStep::kForceClose:
            e.kind = DrainEvent::Kind::kForceClosed;
            e.closed = target.force_close();
            break;
        case DrainStep::kDone:
            e.kind = DrainEvent::Kind::kDrained;
            active_ = false;
            break;
        case DrainStep::kRetire:
            e.kind = DrainEvent::Kind::kRetire;
            active_ = false;
            break;
    }
    e.forced = tracker_.forced();
    return e;
}

void count_drain(DrainStats& stats, const DrainEvent& event) {
    switch (event.kind) {
        case DrainEvent::Kind::kStarted:
            ++stats.operations;
            stats.requests += event.outstanding;
            ++stats.draining;
            break;
        case DrainEvent::Kind::kForceClosed:
            stats.forced_closes += event.closed;
            break;
        case DrainEvent::Kind::kDrained:
            --stats.draining;
            break;
        case DrainEvent::Kind::kRetire:
            ++stats.retired_buffers;
            --stats.draining;
            break;
        case DrainEvent::Kind::kWaiting:
            break;
    }
}

// Drain: a failed operation's UCX requests that may still write into its memory (drain.h). The
// operation, and the buffer or scratch memory its requests target, stay out of use until UCX has
// completed them, their endpoints were force-closed, or the memory is retired for good.

// A draining operation as its drain sees it.
class Reader::Core::DrainHandle final : public DrainTarget {
public:
    DrainHandle(Core& core, Operation& op) : core_(core), op_(op) {}
    size_t outstanding() override { return Core::outstanding(op_); }
    size_t force_close() override {
        size_t closed = 0;
        for (auto& sf : op_.shards) {
            if (!sf->conn || sf->conn->endpoint->closed()) continue;
            core_.client_->forget(sf->conn, UCS_ERR_CANCELED);
            sf->conn->endpoint->close_now(core_.options_.ucx.close_timeout_ms);
            ++closed;
        }
        return closed;
    }

private:
    Core& core_;
    Operation& op_;
};

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
        if (op->draining() && op->holds_slot) return true;
    }
    return false;
}

void Reader::Core::start_drain(Operation& op, bool holds_slot) {
    DrainHandle target(*this, op);
    const DrainEvent started = op.drain.start(target, clock_.now(), options_.drain_timeout_ms,
                                              options_.ucx.close_timeout_ms);
    if (started.kind != DrainEvent::Kind::kStarted) return;
    op.holds_slot = holds_slot;
    log_.with({.version = op.version.version})
        .info("version {}: draining {} request(s) still in flight before {} is reused",
              op.version.version, started.outstanding,
              holds_slot ? fmt::format("buffer {}", op.slot) : std::string("its memory"));
    std::lock_guard<std::mutex> lock(mu_);
    count_drain(drain_stats_, started);
}

bool Reader::Core::drain(Operation& op) {
    DrainHandle target(*this, op);
    const DrainEvent e = op.drain.step(target, clock_.now());
    switch (e.kind) {
        case DrainEvent::Kind::kStarted:
        case DrainEvent::Kind::kWaiting:
            return false;
        case DrainEvent::Kind::kDrained: {
            for (auto& sf : op.shards) sf->inflight.clear();
            log_.with({.version = op.version.version})
                .info("version {}: requests in flight drained{}", op.version.version,
                      e.forced ? " after force-closing the connection" : "");
            std::lock_guard<std::mutex> lock(mu_);
            count_drain(drain_stats_, e);
            return true;
        }
        case DrainEvent::Kind::kForceClosed: {
            log_.with({.version = op.version.version})
                .warn(
                    "version {}: {} request(s) still in flight {} ms after the failure; "
                    "force-closed {} connection(s)",
                    op.version.version, e.outstanding, options_.drain_timeout_ms.count(), e.closed);
            std::lock_guard<std::mutex> lock(mu_);
            count_drain(drain_stats_, e);
            return false;
        }
        case DrainEvent::Kind::kRetire:  // the caller retires it (retire() counts it)
            log_.with({.version = op.version.version})
                .error(
                    "version {}: {} request(s) still in flight after force-closing the "
                    "connection; retiring {} for good",
                    op.version.version, e.outstanding,
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
    count_drain(drain_stats_, {.kind = DrainEvent::Kind::kRetire});
}

}  // namespace tandem::weights
