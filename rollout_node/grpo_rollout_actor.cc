#include "rollout_node/grpo_rollout_actor.h"

#include <chrono>
#include <future>
#include <thread>

#include <fmt/format.h>
#include <zmq.hpp>

#include "common/model/generate.h"
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
    Status poll_versions();
    // Makes the fetched version current if one is ready; waits for it when `min_version` requires.
    // Adds the time blocked on a transfer to *sync_wait_s and on the trainer to *trainer_wait_s.
    Status ensure_version(int64_t min_version, double* sync_wait_s, double* trainer_wait_s);

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
    TANDEM_ASSIGN_OR_RETURN(auto gen, model::GroupGenerator::create(cfg));
    generator_.emplace(std::move(gen));
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, model::make_param_layout(cfg));
    weights::ReaderOptions ro;
    ro.job = ctx_.actor.job;
    ro.reader_id = ctx_.actor.str();
    TANDEM_ASSIGN_OR_RETURN(reader_, weights::Reader::create(ro, std::move(layout)));

    // The trainer announces its trajectory socket once it is up.
    const std::string trainer = ActorId{ctx_.actor.job, ActorRole::kTrainer, 0}.str();
    std::optional<std::string> endpoint;
    const auto deadline = SteadyClock::now() + std::chrono::minutes(5);
    while (!endpoint) {
        auto e = client_.endpoint(trainer, "trajectories");
        if (e.ok()) endpoint = *e;
        if (endpoint) break;
        if (SteadyClock::now() > deadline)
            return deadline_exceeded("the trainer did not announce its trajectory socket");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    push_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::push);
    push_->set(zmq::sockopt::linger, 2000);
    push_->set(zmq::sockopt::sndhwm, 64);
    push_->connect(*endpoint);
    channel_.log("info", fmt::format("pushing trajectories to {}", *endpoint));
    return Status();
}

Status RolloutActor::poll_versions() {
    if (fetching_.valid()) return Status();  // one fetch at a time
    TANDEM_ASSIGN_OR_RETURN(auto latest, client_.latest_version());
    if (!latest) return Status();
    newest_seen_ = latest->version;
    const auto have = reader_->fetched_version();
    if (have && *have >= latest->version) return Status();
    fetching_version_ = latest->version;
    fetch_started_ = SteadyClock::now();
    fetching_ = reader_->fetch_async(*latest);
    return Status();
}

Status RolloutActor::ensure_version(int64_t min_version, double* sync_wait_s,
                                    double* trainer_wait_s) {
    while (true) {
        TANDEM_RETURN_IF_ERROR(poll_versions());
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

Status RolloutActor::run() {
    TANDEM_RETURN_IF_ERROR(setup());
    const int R = job_.rollout.replicas, P = job_.algorithm.prompts_per_step,
              G = job_.algorithm.group_size;
    const int me = static_cast<int>(ctx_.actor.index);
    // This actor's share of every step's prompts: indices me, me + R, ...
    std::vector<int> mine;
    for (int p = me; p < P; p += R) mine.push_back(p);
    // Start at the trainer's current step (a resumed trainer continues its data cursor).
    double sync_wait = 0, trainer_wait = 0;
    TANDEM_RETURN_IF_ERROR(ensure_version(0, &sync_wait, &trainer_wait));
    int64_t batch = static_cast<int64_t>(reader_->current()->version());
    std::vector<model::Example> examples(mine.size());
    std::vector<std::vector<int32_t>> prompts(mine.size());
    while (true) {
        rl::TrajectoryBatch out;
        TANDEM_RETURN_IF_ERROR(ensure_version(batch - job_.async.max_staleness,
                                              &out.weight_sync_wait_s, &out.trainer_wait_s));
        const auto t0 = SteadyClock::now();
        auto view =
            reader_->current();  // held for the whole batch: the buffer is not reused under it
        const auto* params = reinterpret_cast<const float*>(view->bytes().data());
        for (size_t i = 0; i < mine.size(); ++i) {
            const uint64_t cursor = static_cast<uint64_t>(batch) * static_cast<uint64_t>(P) +
                                    static_cast<uint64_t>(mine[i]);
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
            t.group = static_cast<uint64_t>(batch) * static_cast<uint64_t>(P) +
                      static_cast<uint64_t>(mine[c.prompt]);
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
