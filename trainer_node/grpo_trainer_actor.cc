#include "trainer_node/grpo_trainer_actor.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>

#include <fmt/format.h>
#include <zmq.hpp>

#include "common/log.h"
#include "common/model/checkpoint.h"
#include "common/model/layers.h"
#include "common/model/model_weights.h"
#include "common/model/tasks.h"
#include "common/model/trainer.h"
#include "common/net/http_client.h"
#include "common/rl/grpo_protocol.h"
#include "common/rl/trajectory_gate.h"
#include "common/weights/publisher.h"

namespace tandem::trainer {

namespace {

using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

double since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

Result<model::ModelWeights> initial_weights(const config::JobSpec& job,
                                            const model::Vocabulary& vocab) {
    if (job.model.init == "random") {
        TANDEM_ASSIGN_OR_RETURN(auto cfg, model::ModelConfig::from_spec(job.model, vocab.size()));
        return model::ModelWeights::random(cfg, job.model.seed);
    }
    TANDEM_ASSIGN_OR_RETURN(model::Pretrained p, model::load_pretrained(job.model.init));
    if (p.vocab && !(*p.vocab == vocab)) {
        return invalid_argument(
            fmt::format("{}: the checkpoint's vocabulary differs from the task's", job.model.init));
    }
    return std::move(p.weights);
}

// Announces versions to the coordinator's table and, at the same moment, pushes each one (the
// same JSON the table holds: descriptor plus step, data cursor and trainer attempt) to the job's
// rollout actors over a ZeroMQ PUB socket (endpoint "versions"), so they start fetching it as soon
// as it is committed instead of polling the coordinator. The table stays the authority; a
// rollout that missed a message finds the version there. Called on the trainer thread (inside
// Publisher::publish) and at the publisher's destruction; the mutex keeps the socket one user's.
class VersionFeed final : public weights::Announcer {
public:
    VersionFeed(agent::ActorChannel& channel, zmq::context_t& zmq) : inner_(channel), zmq_(zmq) {}

    // Binds the PUB socket on `host`; returns its endpoint.
    std::string bind(const std::string& host) {
        std::lock_guard<std::mutex> lock(mu_);
        pub_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::pub);
        pub_->set(zmq::sockopt::linger, 0);
        pub_->set(zmq::sockopt::sndhwm, 16);
        pub_->bind(fmt::format("tcp://{}:*", host));
        return pub_->get(zmq::sockopt::last_endpoint);
    }
    void describe(Version version, const rl::VersionInfo& info) {
        inner_.describe(version, info);
        std::lock_guard<std::mutex> lock(mu_);
        info_[version] = info;
    }
    Status announce(const weights::VersionDescriptor& d) override {
        Status s = inner_.announce(d);
        std::lock_guard<std::mutex> lock(mu_);
        Json j = weights::to_json(d);
        if (auto it = info_.find(d.version); it != info_.end()) {
            j["step"] = it->second.step;
            j["data_cursor"] = it->second.data_cursor;
            j["trainer_attempt"] = it->second.trainer_attempt;
            info_.erase(info_.begin(), std::next(it));
        }
        if (pub_ && s.ok()) {
            const std::string text = j.dump();
            (void)pub_->send(zmq::buffer(text), zmq::send_flags::dontwait);  // best effort
        }
        return s;
    }
    void retire(JobId job, Version version, uint32_t shard) override {
        inner_.retire(job, version, shard);
    }

private:
    rl::ChannelAnnouncer inner_;
    zmq::context_t& zmq_;
    std::mutex mu_;
    std::unique_ptr<zmq::socket_t> pub_;
    std::map<Version, rl::VersionInfo> info_;  // described, not yet announced
};

// Which of the job's rollout actors the coordinator reports alive (starting or running; not
// pending, failed or stopped), and the trajectories per step that the live ones produce: rollout
// k owns prompts k, k + R, ... of every step. A step whose rollouts are not all alive is taken
// with the live ones' shares; the others' prompts of that step are skipped, so step s still
// covers prompts [s x P, (s + 1) x P) and a checkpoint's data cursor stays s x P. Owned by the
// trainer thread.
class LiveRollouts {
public:
    LiveRollouts(const agent::ActorContext& ctx, const config::JobSpec& job)
        : http_(ctx.coordinator_http),
          token_(ctx.api_token),
          job_id_(ctx.actor.job),
          replicas_(job.rollout.replicas),
          prompts_(job.algorithm.prompts_per_step),
          group_size_(job.algorithm.group_size),
          live_(static_cast<size_t>(job.rollout.replicas), true) {}

    // Asks the coordinator; on failure keeps the last answer. Returns a line to log when the
    // set changed (empty otherwise).
    std::string refresh() {
        checked_ = SteadyClock::now();
        const std::string target = "/api/v1/jobs/" + job_id_.str();
        auto reply = net::http_call(http_, "GET", target, "", token_);
        if (!reply.ok() || reply->status != 200) return "";
        const Json j = Json::parse(reply->body, nullptr, false);
        if (!j.is_object()) return "";
        std::vector<bool> live(live_.size(), false);
        std::string down;
        for (const auto& a : j.value("actors", Json::array())) {
            auto id = ActorId::parse(a.value("actor", ""));
            if (!id.ok() || id->role != ActorRole::kRollout || id->index >= live.size()) continue;
            const std::string phase = a.value("phase", "");
            live[id->index] = phase == "starting" || phase == "running";
            if (!live[id->index])
                down += fmt::format("{}{} {}", down.empty() ? "" : ", ", id->str(), phase);
        }
        if (live == live_) return "";
        live_ = std::move(live);
        const int n = count();
        if (n == replicas_) {
            return fmt::format("all {} rollout actors are alive: steps take all {} prompts again",
                               replicas_, prompts_);
        }
        if (n == 0) return fmt::format("no rollout actor is alive ({}); waiting", down);
        return fmt::format(
            "{} of {} rollout actors alive ({}): steps take their {} of {} prompts, the others' "
            "are skipped (the data cursor still moves {} per step)",
            n, replicas_, down, trajectories() / static_cast<size_t>(group_size_), prompts_,
            prompts_);
    }
    int count() const { return static_cast<int>(std::count(live_.begin(), live_.end(), true)); }
    bool all() const { return count() == replicas_; }
    // Trajectories per step of the live rollouts.
    size_t trajectories() const {
        size_t prompts = 0;
        for (int k = 0; k < replicas_ && k < prompts_; ++k) {
            if (live_[static_cast<size_t>(k)])
                prompts += static_cast<size_t>((prompts_ - k + replicas_ - 1) / replicas_);
        }
        return prompts * static_cast<size_t>(group_size_);
    }
    double checked_s_ago() const { return since(checked_); }

private:
    std::string http_;
    std::string token_;
    JobId job_id_;
    int replicas_, prompts_, group_size_;
    std::vector<bool> live_;  // by rollout index
    SteadyClock::time_point checked_{};
};

// How often a waiting step asks the coordinator which rollouts are alive, and how long a step
// waits before it first asks (while every rollout is alive).
constexpr double kLiveCheckEveryS = 0.25;

class TrainerActor {
public:
    TrainerActor(const agent::ActorContext& ctx, agent::ActorChannel& channel)
        : ctx_(ctx),
          job_(ctx.spec),
          channel_(channel),
          announcer_(channel, zmq_),
          gate_(ctx.spec.async.max_staleness),
          live_rollouts_(ctx, ctx.spec) {}

    Status run();

private:
    Status setup();
    Result<model::ModelWeights> warm_start(model::ModelWeights w);
    Status collect(std::vector<model::Trajectory>& batch, Json& rollout_stats);
    // Numbers this run's versions above every version the job's table already holds.
    Status choose_first_version(std::optional<int64_t> checkpoint_version);
    int64_t version_of(int64_t step) const { return step + epoch_; }
    uint64_t cursor_of(int64_t step) const {
        return start_cursor_ + static_cast<uint64_t>(step - start_step_) *
                                   static_cast<uint64_t>(job_.algorithm.prompts_per_step);
    }
    // Publishes the weights after `step` steps as version_of(step).
    Status publish(int64_t step, double* seconds);
    void report(int64_t step, const model::TrainStats& ts, const Json& rollout_stats, double step_s,
                double train_s, double publish_s, double wait_s);

    const agent::ActorContext& ctx_;
    const config::JobSpec& job_;
    agent::ActorChannel& channel_;
    zmq::context_t zmq_{1};
    VersionFeed announcer_;
    std::unique_ptr<model::Task> task_;
    std::unique_ptr<model::GrpoTrainer> trainer_;
    std::unique_ptr<weights::Publisher> publisher_;
    std::unique_ptr<zmq::socket_t> pull_;
    std::string checkpoint_root_;
    std::ofstream metrics_file_;
    int64_t start_step_ = 0;
    uint64_t start_cursor_ = 0;  // data cursor at start_step_
    int64_t epoch_ = 0;          // version - step for every version this run publishes
    rl::TrajectoryGate gate_;
    std::vector<model::Trajectory> carry_;  // accepted trajectories beyond the last batch
    LiveRollouts live_rollouts_;
};

Status TrainerActor::setup() {
    TANDEM_ASSIGN_OR_RETURN(task_, model::make_task(job_.task));
    TANDEM_ASSIGN_OR_RETURN(model::ModelWeights w, initial_weights(job_, task_->vocab()));
    const std::string job_dir = fmt::format("{}/jobs/{}", ctx_.run_dir, ctx_.actor.job.str());
    std::filesystem::create_directories(job_dir);
    checkpoint_root_ = job_.checkpoint.dir.empty() ? job_dir + "/checkpoints" : job_.checkpoint.dir;
    // The checkpoint to resume from, looked up once (resume: auto and one exists).
    std::optional<std::string> resume_from;
    if (job_.checkpoint.resume == config::ResumeMode::kAuto) {
        if (auto latest = model::latest_checkpoint(checkpoint_root_); latest.ok())
            resume_from = *latest;
    }
    std::optional<int64_t> checkpoint_version;
    if (job_.algorithm.warm_start_steps > 0 && !resume_from) {
        TANDEM_ASSIGN_OR_RETURN(w, warm_start(std::move(w)));
    }
    TANDEM_ASSIGN_OR_RETURN(
        trainer_, model::GrpoTrainer::create(std::move(w), model::TrainerOptions::from_job(job_)));
    if (resume_from) {
        TANDEM_ASSIGN_OR_RETURN(model::TrainerState st, trainer_->restore(*resume_from));
        start_step_ = st.step;
        start_cursor_ = st.data_cursor;
        checkpoint_version = st.version;
        channel_.log("info", fmt::format("resumed from {} at step {} (data cursor {})",
                                         *resume_from, st.step, st.data_cursor));
    }
    TANDEM_RETURN_IF_ERROR(choose_first_version(checkpoint_version));
    metrics_file_.open(job_dir + "/metrics.jsonl", std::ios::app);

    std::string host = "127.0.0.1";
    const Json& actors = ctx_.placement.value("actors", Json::object());
    if (actors.contains(ctx_.actor.str())) host = actors[ctx_.actor.str()].value("host", host);
    channel_.endpoint("versions", announcer_.bind(host));

    weights::PublisherOptions po;
    po.job = ctx_.actor.job;
    po.publisher_id = ctx_.actor.str();
    po.ucx.transports = rl::weight_transports(ctx_.placement);
    po.slots = static_cast<uint32_t>(job_.trainer.weight_slots);
    po.chunk_bytes = static_cast<uint64_t>(job_.trainer.chunk_bytes);
    po.lease_ttl_ms = std::chrono::milliseconds(job_.trainer.lease_ttl_ms);
    TANDEM_ASSIGN_OR_RETURN(
        publisher_, weights::Publisher::create(po, trainer_->weights().layout(), announcer_));

    pull_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::pull);
    pull_->set(zmq::sockopt::linger, 0);
    pull_->set(zmq::sockopt::rcvhwm, 1000);
    pull_->bind(fmt::format("tcp://{}:*", host));
    channel_.endpoint("trajectories", pull_->get(zmq::sockopt::last_endpoint));
    return Status();
}

// Supervised steps on the task's answers (examples from their own cursor range, so RL prompts
// stay unseen); the result becomes version 0 and the KL reference.
Result<model::ModelWeights> TrainerActor::warm_start(model::ModelWeights w) {
    const auto t0 = SteadyClock::now();
    model::TrainerOptions so = model::TrainerOptions::from_job(job_);
    so.algorithm.steps = job_.algorithm.warm_start_steps;
    so.algorithm.optimizer.lr = job_.algorithm.warm_start_lr;
    TANDEM_ASSIGN_OR_RETURN(auto warm, model::GrpoTrainer::create(std::move(w), so));
    model::TaskStream stream(task_.get(), uint64_t{1} << 40);
    std::vector<model::Trajectory> answers(static_cast<size_t>(job_.algorithm.prompts_per_step) *
                                           static_cast<size_t>(job_.algorithm.group_size));
    for (int k = 1; k <= job_.algorithm.warm_start_steps; ++k) {
        for (auto& t : answers) {
            const model::Example ex = stream.next();
            TANDEM_ASSIGN_OR_RETURN(t.prompt, task_->prompt_tokens(ex));
            TANDEM_ASSIGN_OR_RETURN(t.completion, task_->vocab().encode(ex.answer));
            t.completion.push_back(model::Vocabulary::kEos);
            t.behaviour_logprobs.assign(t.completion.size(), 0.0f);
        }
        TANDEM_ASSIGN_OR_RETURN(model::TrainStats ts, warm->supervised_step(answers));
        if (k % 25 == 0 || k == job_.algorithm.warm_start_steps) {
            channel_.log("info", fmt::format("warm start step {}/{}: loss {:.3f}", k,
                                             job_.algorithm.warm_start_steps, ts.loss));
        }
    }
    channel_.log("info", fmt::format("warm start: {} supervised steps in {:.1f} s",
                                     job_.algorithm.warm_start_steps, since(t0)));
    return warm->weights();
}

// Far more versions than a trainer can publish between its agent's death and its own (the
// agent's death kills it: PR_SET_PDEATHSIG).
constexpr int64_t kRestartVersionGap = 1000;

Status TrainerActor::choose_first_version(std::optional<int64_t> checkpoint_version) {
    int64_t first = checkpoint_version.value_or(start_step_);
    // A restarted trainer's predecessor may have published past the checkpoint: those numbers
    // name other weights, so this run's versions start above them (and stay monotonic per job).
    rl::JobClient client(ctx_.coordinator_http, ctx_.actor.job, ctx_.api_token);
    TANDEM_ASSIGN_OR_RETURN(std::optional<int64_t> top, client.max_version());
    if (top && *top >= first) first = *top + 1;
    // A predecessor killed with its node may also have published versions the table never
    // recorded (its agent died with their announcements) and that rollouts already hold: a
    // restarted run numbers from kRestartVersionGap above the table, so its numbers name no
    // other weights and its epoch is above every earlier run's (the rollouts resync on it).
    if (ctx_.attempt > 1 && top) first = std::max(first, *top + 1 + kRestartVersionGap);
    epoch_ = first - start_step_;
    if (epoch_ != 0 || ctx_.attempt > 1) {
        channel_.log("info", fmt::format("attempt {}: step {} is published as version {} (the "
                                         "job's table holds versions up to {})",
                                         ctx_.attempt, start_step_, first, top.value_or(-1)));
    }
    return Status();
}

Status TrainerActor::publish(int64_t step, double* seconds) {
    const auto t0 = SteadyClock::now();
    const int64_t version = version_of(step);
    announcer_.describe(
        static_cast<Version>(version),
        {.step = step, .data_cursor = cursor_of(step), .trainer_attempt = ctx_.attempt});
    TANDEM_RETURN_IF_ERROR(
        publisher_->publish(static_cast<Version>(version), trainer_->weights().bytes()));
    TANDEM_RETURN_IF_ERROR(gate_.published(version));
    if (seconds) *seconds = since(t0);
    return Status();
}

// Takes prompts_per_step whole groups that the gate accepts: versions this trainer published,
// within the staleness bound of its current version. While some rollout actor is not alive
// (LiveRollouts), the step is complete with the live ones' share.
Status TrainerActor::collect(std::vector<model::Trajectory>& batch, Json& rollout_stats) {
    const size_t want = static_cast<size_t>(job_.algorithm.prompts_per_step) *
                        static_cast<size_t>(job_.algorithm.group_size);
    const auto t_collect = SteadyClock::now();
    auto enough = [&] {
        if (batch.size() >= want) return true;
        // Nobody alive: wait (a rollout is placed again, or the coordinator ends the job).
        const size_t live_share = live_rollouts_.trajectories();
        return !live_rollouts_.all() && live_share > 0 && batch.size() >= live_share;
    };
    batch.clear();
    std::map<int64_t, int64_t> staleness, versions;
    double rollout_s = 0, wait_s = 0, fetch_s = 0, trainer_wait_s = 0;
    int64_t tokens = 0, batches = 0;
    uint64_t group_min = UINT64_MAX, group_max = 0;
    auto take = [&](model::Trajectory&& t) {
        // Carried trajectories are judged again: they may have gone stale since.
        if (gate_.check(t.version) != rl::TrajectoryGate::Verdict::kAccept) return;
        if (batch.size() < want) {
            staleness[gate_.current() - t.version] += 1;
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
    for (auto& t : carried) take(std::move(t));
    while (!enough()) {
        // Ask the coordinator which rollouts are alive while some is not, or once the step has
        // waited a while (a rollout may have just been lost).
        if ((!live_rollouts_.all() || since(t_collect) > kLiveCheckEveryS) &&
            live_rollouts_.checked_s_ago() > kLiveCheckEveryS) {
            if (const std::string change = live_rollouts_.refresh(); !change.empty())
                channel_.log("info", change);
            if (enough()) break;
        }
        zmq::pollitem_t item{pull_->handle(), 0, ZMQ_POLLIN, 0};
        int ready = 0;
        try {
            ready = zmq::poll(&item, 1, std::chrono::milliseconds(50));
        } catch (const zmq::error_t&) {
            ready = 0;  // interrupted by a signal: look again
        }
        if (ready <= 0) continue;
        zmq::message_t msg;
        auto r = pull_->recv(msg, zmq::recv_flags::dontwait);
        if (!r) continue;
        auto b = rl::TrajectoryBatch::decode(msg.to_string());
        if (!b.ok()) {
            channel_.log("warn", b.status().message());
            continue;
        }
        rollout_s = std::max(rollout_s, b->rollout_s);
        wait_s = std::max(wait_s, b->weight_sync_wait_s);
        trainer_wait_s = std::max(trainer_wait_s, b->trainer_wait_s);
        fetch_s = std::max(fetch_s, b->fetch_s);
        tokens += b->generated_tokens;
        ++batches;
        const int64_t unknown_before = gate_.rejected_unknown();
        for (auto& t : b->trajectories) take(std::move(t));
        if (const int64_t n = gate_.rejected_unknown() - unknown_before; n > 0) {
            channel_.log(
                "warn",
                fmt::format("rejected {} trajectories of rollout {} batch {}: version {} "
                            "was not published by this trainer (it published {}..{})",
                            n, b->rollout, b->batch, b->version, gate_.first(), gate_.current()));
        }
    }
    Json hist = Json::object(), version_hist = Json::object();
    double stale_sum = 0;
    for (const auto& [s, n] : staleness) {
        hist[std::to_string(s)] = n;
        stale_sum += static_cast<double>(s * n);
    }
    for (const auto& [v, n] : versions) version_hist[std::to_string(v)] = n;
    rollout_stats = {
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
        {"live_rollouts", live_rollouts_.count()},
        {"prompts", batch.size() / static_cast<size_t>(job_.algorithm.group_size)}};
    return Status();
}

void TrainerActor::report(int64_t step, const model::TrainStats& ts, const Json& rs, double step_s,
                          double train_s, double publish_s, double wait_s) {
    const double rollout_tokens = rs.value("generated_tokens", 0.0);
    Json v = {{"rollout/reward_mean", ts.reward_mean},
              {"rollout/reward_min", ts.reward_min},
              {"rollout/reward_max", ts.reward_max},
              {"rollout/response_length", ts.response_length_mean},
              {"train/policy_loss", ts.loss},
              {"train/kl", ts.kl},
              {"train/entropy", ts.entropy},
              {"train/grad_norm", ts.grad_norm},
              {"train/lr", ts.lr},
              {"train/tokens", ts.tokens},
              {"rollout/generated_tokens", rollout_tokens},
              {"train/clip_fraction", ts.clip_fraction},
              {"weights/version", version_of(step)},
              {"weights/staleness_mean", rs["staleness_mean"]},
              {"weights/staleness_hist", rs["staleness_hist"]},
              {"weights/consumed_versions", rs["version_hist"]},
              {"weights/consumed_version_min", rs["version_min"]},
              {"weights/consumed_version_max", rs["version_max"]},
              {"weights/dropped_trajectories", gate_.dropped_stale()},
              {"weights/rejected_unknown_version", gate_.rejected_unknown()},
              {"data/cursor", cursor_of(step)},
              {"data/group_min", rs["group_min"]},
              {"data/group_max", rs["group_max"]},
              {"data/prompts", rs["prompts"]},
              {"rollout/live_actors", rs["live_rollouts"]},
              {"trainer/attempt", ctx_.attempt},
              {"timing_s/rollout", rs["rollout_s"]},
              {"timing_s/train", train_s},
              {"timing_s/publish", publish_s},
              {"timing_s/weight_sync_wait", rs["weight_sync_wait_s"]},
              {"timing_s/trajectory_wait", wait_s},
              // What of this step's wait for trajectories the rollouts may have spent blocked on
              // a weight transfer: weight_sync_wait, but no more than the step waited (in async
              // mode a rollout ahead of the trainer fetches while the trainer trains).
              {"timing_s/weight_sync_stall", std::min(wait_s, rs.value("weight_sync_wait_s", 0.0))},
              {"timing_s/rollout_wait_for_trainer", rs["rollout_wait_for_trainer_s"]},
              {"timing_s/weight_fetch", rs["fetch_s"]},
              {"timing_s/step", step_s},
              {"throughput/rollout_tokens_per_s", step_s > 0 ? rollout_tokens / step_s : 0.0},
              {"throughput/train_tokens_per_s",
               train_s > 0 ? static_cast<double>(ts.tokens) / train_s : 0.0}};
    // The coordinator takes flat numbers; the histograms go to the JSONL file only.
    Json flat = v;
    flat.erase("weights/staleness_hist");
    flat.erase("weights/consumed_versions");
    channel_.metrics(step, flat);
    if (metrics_file_)
        metrics_file_ << Json{{"step", step}, {"metrics", v}}.dump() << "\n" << std::flush;
    channel_.progress({{"step", step},
                       {"fraction", static_cast<double>(step) / job_.algorithm.steps},
                       {"reward", ts.reward_mean}});
}

Status TrainerActor::run() {
    TANDEM_RETURN_IF_ERROR(setup());
    TANDEM_RETURN_IF_ERROR(publish(start_step_, nullptr));
    channel_.log("info",
                 fmt::format("published version {} ({} bytes) at step {}; training {} steps",
                             version_of(start_step_), trainer_->weights().bytes().size(),
                             start_step_, job_.algorithm.steps));
    std::vector<model::Trajectory> batch;
    for (int64_t step = start_step_; step < job_.algorithm.steps; ++step) {
        const auto t_step = SteadyClock::now();
        Json rs;
        TANDEM_RETURN_IF_ERROR(collect(batch, rs));
        const double wait_s = since(t_step);
        const auto t_train = SteadyClock::now();
        TANDEM_ASSIGN_OR_RETURN(model::TrainStats ts, trainer_->step(batch));
        const double train_s = since(t_train);
        double publish_s = 0;
        TANDEM_RETURN_IF_ERROR(publish(step + 1, &publish_s));
        report(step + 1, ts, rs, since(t_step), train_s, publish_s, wait_s);
        const int every = job_.checkpoint.every_steps;
        if (every > 0 && (step + 1) % every == 0) {
            model::TrainerState st;
            st.step = step + 1;
            st.version = version_of(step + 1);
            st.data_cursor = cursor_of(step + 1);
            TANDEM_ASSIGN_OR_RETURN(
                std::string path, trainer_->save_checkpoint(checkpoint_root_, st, &task_->vocab()));
            (void)model::prune_checkpoints(checkpoint_root_, job_.checkpoint.keep_last);
            channel_.log("info", fmt::format("checkpoint {}", path));
        }
    }
    channel_.log("info", fmt::format("trained {} steps", job_.algorithm.steps));
    return Status();
}

}  // namespace

int run_grpo_trainer(const agent::ActorContext& ctx, agent::ActorChannel& channel) {
    model::set_blas_threads(1);  // several actors share a node's cores
    TrainerActor actor(ctx, channel);
    if (Status s = actor.run(); !s.ok()) {
        channel.error(s.message());
        return 1;
    }
    return 0;
}

}  // namespace tandem::trainer
