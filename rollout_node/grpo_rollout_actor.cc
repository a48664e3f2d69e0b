#include "rollout_node/grpo_rollout_actor.h"

#include <atomic>
#include <cctype>
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
#include "common/net/http_client.h"
#include "common/rl/grpo_protocol.h"
#include "common/weights/reader.h"

namespace tandem::rollout {

namespace {

using SteadyClock = std::chrono::steady_clock;

double since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// With the trainer's version feed connected, the coordinator's table is still read this often
// (a missed feed message, a restarted trainer); without it, this often while waiting.
constexpr auto kTableEveryWithFeed = std::chrono::milliseconds(250);
constexpr auto kTableEveryWithoutFeed = std::chrono::milliseconds(20);

// A version as the trainer's feed sends it: the JSON the coordinator's table holds.
Result<std::optional<rl::PublishedVersion>> parse_feed_version(const std::string& text) {
    nlohmann::json d = nlohmann::json::parse(text, nullptr, false);
    if (!d.is_object()) return invalid_argument("version feed: a message is not a JSON object");
    rl::PublishedVersion out;
    TANDEM_ASSIGN_OR_RETURN(out.descriptor, weights::descriptor_from_json(d));
    if (!out.descriptor.complete()) return std::optional<rl::PublishedVersion>();
    if (d.contains("step") && d["step"].is_number_integer()) {
        rl::VersionInfo info;
        info.step = d["step"].get<int64_t>();
        info.data_cursor = d.value("data_cursor", uint64_t{0});
        info.trainer_attempt = d.value("trainer_attempt", int64_t{0});
        out.info = info;
    }
    return std::optional<rl::PublishedVersion>(std::move(out));
}

// How long a reader asks for its place in a version's relay tree before it reads the publishers:
// its relay_join travels through the node agent, so the first answers may be 404.
constexpr auto kRelaySourceWait = std::chrono::seconds(2);
constexpr auto kRelaySourcePoll = std::chrono::milliseconds(5);

// "/" and the other reserved characters of an actor id, for a query string.
std::string url_encode(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
            c == '~') {
            out += c;
        } else {
            out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
        }
    }
    return out;
}

class RolloutActor {
public:
    RolloutActor(const agent::ActorContext& ctx, agent::ActorChannel& channel)
        : ctx_(ctx),
          job_(ctx.spec),
          channel_(channel),
          client_(ctx.coordinator_http, ctx.actor.job, ctx.api_token) {}

    Status run();

private:
    Status setup();
    // Starts fetching the newest version if it is newer than what this actor holds or fetches.
    // Versions come from the trainer's feed (waiting up to `wait` for one when no fetch is under
    // way), or from the coordinator's table when the feed has been quiet for a while.
    // Notices a new trainer run (a higher epoch: the trainer restarted) and sets resync_.
    Status poll_versions(std::chrono::milliseconds wait = std::chrono::milliseconds(0));
    // Relay tree (more rollouts than rollout.relay_fanout): joins `version`'s tree with this
    // reader's relay source, asks the coordinator where to read it from and reads it there,
    // falling back to the publishers when that reader fails. Runs on a background thread.
    Status fetch_in_relay_tree(const weights::VersionDescriptor& version);
    // This reader's source for `version` (nullopt: the publishers), waiting for the join to land.
    Result<std::optional<weights::RelaySource>> relay_source_for(Version version) const;
    // Newest version the feed or the table knows of (nullopt: nothing new to look at).
    Result<std::optional<rl::PublishedVersion>> next_version(std::chrono::milliseconds wait);
    // Connects the SUB socket to the trainer's "versions" endpoint if it is announced and differs
    // from the one connected.
    void connect_feed();
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
    bool relay_ = false;               // in the job's relay tree (replicas > relay_fanout)
    std::atomic<int64_t> relayed_{0};  // versions read from another rollout
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
    std::unique_ptr<zmq::socket_t> feed_;  // SUB to the trainer's version feed
    std::string feed_endpoint_;
    SteadyClock::time_point last_table_check_{};
    SteadyClock::time_point last_feed_lookup_{};
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
    ro.ucx.transports = rl::weight_transports(ctx_.placement);
    // Handing each piece to the checksum thread costs a wakeup, which on a busy machine is
    // slower than hashing a small model inline (376 KB under load: 5.3 ms -> 1.6 ms a fetch).
    ro.verify_on_helper_thread = layout.total_bytes() > (uint64_t{8} << 20);
    // With no more rollouts than the fan-out every one would read the publishers anyway.
    relay_ = job_.rollout.replicas > job_.rollout.relay_fanout;
    ro.relay = relay_;
    TANDEM_ASSIGN_OR_RETURN(reader_, weights::Reader::create(ro, std::move(layout)));

    return Status();
}

Result<std::optional<weights::RelaySource>> RolloutActor::relay_source_for(Version version) const {
    const std::string target =
        fmt::format("/api/v1/jobs/{}/versions/{}/source?reader={}", ctx_.actor.job.str(), version,
                    url_encode(ctx_.actor.str()));
    const auto deadline = SteadyClock::now() + kRelaySourceWait;
    while (true) {
        TANDEM_ASSIGN_OR_RETURN(auto reply, net::http_call(ctx_.coordinator_http, "GET", target, "", ctx_.api_token));
        if (reply.status == 200) {
            nlohmann::json j = nlohmann::json::parse(reply.body, nullptr, false);
            if (!j.is_object()) return internal_error(fmt::format("GET {}: not JSON", target));
            const nlohmann::json src = j.value("source", nlohmann::json());
            if (src.is_null()) return std::optional<weights::RelaySource>();
            TANDEM_ASSIGN_OR_RETURN(auto rs, weights::relay_source_from_json(src));
            return std::optional<weights::RelaySource>(std::move(rs));
        }
        // 404: the join has not reached the coordinator yet; anything else is final.
        if (reply.status != 404 || SteadyClock::now() > deadline) {
            return unavailable(
                fmt::format("GET {}: HTTP {}: {}", target, reply.status, reply.body));
        }
        std::this_thread::sleep_for(kRelaySourcePoll);
    }
}

Status RolloutActor::fetch_in_relay_tree(const weights::VersionDescriptor& version) {
    channel_.relay_join(version.version, weights::to_json(reader_->relay_source()));
    auto source = relay_source_for(version.version);
    if (!source.ok()) {
        channel_.log("warn", fmt::format("no relay source for version {} ({}); reading the "
                                         "publishers",
                                         version.version, source.status().message()));
        return reader_->fetch(version);
    }
    if (!*source) return reader_->fetch(version);  // the table put this reader under them
    Status s = reader_->fetch(version, &**source);
    if (s.ok()) {
        if (relayed_.fetch_add(1) == 0) {
            channel_.log("info",
                         fmt::format("read version {} from relay {} (fan-out {})", version.version,
                                     (*source)->reader, job_.rollout.relay_fanout));
        }
        return s;
    }
    channel_.log("warn", fmt::format("reading version {} from relay {} failed: {}; reading the "
                                     "publishers",
                                     version.version, (*source)->reader, s.message()));
    return reader_->fetch(version);
}

void RolloutActor::connect_feed() {
    if (since(last_feed_lookup_) < 0.2) return;
    last_feed_lookup_ = SteadyClock::now();
    const std::string trainer = ActorId{ctx_.actor.job, ActorRole::kTrainer, 0}.str();
    auto e = client_.endpoint(trainer, "versions");
    if (!e.ok() || !*e || **e == feed_endpoint_) return;
    feed_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::sub);
    feed_->set(zmq::sockopt::linger, 0);
    feed_->set(zmq::sockopt::subscribe, "");
    feed_->connect(**e);
    feed_endpoint_ = **e;
    last_table_check_ = {};  // messages sent before the connection are lost: read the table
}

Result<std::optional<rl::PublishedVersion>> RolloutActor::next_version(
    std::chrono::milliseconds wait) {
    std::optional<rl::PublishedVersion> newest;
    if (!feed_) connect_feed();
    if (feed_) {
        zmq::pollitem_t item{feed_->handle(), 0, ZMQ_POLLIN, 0};
        int ready = 0;
        try {
            ready = zmq::poll(&item, 1, wait);
        } catch (const zmq::error_t&) {
            ready = 0;  // interrupted by a signal: look again on the next call
        }
        if (ready > 0) {
            zmq::message_t msg;
            while (feed_->recv(msg, zmq::recv_flags::dontwait)) {
                auto v = parse_feed_version(msg.to_string());
                if (!v.ok()) {
                    channel_.log("warn", v.status().message());
                    continue;
                }
                if (*v && (!newest || (*v)->descriptor.version > newest->descriptor.version))
                    newest = std::move(*v);
            }
        }
    } else if (wait.count() > 0) {
        std::this_thread::sleep_for(std::min(wait, kTableEveryWithoutFeed));
    }
    if (newest) return newest;
    const auto every = feed_ ? kTableEveryWithFeed : kTableEveryWithoutFeed;
    if (SteadyClock::now() - last_table_check_ < every) return newest;
    last_table_check_ = SteadyClock::now();
    return client_.latest_version();
}

Status RolloutActor::poll_versions(std::chrono::milliseconds wait) {
    if (fetching_.valid()) return Status();  // one fetch at a time; the feed queues meanwhile
    TANDEM_ASSIGN_OR_RETURN(auto latest, next_version(wait));
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
    if (relay_) {
        fetching_ = std::async(std::launch::async,
                               [this, d = latest->descriptor] { return fetch_in_relay_tree(d); });
    } else {
        fetching_ = reader_->fetch_async(latest->descriptor);
    }
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
            last_fetch_s_ = reader_->last_fetch().seconds;  // the transfer, as the reader timed it
            fetching_version_.reset();
            if (!s.ok()) {
                // The publisher may be gone (the job is ending) or restarting: try again later.
                channel_.log("warn", fmt::format("fetching a version failed: {}", s.message()));
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
            } else {
                // Step boundary (no view of this actor is alive here): make it current before
                // the next fetch needs the spare buffer it sits in.
                reader_->swap();
            }
            continue;  // a newer one may be out already
        }
        reader_->swap();  // step boundary: the newest fetched version becomes current
        auto cur = reader_->current();
        if (cur && static_cast<int64_t>(cur->version()) >= min_version) break;
        // Blocked: on the transfer of a version (weight sync), or on the trainer still training
        // (waiting on its feed, which wakes us the moment it publishes).
        const auto t_wait = SteadyClock::now();
        if (fetching_.valid()) {
            fetching_.wait_for(std::chrono::milliseconds(20));
            *sync_wait_s += since(t_wait);
        } else {
            TANDEM_RETURN_IF_ERROR(poll_versions(std::chrono::milliseconds(50)));
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
    last_feed_lookup_ = {};
    connect_feed();  // a restarted trainer binds a new feed too
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
