#include "trainer_node/trainer_loop.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

namespace tandem::trainer {

namespace {

// The step's kv/* figures (docs/kv-cache.md): byte gauges are each rollout's most over its
// batches of the step, summed over rollouts (the job's KV memory); counts are summed over
// batches; bytes per token and the compression ratio are the largest a rollout reported.
class KvStepStats {
public:
    void add(const rl::TrajectoryBatch& b) {
        rl::RolloutKvStats& r = by_rollout_[b.rollout];
        r.bytes_in_use = std::max(r.bytes_in_use, b.kv.bytes_in_use);
        r.budget_bytes = std::max(r.budget_bytes, b.kv.budget_bytes);
        r.prefix_bytes = std::max(r.prefix_bytes, b.kv.prefix_bytes);
        r.prefix_hits += b.kv.prefix_hits;
        r.admission_waits += b.kv.admission_waits;
        r.evictions += b.kv.evictions;
        r.compressed_blocks += b.kv.compressed_blocks;
        r.bytes_per_token = std::max(r.bytes_per_token, b.kv.bytes_per_token);
        r.compression = std::max(r.compression, b.kv.compression);
    }
    Json json() const {
        rl::RolloutKvStats t;
        for (const auto& [rollout, r] : by_rollout_) {
            t.bytes_in_use += r.bytes_in_use;
            t.budget_bytes += r.budget_bytes;
            t.prefix_bytes += r.prefix_bytes;
            t.prefix_hits += r.prefix_hits;
            t.admission_waits += r.admission_waits;
            t.evictions += r.evictions;
            t.compressed_blocks += r.compressed_blocks;
            t.bytes_per_token = std::max(t.bytes_per_token, r.bytes_per_token);
            t.compression = std::max(t.compression, r.compression);
        }
        return {{"bytes_in_use", t.bytes_in_use},
                {"budget_bytes", t.budget_bytes},
                {"prefix_bytes", t.prefix_bytes},
                {"prefix_hits", t.prefix_hits},
                {"admission_waits", t.admission_waits},
                {"evictions", t.evictions},
                {"compressed_blocks", t.compressed_blocks},
                {"bytes_per_token", t.bytes_per_token},
                {"compression", t.compression}};
    }

private:
    std::map<int64_t, rl::RolloutKvStats> by_rollout_;
};

}  // namespace

TrainerLoop::TrainerLoop(runtime::JobRuntime& runtime, Learner& learner, TrajectoryInbox& inbox,
                         TrainerLoopOptions options)
    : rt_(runtime),
      learner_(learner),
      inbox_(inbox),
      opt_(options),
      gate_(options.max_staleness),
      step_(options.start_step) {}

Status TrainerLoop::publish(int64_t step) {
    TANDEM_ASSIGN_OR_RETURN(
        runtime::VersionInfo info,
        rt_.assign_version(step, cursor_of(step), rt_.clock().now() + opt_.assign_timeout,
                           opt_.first_version));
    if (!gate_.fence().valid()) {
        gate_.set_fence(info.fence);
    } else if (info.fence != gate_.fence()) {
        return unavailable(fmt::format("the version table moved this trainer from fence {} to {}",
                                       gate_.fence().str(), info.fence.str()));
    }
    TANDEM_RETURN_IF_ERROR(learner_.publish(info));
    TANDEM_RETURN_IF_ERROR(gate_.published(static_cast<int64_t>(info.version)));
    current_ = info;
    return Status();
}

Status TrainerLoop::start() {
    TANDEM_RETURN_IF_ERROR(publish(step_));
    rt_.log(LogLevel::kInfo,
            fmt::format("published version {} (fence {}) at step {}; training {} steps",
                        current_.version, current_.fence.str(), step_, opt_.steps));
    return Status();
}

size_t TrainerLoop::live_share(const runtime::JobView& view) const {
    std::vector<bool> live(static_cast<size_t>(opt_.replicas), false);
    for (const runtime::Peer* p : view.live(ActorRole::kRollout)) {
        if (p->actor.index < live.size()) live[p->actor.index] = true;
    }
    size_t prompts = 0;
    for (int k = 0; k < opt_.replicas && k < opt_.prompts_per_step; ++k) {
        if (live[static_cast<size_t>(k)])
            prompts += static_cast<size_t>((opt_.prompts_per_step - k + opt_.replicas - 1) /
                                           opt_.replicas);
    }
    return prompts * static_cast<size_t>(opt_.group_size);
}

Status TrainerLoop::collect(std::vector<model::Trajectory>& batch, Json& stats) {
    const size_t want =
        static_cast<size_t>(opt_.prompts_per_step) * static_cast<size_t>(opt_.group_size);
    batch.clear();
    std::map<int64_t, int64_t> staleness, versions;
    double rollout_s = 0, wait_s = 0, fetch_s = 0, trainer_wait_s = 0;
    int64_t tokens = 0, batches = 0;
    uint64_t group_min = UINT64_MAX, group_max = 0;
    KvStepStats kv;
    auto take = [&](model::Trajectory&& t, const wire::Fence& fence) {
        // Carried trajectories are judged again: they may have gone stale since.
        if (gate_.check(t.version, fence) != rl::TrajectoryGate::Verdict::kAccept) return;
        if (batch.size() < want) {
            staleness[gate_.staleness(t.version)] += 1;
            versions[t.version] += 1;
            group_min = std::min(group_min, t.group);
            group_max = std::max(group_max, t.group);
            batch.push_back(std::move(t));
        } else {
            carry_.push_back(std::move(t));
        }
    };
    std::vector<model::Trajectory> carried = std::move(carry_);
    carry_.clear();
    for (auto& t : carried) take(std::move(t), gate_.fence());
    size_t share = want;
    int live = opt_.replicas;
    auto enough = [&] {
        const runtime::JobView v = rt_.view();
        share = live_share(v);
        live = static_cast<int>(v.live(ActorRole::kRollout).size());
        if (live != live_logged_ && live_logged_ >= 0) {
            rt_.log(LogLevel::kInfo,
                    live >= opt_.replicas
                        ? fmt::format("all {} rollout actors are alive: steps take all {} prompts",
                                      opt_.replicas, opt_.prompts_per_step)
                        : fmt::format("{} of {} rollout actors alive: steps take their {} of {} "
                                      "prompts (the data cursor still moves {} per step)",
                                      live, opt_.replicas, share / opt_.group_size,
                                      opt_.prompts_per_step, opt_.prompts_per_step));
        }
        live_logged_ = live;
        if (batch.size() >= want) return true;
        // Nobody alive: wait (a rollout is placed again, or the coordinator ends the job).
        return share < want && share > 0 && batch.size() >= share;
    };
    while (!enough()) {
        if (rt_.cancelled()) return unavailable("the job was cancelled");
        TANDEM_ASSIGN_OR_RETURN(auto b, inbox_.next(rt_.clock().now() + opt_.poll));
        if (!b) continue;
        rollout_s = std::max(rollout_s, b->rollout_s);
        wait_s = std::max(wait_s, b->weight_sync_wait_s);
        trainer_wait_s = std::max(trainer_wait_s, b->trainer_wait_s);
        fetch_s = std::max(fetch_s, b->fetch_s);
        tokens += b->generated_tokens;
        kv.add(*b);
        ++batches;
        const int64_t unknown = gate_.rejected_unknown(), fenced = gate_.rejected_fenced();
        for (auto& t : b->trajectories) take(std::move(t), b->fence);
        if (gate_.rejected_fenced() > fenced) {
            rt_.log(LogLevel::kWarn,
                    fmt::format("rejected {} trajectories of rollout {} batch {}: fence {} is not "
                                "this trainer's ({})",
                                gate_.rejected_fenced() - fenced, b->rollout, b->batch,
                                b->fence.str(), gate_.fence().str()));
        }
        if (gate_.rejected_unknown() > unknown) {
            rt_.log(LogLevel::kWarn,
                    fmt::format("rejected {} trajectories of rollout {} batch {}: version {} "
                                "was not published by this trainer (it published {}..{})",
                                gate_.rejected_unknown() - unknown, b->rollout, b->batch,
                                b->version, gate_.first(), gate_.current()));
        }
    }
    Json hist = Json::object(), version_hist = Json::object();
    double stale_sum = 0;
    for (const auto& [s, n] : staleness) {
        hist[std::to_string(s)] = n;
        stale_sum += static_cast<double>(s * n);
    }
    for (const auto& [v, n] : versions) version_hist[std::to_string(v)] = n;
    stats = {
        {"rollout_s", rollout_s},
        {"weight_sync_wait_s", wait_s},
        {"rollout_wait_for_trainer_s", trainer_wait_s},
        {"fetch_s", fetch_s},
        {"generated_tokens", tokens},
        {"batches", batches},
        {"staleness_hist", hist},
        {"staleness_mean", batch.empty() ? 0.0 : stale_sum / static_cast<double>(batch.size())},
        {"version_hist", version_hist},
        {"version_min", versions.empty() ? -1 : versions.begin()->first},
        {"version_max", versions.empty() ? -1 : versions.rbegin()->first},
        {"group_min", batch.empty() ? 0 : group_min},
        {"group_max", batch.empty() ? 0 : group_max},
        {"live_rollouts", live},
        {"kv", kv.json()},
        {"prompts", batch.size() / static_cast<size_t>(opt_.group_size)}};
    return Status();
}

Result<bool> TrainerLoop::step() {
    if (step_ >= opt_.steps) return false;
    const Clock& clock = rt_.clock();
    StepReport r;
    const auto t_step = clock.now();
    std::vector<model::Trajectory> batch;
    Status s = collect(batch, r.rollout_stats);
    if (!s.ok()) {
        if (rt_.cancelled()) return false;
        return s;
    }
    r.wait_s = seconds_between(t_step, clock.now());
    const auto t_train = clock.now();
    TANDEM_ASSIGN_OR_RETURN(r.train, learner_.train(batch));
    r.train_s = seconds_between(t_train, clock.now());
    const auto t_publish = clock.now();
    TANDEM_RETURN_IF_ERROR(publish(step_ + 1));
    r.publish_s = seconds_between(t_publish, clock.now());
    ++step_;
    r.step = step_;
    r.info = current_;
    r.step_s = seconds_between(t_step, clock.now());
    TANDEM_RETURN_IF_ERROR(learner_.finished(r));
    return step_ < opt_.steps;
}

Status TrainerLoop::run() {
    TANDEM_RETURN_IF_ERROR(start());
    while (true) {
        TANDEM_ASSIGN_OR_RETURN(bool more, step());
        if (!more) break;
    }
    if (step_ >= opt_.steps) rt_.log(LogLevel::kInfo, fmt::format("trained {} steps", opt_.steps));
    return Status();
}

}  // namespace tandem::trainer
