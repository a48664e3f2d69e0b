#include "common/weights/reader_shard.h"

#include <fmt/format.h>

namespace tandem::weights {

std::string_view shard_state_name(ShardState state) {
    switch (state) {
        case ShardState::kClaim:
            return "claim";
        case ShardState::kConnect:
            return "connect";
        case ShardState::kHello:
            return "hello";
        case ShardState::kAcquire:
            return "acquire";
        case ShardState::kMeta:
            return "meta";
        case ShardState::kChunks:
            return "chunks";
        case ShardState::kHeaderAfter:
            return "header-after";
        case ShardState::kDone:
            return "done";
        case ShardState::kFailed:
            return "failed";
    }
    return "unknown";
}

ShardMachine::ShardMachine(ShardRoute route)
    : route_(route),
      state_(route == ShardRoute::kPull ? ShardState::kClaim : ShardState::kConnect),
      failed_in_(state_) {}

Status ShardMachine::move(ShardState from, ShardState to, Clock::TimePoint now,
                          std::string_view event) {
    if (state_ != from) {
        return internal_error(fmt::format("shard read: event {} in state {} (it belongs to {})",
                                          event, shard_state_name(state_), shard_state_name(from)));
    }
    state_ = to;
    failed_in_ = to;
    entered_ = now;
    return Status();
}

Status ShardMachine::claimed(Clock::TimePoint now) {
    return move(ShardState::kClaim, ShardState::kConnect, now, "claimed");
}

Status ShardMachine::connected(Clock::TimePoint now) {
    return move(ShardState::kConnect, ShardState::kHello, now, "connected");
}

Status ShardMachine::hello_answered(Clock::TimePoint now) {
    return move(ShardState::kHello, ShardState::kAcquire, now, "hello_answered");
}

Status ShardMachine::leased(Clock::TimePoint now) {
    return move(ShardState::kAcquire,
                route_ == ShardRoute::kMap ? ShardState::kDone : ShardState::kMeta, now, "leased");
}

Status ShardMachine::meta_checked(Clock::TimePoint now) {
    Status moved = move(ShardState::kMeta, ShardState::kChunks, now, "meta_checked");
    if (moved.ok()) last_progress_ = now;
    return moved;
}

Status ShardMachine::chunks_verified(Clock::TimePoint now) {
    return move(ShardState::kChunks, ShardState::kHeaderAfter, now, "chunks_verified");
}

Status ShardMachine::header_rechecked(Clock::TimePoint now) {
    return move(ShardState::kHeaderAfter, ShardState::kDone, now, "header_rechecked");
}

bool ShardMachine::failed(Clock::TimePoint now) {
    if (finished()) return false;
    failed_in_ = state_;
    state_ = ShardState::kFailed;
    entered_ = now;
    return true;
}

bool ShardMachine::phase_overdue(Clock::TimePoint now, std::chrono::milliseconds limit) const {
    if (state_ != ShardState::kMeta && state_ != ShardState::kHeaderAfter) return false;
    return now - entered_ >= limit;
}

void ShardMachine::progress(Clock::TimePoint now) {
    if (state_ == ShardState::kChunks) last_progress_ = now;
}

bool ShardMachine::stalled(Clock::TimePoint now, std::chrono::milliseconds limit,
                           bool waiting) const {
    return state_ == ShardState::kChunks && waiting && now - last_progress_ >= limit;
}

}  // namespace tandem::weights
