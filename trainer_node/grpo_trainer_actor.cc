#include "trainer_node/grpo_trainer_actor.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <zmq.hpp>

#include "common/gpu/device_choice.h"
#include "common/log.h"
#include "common/model/checkpoint.h"
#include "common/model/layers.h"
#include "common/model/model_weights.h"
#include "common/model/tasks.h"
#include "common/model/trainer.h"
#include "common/net/trajectory_curve.h"
#include "common/rl/grpo_protocol.h"
#include "common/rl/task_factory.h"
#include "common/rl/weight_telemetry.h"
#include "common/weights/publisher.h"
#include "trainer_node/policy.h"
#include "trainer_node/trainer_loop.h"

namespace tandem::trainer {

namespace {

using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

double since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// The trainer's PULL socket, announced as its "trajectories" endpoint. With the placement's
// trajectory keys it is a CURVE server that accepts only the job's rollouts (docs/security.md).
class ZmqInbox final : public TrajectoryInbox {
public:
    explicit ZmqInbox(zmq::context_t& zmq) : zmq_(zmq), pull_(zmq, zmq::socket_type::pull) {
        pull_.set(zmq::sockopt::linger, 0);
        pull_.set(zmq::sockopt::rcvhwm, 1000);
    }
    Status bind(const std::string& host, const Json& placement) {
        TANDEM_ASSIGN_OR_RETURN(zap_, net::secure_trajectory_server(zmq_, pull_, placement));
        try {
            pull_.bind(fmt::format("tcp://{}:*", host));
        } catch (const zmq::error_t& e) {
            return unavailable(
                fmt::format("cannot bind the trajectory socket on {}: {}", host, e.what()));
        }
        return Status();
    }
    std::string endpoint() const { return pull_.get(zmq::sockopt::last_endpoint); }
    // Connections refused by CURVE (a key not of this job's rollouts, a peer without CURVE).
    uint64_t refused() const { return zap_ ? zap_->failed_handshakes() : 0; }
    Result<std::optional<rl::TrajectoryBatch>> next(Clock::TimePoint deadline) override {
        const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - SystemClock::instance().now());
        zmq::pollitem_t item{pull_.handle(), 0, ZMQ_POLLIN, 0};
        int ready = 0;
        try {
            ready = zmq::poll(&item, 1, std::max(wait, std::chrono::milliseconds(0)));
        } catch (const zmq::error_t&) {
            ready = 0;  // interrupted by a signal: the caller looks again
        }
        if (ready <= 0) return std::optional<rl::TrajectoryBatch>();
        zmq::message_t msg;
        if (!pull_.recv(msg, zmq::recv_flags::dontwait))
            return std::optional<rl::TrajectoryBatch>();
        auto b = rl::TrajectoryBatch::decode(msg.to_string());
        if (!b.ok()) return invalid_argument(b.status().message());
        return std::optional<rl::TrajectoryBatch>(std::move(*b));
    }

private:
    zmq::context_t& zmq_;
    zmq::socket_t pull_;
    std::unique_ptr<net::ZapHandler> zap_;  // null without CURVE
};

// The GRPO model behind the loop: warm start, training steps, publishing into registered memory,
// metrics and checkpoints, on the device trainer.device resolves to (policy.h).
class GrpoLearner final : public Learner {
public:
    explicit GrpoLearner(runtime::JobRuntime& rt) : rt_(rt), job_(rt.spec()), announcer_(rt) {}

    // Builds the policy (or resumes a checkpoint) and the publisher; fills the loop's start.
    Status setup(TrainerLoopOptions& opt);
    void watch(const rl::TrajectoryGate* gate) { gate_ = gate; }
    void watch_inbox(const ZmqInbox* inbox) { inbox_ = inbox; }

    Result<model::TrainStats> train(std::vector<model::Trajectory>& batch) override {
        return policy_->step(batch);
    }
    Status publish(const runtime::VersionInfo& info) override {
        announcer_.expect(info);
        return policy_->publish(*publisher_, info.version);
    }
    Status finished(const StepReport& r) override;

private:
    Result<std::unique_ptr<Policy>> make_policy(model::ModelWeights w,
                                                const model::TrainerOptions& options) const;
    Result<model::ModelWeights> warm_start(model::ModelWeights w);
    void report(const StepReport& r);

    runtime::JobRuntime& rt_;
    const config::JobSpec& job_;
    runtime::RuntimeAnnouncer announcer_;
    std::unique_ptr<rl::JobTask> task_;
    gpu::DeviceChoice device_;
    std::unique_ptr<Policy> policy_;
    std::unique_ptr<weights::Publisher> publisher_;
    std::string checkpoint_root_;
    std::ofstream metrics_file_;
    const rl::TrajectoryGate* gate_ = nullptr;
    const ZmqInbox* inbox_ = nullptr;
    rl::WeightTelemetry telemetry_;  // reported as progress["weights"]
    double publish_seconds_ = 0;
};

Result<std::unique_ptr<Policy>> GrpoLearner::make_policy(
    model::ModelWeights w, const model::TrainerOptions& options) const {
    if (device_.cuda()) return make_cuda_policy(w, options);
    return make_cpu_policy(std::move(w), options);
}

Status GrpoLearner::setup(TrainerLoopOptions& opt) {
    // trainer.device against the GPU the scheduler gave this actor (CUDA_VISIBLE_DEVICES is set).
    TANDEM_ASSIGN_OR_RETURN(device_, gpu::resolve_device(job_.trainer.device,
                                                         gpu::probe_devices(gpu::assigned_gpus(
                                                             rt_.placement(), rt_.actor().str())),
                                                         rt_.actor().job.str(), "trainer.device"));
    rt_.log(LogLevel::kInfo, fmt::format("device: {}", device_.reason));
    TANDEM_ASSIGN_OR_RETURN(task_, rl::make_job_task(job_));
    TANDEM_ASSIGN_OR_RETURN(model::ModelWeights w, rl::initial_policy(job_, *task_));
    const std::string job_dir = fmt::format("{}/jobs/{}", rt_.run_dir(), rt_.actor().job.str());
    std::filesystem::create_directories(job_dir);
    checkpoint_root_ = job_.checkpoint.dir.empty() ? job_dir + "/checkpoints" : job_.checkpoint.dir;
    std::optional<std::string> resume_from;
    if (job_.checkpoint.resume == config::ResumeMode::kAuto) {
        if (auto latest = model::latest_checkpoint(checkpoint_root_); latest.ok())
            resume_from = *latest;
    }
    if (job_.algorithm.warm_start_steps > 0 && !resume_from) {
        TANDEM_ASSIGN_OR_RETURN(w, warm_start(std::move(w)));
    }
    TANDEM_ASSIGN_OR_RETURN(policy_,
                            make_policy(std::move(w), model::TrainerOptions::from_job(job_)));
    if (resume_from) {
        TANDEM_ASSIGN_OR_RETURN(model::TrainerState st, policy_->restore(*resume_from));
        opt.start_step = st.step;
        opt.start_cursor = st.data_cursor;
        opt.first_version = static_cast<Version>(std::max<int64_t>(0, st.version));
        rt_.log(LogLevel::kInfo, fmt::format("resumed from {} at step {} (data cursor {})",
                                             *resume_from, st.step, st.data_cursor));
    }
    metrics_file_.open(job_dir + "/metrics.jsonl", std::ios::app);

    weights::PublisherOptions po;
    po.job = rt_.actor().job;
    po.publisher_id = rt_.actor().str();
    po.ucx.transports = rl::weight_transports(rt_.placement());
    po.slots = static_cast<uint32_t>(job_.trainer.weight_slots);
    po.chunk_bytes = static_cast<uint64_t>(job_.trainer.chunk_bytes);
    po.lease_ttl_ms = std::chrono::milliseconds(job_.trainer.lease_ttl_ms);
    po.device_slots =
        device_.cuda() && gpu_rollout_on_trainer_host(rt_.placement(), rt_.actor().str());
    TANDEM_ASSIGN_OR_RETURN(publisher_,
                            weights::Publisher::create(po, policy_->layout(), announcer_));
    return Status();
}

Status GrpoLearner::finished(const StepReport& r) {
    report(r);
    const int every = job_.checkpoint.every_steps;
    if (every > 0 && r.step % every == 0) {
        model::TrainerState st;
        st.step = r.step;
        st.version = static_cast<int64_t>(r.info.version);
        st.data_cursor = r.info.data_cursor;
        TANDEM_ASSIGN_OR_RETURN(std::string path,
                                policy_->save_checkpoint(checkpoint_root_, st, task_->vocab()));
        (void)model::prune_checkpoints(checkpoint_root_, job_.checkpoint.keep_last);
        rt_.log(LogLevel::kInfo, fmt::format("checkpoint {}", path));
    }
    return Status();
}

// Supervised steps on the task's answers (examples from their own cursor range, so RL prompts
// stay unseen); the result becomes version 0 and the KL reference.
Result<model::ModelWeights> GrpoLearner::warm_start(model::ModelWeights w) {
    const auto t0 = SteadyClock::now();
    model::TrainerOptions so = model::TrainerOptions::from_job(job_);
    so.algorithm.steps = job_.algorithm.warm_start_steps;
    so.algorithm.optimizer.lr = job_.algorithm.warm_start_lr;
    TANDEM_ASSIGN_OR_RETURN(auto warm, make_policy(std::move(w), so));
    uint64_t cursor = uint64_t{1} << 40;
    std::vector<model::Trajectory> answers(static_cast<size_t>(job_.algorithm.prompts_per_step) *
                                           static_cast<size_t>(job_.algorithm.group_size));
    for (int k = 1; k <= job_.algorithm.warm_start_steps; ++k) {
        for (auto& t : answers) {
            const rl::TextExample ex = task_->example(cursor++);
            TANDEM_ASSIGN_OR_RETURN(t.prompt, task_->prompt_tokens(ex));
            TANDEM_ASSIGN_OR_RETURN(t.completion, task_->answer_tokens(ex));
            t.behaviour_logprobs.assign(t.completion.size(), 0.0f);
        }
        TANDEM_ASSIGN_OR_RETURN(model::TrainStats ts, warm->supervised_step(answers));
        if (k % 25 == 0 || k == job_.algorithm.warm_start_steps) {
            rt_.log(LogLevel::kInfo, fmt::format("warm start step {}/{}: loss {:.3f}", k,
                                                 job_.algorithm.warm_start_steps, ts.loss));
        }
    }
    rt_.log(LogLevel::kInfo,
            fmt::format("warm start: {} supervised steps in {:.1f} s on {}",
                        job_.algorithm.warm_start_steps, since(t0), warm->device()));
    return warm->weights();
}

void GrpoLearner::report(const StepReport& r) {
    const int64_t step = r.step;
    const model::TrainStats& ts = r.train;
    const Json& rs = r.rollout_stats;
    const double step_s = r.step_s, train_s = r.train_s, publish_s = r.publish_s, wait_s = r.wait_s;
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
              {"train/tis_weight_mean", ts.tis_weight_mean},
              {"train/tis_truncated_fraction", ts.tis_truncated_fraction},
              {"weights/version", r.info.version},
              {"weights/fence_trainer_epoch", r.info.fence.trainer_epoch},
              {"weights/staleness_mean", rs["staleness_mean"]},
              {"weights/staleness_hist", rs["staleness_hist"]},
              {"weights/consumed_versions", rs["version_hist"]},
              {"weights/consumed_version_min", rs["version_min"]},
              {"weights/consumed_version_max", rs["version_max"]},
              {"weights/dropped_trajectories", gate_ ? gate_->dropped_stale() : 0},
              {"weights/rejected_unknown_version", gate_ ? gate_->rejected_unknown() : 0},
              {"weights/rejected_fenced", gate_ ? gate_->rejected_fenced() : 0},
              {"trajectories/refused_total", inbox_ ? inbox_->refused() : 0},
              {"data/cursor", r.info.data_cursor},
              {"data/group_min", rs["group_min"]},
              {"data/group_max", rs["group_max"]},
              {"data/prompts", rs["prompts"]},
              {"rollout/live_actors", rs["live_rollouts"]},
              {"trainer/attempt", rt_.attempt()},
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
    // The rollouts' KV caches (docs/kv-cache.md): kv/bytes_in_use, kv/budget_bytes, ...
    if (rs.contains("kv")) {
        for (const auto& [name, value] : rs["kv"].items()) v["kv/" + name] = value;
    }
    // The coordinator takes flat numbers; the histograms go to the JSONL file only.
    Json flat = v;
    flat.erase("weights/staleness_hist");
    flat.erase("weights/consumed_versions");
    // The staleness histogram as numbers: weights/staleness_hist/<versions behind> = trajectories.
    if (rs.contains("staleness_hist") && rs["staleness_hist"].is_object()) {
        for (const auto& [behind, n] : rs["staleness_hist"].items())
            flat["weights/staleness_hist/" + behind] = n;
    }
    rt_.metrics(step, flat);
    if (metrics_file_)
        metrics_file_ << Json{{"step", step}, {"metrics", v}}.dump() << "\n" << std::flush;
    telemetry_.add_staleness(rs.value("staleness_hist", Json::object()));
    publish_seconds_ += publish_s;
    const weights::Publisher::Stats ps = publisher_->stats();
    telemetry_.set_publisher({.versions = ps.published,
                              .bytes = ps.published * publisher_->shard_range().size(),
                              .lease_waits = ps.reclaim_waits,
                              .live_leases = ps.live_leases,
                              .served_bytes = ps.bytes_served,
                              .seconds = publish_seconds_});
    rt_.progress({{"step", step},
                  {"fraction", static_cast<double>(step) / job_.algorithm.steps},
                  {"reward", ts.reward_mean},
                  {"weights", telemetry_.to_json()}});
}

}  // namespace

bool gpu_rollout_on_trainer_host(const Json& placement, std::string_view trainer) {
    const auto actors = placement.find("actors");
    if (actors == placement.end() || !actors->is_object()) return false;
    const auto me = actors->find(std::string(trainer));
    if (me == actors->end() || !me->is_object()) return false;
    const std::string host = me->value("host", "");
    if (host.empty()) return false;
    for (const auto& [name, a] : actors->items()) {
        auto id = ActorId::parse(name);
        if (!id.ok() || id->role != ActorRole::kRollout || !a.is_object()) continue;
        if (a.value("host", "") == host && a.contains("gpus") && !a["gpus"].empty()) return true;
    }
    return false;
}

Status run_grpo_trainer(runtime::JobRuntime& rt) {
    model::set_blas_threads(1);  // several actors share a node's cores
    const config::JobSpec& job = rt.spec();
    TrainerLoopOptions opt;
    opt.steps = job.algorithm.steps;
    opt.prompts_per_step = job.algorithm.prompts_per_step;
    opt.group_size = job.algorithm.group_size;
    opt.replicas = job.rollout.replicas;
    opt.max_staleness = job.async.max_staleness;
    GrpoLearner learner(rt);
    TANDEM_RETURN_IF_ERROR(learner.setup(opt));
    zmq::context_t zmq(1);
    ZmqInbox inbox(zmq);
    TANDEM_RETURN_IF_ERROR(inbox.bind(rt.bind_host(), rt.placement()));
    TANDEM_RETURN_IF_ERROR(rt.announce_endpoint("trajectories", inbox.endpoint()));
    TrainerLoop loop(rt, learner, inbox, opt);
    learner.watch(&loop.gate());
    learner.watch_inbox(&inbox);
    return loop.run();
}

}  // namespace tandem::trainer
