#include "rollout_node/grpo_rollout_actor.h"

#include <chrono>
#include <future>
#include <thread>

#include <fmt/format.h>
#include <zmq.hpp>

#include "common/model/generate.h"
#include "common/model/job_setup.h"
#include "common/model/layers.h"
#include "common/model/model_weights.h"
#include "common/model/params.h"
#include "common/model/rng.h"
#include "common/model/tasks.h"
#include "common/rl/grpo_protocol.h"
#include "common/weights/reader.h"

namespace tandem::rollout {

namespace {

using SteadyClock = std::chrono::steady_clock;

double since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

class RolloutActor {
public:
    RolloutActor(const agent::ActorContext& ctx, agent::ActorChannel& channel)
        : ctx_(ctx),
          job_(ctx.spec),
          channel_(channel),
          client_(ctx.coordinator_http, ctx.actor.job) {}

    Status run();

private:
    Status setup();
    // Starts fetching the newest version if it is newer than what this actor holds or fetches.
    // Notices a new trainer run (a higher epoch: the trainer restarted) and sets resync_.
    Status poll_versions();
    // Makes the fetched version current if one is ready; waits until the current version is at
    // least `min_version` and belongs to the trainer run this actor follows. Returns early with
    // resync_ set when a new trainer run appears. Adds the time blocked on a transfer to
    // *sync_wait_s and on the trainer to *trainer_wait_s.
    Status ensure_version(int64_t min_version, double* sync_wait_s, double* trainer_wait_s);
    // Follows the trainer run that published the newest version: waits for its first version,
    // connects to its trajectory socket (a restarted trainer binds a new one) and returns the
    // batch (training step) to generate next.
    Result<int64_t> resync();
    uint64_t cursor_of(int64_t batch) const {
        return base_.data_cursor + static_cast<uint64_t>(batch - base_.step) *
                                       static_cast<uint64_t>(job_.algorithm.prompts_per_step);
    }

    const agent::ActorContext& ctx_;
    const config::JobSpec& job_;
    agent::ActorChannel& channel_;
    rl::JobClient client_;
    std::unique_ptr<model::Task> task_;
    std::optional<model::GroupGenerator> generator_;
    std::unique_ptr<weights::Reader> reader_;
    std::future<Status> fetching_;
    std::optional<Version> fetching_version_;
    std::optional<Version> newest_seen_;
    // The trainer run followed: its epoch (version - step), one of its versions' info (maps
    // batches to data cursors) and the lowest version of it this actor will use.
    std::optional<int64_t> epoch_;
    rl::VersionInfo base_;
    int64_t epoch_floor_ = 0;
    bool resync_ = true;
    std::string endpoint_;
    SteadyClock::time_point fetch_started_;
    double last_fetch_s_ = 0;
    zmq::context_t zmq_{1};
    std::unique_ptr<zmq::socket_t> push_;
};

Status RolloutActor::setup() {
    TANDEM_ASSIGN_OR_RETURN(task_, model::make_task(job_.task));
    TANDEM_ASSIGN_OR_RETURN(auto cfg,
                            model::ModelConfig::from_spec(job_.model, task_->vocab().size()));
    if (job_.model.init != "random") {
        TANDEM_ASSIGN_OR_RETURN(model::Pretrained p, model::load_pretrained(job_.model.init));
        cfg = p.weights.config();
    }
    TANDEM_RETURN_IF_ERROR(model::check_context_length(job_, task_->max_prompt_tokens()));
    TANDEM_ASSIGN_OR_RETURN(
        auto gen, model::GroupGenerator::create(cfg, model::GeneratorOptions::from_job(job_)));
    generator_.emplace(std::move(gen));
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, model::make_param_layout(cfg));
    weights::ReaderOptions ro;
    ro.job = ctx_.actor.job;
    ro.reader_id = ctx_.actor.str();
    TANDEM_ASSIGN_OR_RETURN(reader_, weights::Reader::create(ro, std::move(layout)));

    return Status();
}

Status RolloutActor::poll_versions() {
    if (fetching_.valid()) return Status();  // one fetch at a time
    TANDEM_ASSIGN_OR_RETURN(auto latest, client_.latest_version());
    if (!latest) return Status();
    const int64_t version = static_cast<int64_t>(latest->descriptor.version);
    // A publisher that does not describe its versions: version k is step k.
    const rl::VersionInfo info = latest->info.value_or(
        rl::VersionInfo{.step = version,
                        .data_cursor = static_cast<uint64_t>(version) *
                                       static_cast<uint64_t>(job_.algorithm.prompts_per_step)});
    const int64_t epoch = info.epoch(version);
    // A restarted trainer numbers its versions above its predecessor's while its steps go back
    // to its checkpoint, so its epoch is higher; an older epoch is a gone trainer's.
    if (epoch_ && epoch < *epoch_) return Status();
    if (!epoch_ || epoch > *epoch_) {
        if (epoch_) {
            channel_.log("info",
                         fmt::format("the trainer restarted (attempt {}): version {} is "
                                     "step {}, data cursor {}",
                                     info.trainer_attempt, version, info.step, info.data_cursor));
        }
        epoch_ = epoch;
        base_ = info;
        epoch_floor_ = version;
        resync_ = true;
    }
    newest_seen_ = latest->descriptor.version;
    const auto have = reader_->fetched_version();
    if (have && *have >= latest->descriptor.version) return Status();
    fetching_version_ = latest->descriptor.version;
    fetch_started_ = SteadyClock::now();
    fetching_ = reader_->fetch_async(latest->descriptor);
    return Status();
}

Status RolloutActor::ensure_version(int64_t min_version, double* sync_wait_s,
                                    double* trainer_wait_s) {
    const bool following = !resync_;  // false while resync() waits for a run's first version
    min_version = std::max(min_version, epoch_floor_);
    while (true) {
        TANDEM_RETURN_IF_ERROR(poll_versions());
        if (following && resync_) return Status();
        min_version = std::max(min_version, epoch_floor_);
        if (fetching_.valid() &&
            fetching_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
            Status s = fetching_.get();
            last_fetch_s_ = since(fetch_started_);
            fetching_version_.reset();
            if (!s.ok()) {
                // The publisher may be gone (the job is ending) or restarting: try again later.
                channel_.log("warn", fmt::format("fetching a version failed: {}", s.message()));
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
            }
            continue;  // a newer one may be out already
        }
        reader_->swap();  // step boundary: the newest fetched version becomes current
        auto cur = reader_->current();
        if (cur && static_cast<int64_t>(cur->version()) >= min_version) break;
        // Blocked: on the transfer of a version (weight sync), or on the trainer still training.
        const auto t_wait = SteadyClock::now();
        if (fetching_.valid()) {
            fetching_.wait_for(std::chrono::milliseconds(20));
            *sync_wait_s += since(t_wait);
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            *trainer_wait_s += since(t_wait);
        }
    }
    return Status();
}

Result<int64_t> RolloutActor::resync() {
    double sync_wait = 0, trainer_wait = 0;
    // Wait for the newest trainer run's first version; a newer run may appear meanwhile.
    TANDEM_RETURN_IF_ERROR(ensure_version(0, &sync_wait, &trainer_wait));
    resync_ = false;
    // Its trajectory socket: announced before its first version, so it is there now (an older
    // run's address is cleared when the coordinator restarts the trainer).
    const std::string trainer = ActorId{ctx_.actor.job, ActorRole::kTrainer, 0}.str();
    std::optional<std::string> endpoint;
    const auto deadline = SteadyClock::now() + std::chrono::minutes(5);
    while (true) {
        auto e = client_.endpoint(trainer, "trajectories");
        if (e.ok() && *e) {
            endpoint = *e;
            break;
        }
        if (SteadyClock::now() > deadline)
            return deadline_exceeded("the trainer did not announce its trajectory socket");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (*endpoint != endpoint_ || !push_) {
        // Batches still queued for a gone trainer are dropped with the old socket.
        push_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::push);
        push_->set(zmq::sockopt::linger, 2000);
        push_->set(zmq::sockopt::sndhwm, 64);
        push_->connect(*endpoint);
        endpoint_ = *endpoint;
        channel_.log("info", fmt::format("pushing trajectories to {}", *endpoint));
    }
    // Start at the trainer's current step (a resumed trainer continues its data cursor).
    return static_cast<int64_t>(reader_->current()->version()) - *epoch_;
}

Status RolloutActor::run() {
    TANDEM_RETURN_IF_ERROR(setup());
    const int R = job_.rollout.replicas, P = job_.algorithm.prompts_per_step,
              G = job_.algorithm.group_size;
    const int me = static_cast<int>(ctx_.actor.index);
    // This actor's share of every step's prompts: indices me, me + R, ...
    std::vector<int> mine;
    for (int p = me; p < P; p += R) mine.push_back(p);
    std::vector<model::Example> examples(mine.size());
    std::vector<std::vector<int32_t>> prompts(mine.size());
    int64_t batch = 0;
    while (true) {
        if (resync_) {
            TANDEM_ASSIGN_OR_RETURN(batch, resync());
            continue;  // a newer run may have appeared while connecting
        }
        rl::TrajectoryBatch out;
        TANDEM_RETURN_IF_ERROR(ensure_version(batch - job_.async.max_staleness + *epoch_,
                                              &out.weight_sync_wait_s, &out.trainer_wait_s));
        if (resync_) continue;
        const auto t0 = SteadyClock::now();
        auto view =
            reader_->current();  // held for the whole batch: the buffer is not reused under it
        const auto* params = reinterpret_cast<const float*>(view->bytes().data());
        const uint64_t first = cursor_of(batch);
        for (size_t i = 0; i < mine.size(); ++i) {
            const uint64_t cursor = first + static_cast<uint64_t>(mine[i]);
            examples[i] = task_->example(cursor);
            TANDEM_ASSIGN_OR_RETURN(prompts[i], task_->prompt_tokens(examples[i]));
        }
        auto so = model::SamplingOptions::from_spec(
            job_.rollout.sampling,
            model::mix_seed(job_.task.seed, 0x726f6c6c, static_cast<uint64_t>(batch),
                            static_cast<uint64_t>(me)));
        model::GenerateStats gs;
        TANDEM_ASSIGN_OR_RETURN(auto completions,
                                generator_->generate(params, prompts, G, so, &gs));
        out.rollout = me;
        out.batch = batch;
        out.version = static_cast<int64_t>(view->version());
        out.generated_tokens = gs.generated_tokens;
        for (auto& c : completions) {
            model::Trajectory t;
            t.prompt = prompts[c.prompt];
            t.reward = task_->score(examples[c.prompt], task_->vocab().decode(c.tokens));
            t.completion = std::move(c.tokens);
            t.behaviour_logprobs = std::move(c.logprobs);
            t.group = first + static_cast<uint64_t>(mine[c.prompt]);
            t.version = out.version;
            out.trajectories.push_back(std::move(t));
        }
        out.rollout_s = since(t0);
        out.fetch_s = last_fetch_s_;
        const std::string bytes = out.encode();
        push_->send(zmq::buffer(bytes), zmq::send_flags::none);
        ++batch;
    }
}

}  // namespace

int run_grpo_rollout(const agent::ActorContext& ctx, agent::ActorChannel& channel) {
    model::set_blas_threads(1);  // several actors share a node's cores
    RolloutActor actor(ctx, channel);
    if (Status s = actor.run(); !s.ok()) {
        channel.error(s.message());
        return 1;
    }
    return 0;
}

}  // namespace tandem::rollout
