#include "rollout_node/rollout_loop.h"

#include <fmt/format.h>

namespace tandem::rollout {

RolloutLoop::RolloutLoop(runtime::JobRuntime& runtime, Weights& weights, Generator& generator,
                         TrajectoryOutbox& outbox, RolloutLoopOptions options)
    : rt_(runtime), weights_(weights), gen_(generator), out_(outbox), opt_(options) {}

std::optional<runtime::VersionInfo> RolloutLoop::current_info() const {
    auto cur = weights_.current();
    if (!cur) return std::nullopt;
    auto it = infos_.find(*cur);
    if (it == infos_.end()) return std::nullopt;
    return it->second;
}

void RolloutLoop::look_for_versions(const runtime::JobView& view) {
    if (weights_.fetching() || !view.newest || !following_) return;
    const runtime::VersionInfo& info = view.newest->info;
    if (info.fence != *following_) return;
    if (failed_ && *failed_ == info.version) return;  // a newer one will come
    const auto cur = current_info();
    if (cur && cur->fence == info.fence && cur->version >= info.version) return;
    infos_[info.version] = info;
    fetching_ = info.version;
    weights_.start_fetch(*view.newest);
}

Status RolloutLoop::finish_fetch(const Status& s) {
    Status swapped;
    if (!s.ok()) {
        rt_.log(LogLevel::kWarn,
                fmt::format("fetching version {} failed: {}", fetching_.value_or(0), s.message()));
        failed_ = fetching_;
    } else {
        swapped = weights_.swap();  // step boundary: no view of the weights is alive here
    }
    fetching_.reset();
    // Forget the infos of versions older than the current one.
    if (auto cur = weights_.current()) infos_.erase(infos_.begin(), infos_.lower_bound(*cur));
    return swapped;
}

Result<bool> RolloutLoop::ensure(int64_t min_step, double* sync_wait_s, double* trainer_wait_s) {
    const Clock& clock = rt_.clock();
    while (true) {
        const runtime::JobView view = rt_.view();
        if (view.cancelled) return false;
        if (view.fence.valid() && following_ && view.fence != *following_) return false;
        if (weights_.fetching()) {
            if (auto s = weights_.wait_fetch(clock.now())) TANDEM_RETURN_IF_ERROR(finish_fetch(*s));
        }
        look_for_versions(view);
        const auto cur = current_info();
        if (cur && following_ && cur->fence == *following_ && cur->step >= min_step) return true;
        // Blocked: on the transfer of a version, or on the trainer still training.
        const auto t0 = clock.now();
        if (weights_.fetching()) {
            if (auto s = weights_.wait_fetch(t0 + opt_.poll)) {
                TANDEM_RETURN_IF_ERROR(finish_fetch(*s));
            }
            *sync_wait_s += seconds_between(t0, clock.now());
        } else {
            rt_.wait_change(view.generation, t0 + opt_.poll);
            *trainer_wait_s += seconds_between(t0, clock.now());
        }
    }
}

Result<bool> RolloutLoop::resync() {
    const Clock& clock = rt_.clock();
    runtime::JobView view = rt_.view();
    while (!view.fence.valid() && !view.cancelled)
        view = rt_.wait_change(view.generation, clock.now() + opt_.poll);
    if (view.cancelled) return false;
    const bool restart = following_.has_value();
    following_ = view.fence;
    failed_.reset();
    double sync = 0, trainer = 0;
    // The run's first version: any of its fence (ensure takes the newest).
    TANDEM_ASSIGN_OR_RETURN(bool ok, ensure(0, &sync, &trainer));
    if (!ok) return !rt_.cancelled();  // the fence moved again: the caller resyncs
    const runtime::VersionInfo info = *current_info();
    base_ = info;
    batch_ = info.step;  // a resumed trainer continues its data cursor
    const ActorId trainer_id{rt_.actor().job, ActorRole::kTrainer, 0};
    TANDEM_ASSIGN_OR_RETURN(
        std::string endpoint,
        rt_.wait_endpoint(trainer_id, "trajectories", clock.now() + opt_.endpoint_timeout));
    TANDEM_RETURN_IF_ERROR(out_.connect(endpoint));
    rt_.log(LogLevel::kInfo,
            fmt::format("{}following trainer fence {} from version {} (step {}, data cursor {}); "
                        "pushing trajectories to {}",
                        restart ? "the trainer restarted: " : "", following_->str(), info.version,
                        info.step, info.data_cursor, endpoint));
    return true;
}

Result<bool> RolloutLoop::step() {
    while (true) {
        const runtime::JobView view = rt_.view();
        if (view.cancelled) return false;
        if (!following_ || (view.fence.valid() && view.fence != *following_)) {
            TANDEM_ASSIGN_OR_RETURN(bool ok, resync());
            if (!ok) return false;
            continue;  // a newer run may have appeared meanwhile
        }
        rl::TrajectoryBatch out;
        TANDEM_ASSIGN_OR_RETURN(bool ready, ensure(batch_ - opt_.max_staleness,
                                                   &out.weight_sync_wait_s, &out.trainer_wait_s));
        if (!ready) {
            if (rt_.cancelled()) return false;
            continue;  // the fence moved: resync
        }
        const runtime::VersionInfo info = *current_info();
        const auto t0 = rt_.clock().now();
        double sync = out.weight_sync_wait_s, trainer = out.trainer_wait_s;
        TANDEM_ASSIGN_OR_RETURN(out, gen_.generate(batch_, cursor_of(batch_)));
        out.weight_sync_wait_s = sync;
        out.trainer_wait_s = trainer;
        out.batch = batch_;
        out.version = static_cast<int64_t>(info.version);
        out.fence = info.fence;
        for (auto& t : out.trajectories) t.version = out.version;
        out.rollout_s = seconds_between(t0, rt_.clock().now());
        out.fetch_s = weights_.last_fetch_s();
        TANDEM_RETURN_IF_ERROR(out_.send(out));
        ++batch_;
        return true;
    }
}

Status RolloutLoop::run() {
    while (true) {
        TANDEM_ASSIGN_OR_RETURN(bool more, step());
        if (!more) return Status();
    }
}

}  // namespace tandem::rollout
