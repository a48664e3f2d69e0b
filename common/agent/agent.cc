#include "common/agent/agent.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "common/agent/actor_context.h"
#include "common/agent/user_actor.h"
#include "common/config/loader.h"
#include "common/version.h"
#include "common/wire/zmq_io.h"
#include "kernels/device.h"

namespace tandem::agent {

namespace {
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kFinishedKeep = std::chrono::seconds(60);
constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::seconds(5);
constexpr uint64_t kEchoEvery = 10;        // heartbeats per round-trip sample
constexpr uint64_t kFullReportEvery = 10;  // heartbeats per unconditional actor list

int64_t to_us(Clock::Duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}
}  // namespace

wire::Resources detect_resources(const config::NodeResources& overrides) {
    wire::Resources r;
    r.cpus = static_cast<double>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    r.memory_mb = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) *
                  static_cast<int64_t>(::sysconf(_SC_PAGESIZE)) / (1 << 20);
    r.gpus = static_cast<int64_t>(kernels::cuda_devices().size());
    if (overrides.cpus) r.cpus = *overrides.cpus;
    if (overrides.memory_mb) r.memory_mb = *overrides.memory_mb;
    if (overrides.gpus) r.gpus = *overrides.gpus;
    return r;
}

Agent::Agent(const Clock& clock, AgentOptions options)
    : clock_(clock),
      opt_(std::move(options)),
      log_("agent", LogFields{.node = opt_.node.id}),
      heartbeat_ms_(opt_.cluster.coordinator.heartbeat_ms),
      backoff_(kMinBackoff) {
    instance_ = random_hex(8).value_or(fmt::format("{}-{}", ::getpid(), clock_.wall_ns()));
}

Agent::~Agent() = default;

void Agent::connect() {
    socket_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::dealer);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::sndhwm, 10000);
    socket_->set(zmq::sockopt::maxmsgsize, int64_t{64} << 20);  // a larger frame: disconnected
    socket_->set(zmq::sockopt::reconnect_ivl, 100);
    socket_->set(zmq::sockopt::reconnect_ivl_max, 2000);
    if (!opt_.curve_server_key.empty())
        net::set_curve_client(*socket_, opt_.curve_keys, opt_.curve_server_key);
    const auto& c = opt_.cluster.coordinator;
    const std::string endpoint = fmt::format("tcp://{}:{}", c.host, c.agent_port);
    socket_->connect(endpoint);
    registered_ = false;
    if (runtime_) runtime_->set_connected(false);
    last_heard_ = clock_.now();
    log_.debug("connecting to {}", endpoint);
}

void Agent::send(const wire::Envelope& e) {
    if (Status s = wire::send_envelope(*socket_, e); !s.ok()) {
        log_.debug("{} not sent: {}", e.type, s.message());
    }
}

std::vector<wire::ActorReport> Agent::reports() const {
    std::vector<wire::ActorReport> out;
    for (const auto& [name, a] : actors_) out.push_back(a.report);
    for (const auto& [name, f] : finished_) out.push_back(f.report);
    return out;
}

void Agent::send_register() {
    wire::Register m;
    m.node_id = opt_.node.id;
    m.role = std::string(actor_role_name(opt_.node.role));
    m.host = opt_.node.host;
    m.secret = opt_.secret;
    m.instance = instance_;
    m.agent_version = kVersion;
    m.resources = opt_.resources;
    m.labels = opt_.node.labels;
    m.actors = reports();
    send_msg(m);
}

void Agent::send_heartbeat() {
    wire::Heartbeat m;
    m.node_id = opt_.node.id;
    m.sent_ns = clock_.now().time_since_epoch().count();
    m.epoch = epoch_;
    m.last_rtt_us = last_rtt_us_;  // each round-trip sample once
    last_rtt_us_ = -1;
    m.actors = reports();
    wire::Envelope e = wire::make_envelope(m, ++seq_);
    // The coordinator answers a heartbeat only when asked ("echo": a round-trip sample) or when
    // this node has had no answer for dead_after_ms. The actor list is level-triggered state,
    // sent when it changed and on every kFullReportEvery'th heartbeat, and left out otherwise.
    ++heartbeats_;
    if (heartbeats_ % kEchoEvery == 0) e.body["echo"] = true;
    std::string reported = e.body["actors"].dump();
    if (reported == last_reported_ && heartbeats_ % kFullReportEvery != 0) e.body.erase("actors");
    last_reported_ = std::move(reported);
    send(e);
}

void Agent::on_message(const std::vector<std::string>& frames) {
    wire::Envelope header;
    auto env = wire::decode(frames, &header);
    if (!env.ok()) {
        if (header.major != wire::kProtocolMajor) {
            // Another Tandem release: nothing it says can be understood. Stop instead of
            // registering for ever. Its release is read from the body as plain JSON (a new
            // coordinator puts it in its register_ack and in its refusal).
            log_.error("{}", wire::protocol_mismatch_message(
                                 opt_.node.id, kVersion,
                                 fmt::format("{}.{}", wire::kProtocolMajor, wire::kProtocolMinor),
                                 frames.size() >= 2
                                     ? wire::string_field_of(frames[1], "coordinator_version")
                                     : "",
                                 fmt::format("{}.{}", header.major, header.minor)));
            refused_ = 2;
            return;
        }
        log_.warn("refused a message from the coordinator: {}", env.status().message());
        return;
    }
    last_heard_ = clock_.now();
    const auto& e = *env;
    if (runtime_ && runtime_->deliver(e)) return;  // for actors: views and answers
    if (e.type == wire::RegisterAck::kType) {
        auto m = *wire::body_as<wire::RegisterAck>(e);
        registered_ = true;
        backoff_ = kMinBackoff;
        epoch_ = m.epoch;
        actor_token_ = m.actor_token;
        heartbeat_ms_ = m.heartbeat_ms;
        next_heartbeat_ = clock_.now();
        last_reported_.clear();  // the first heartbeat carries the actor list
        if (runtime_) runtime_->set_connected(true);
        log_.info("registered with the coordinator (epoch {}, {} actors running)", epoch_,
                  actors_.size());
        if (const std::string skew =
                wire::release_skew_message(opt_.node.id, kVersion, m.coordinator_version);
            !skew.empty())
            log_.warn("{}", skew);
        for (const auto& a : m.stop_actors) stop_actor(a, "the coordinator does not know it");
    } else if (e.type == wire::HeartbeatAck::kType) {
        auto m = *wire::body_as<wire::HeartbeatAck>(e);
        last_rtt_us_ = to_us(clock_.now().time_since_epoch() - Clock::Duration(m.sent_ns));
    } else if (e.type == wire::StartActor::kType) {
        auto m = *wire::body_as<wire::StartActor>(e);
        if (stale_command(e.type, m.actor, m.epoch)) return;
        start_actor(m);
    } else if (e.type == wire::StopActor::kType) {
        auto m = *wire::body_as<wire::StopActor>(e);
        if (stale_command(e.type, m.actor, m.epoch)) return;
        stop_actor(m.actor, m.reason);
    } else if (e.type == wire::Error::kType) {
        auto m = *wire::body_as<wire::Error>(e);
        if (m.code == "permission_denied" || m.code == "already_exists") {
            log_.error("the coordinator refused node {}: {}", opt_.node.id, m.message);
            refused_ = 2;
        } else if (m.code == "not_found") {
            if (registered_)
                log_.info("the coordinator does not know this node ({}); registering again",
                          m.message);
            registered_ = false;
            next_register_ = clock_.now();
        } else {
            log_.warn("coordinator error: {}: {}", m.code, m.message);
        }
    }
}

bool Agent::stale_command(std::string_view type, const std::string& actor, uint64_t epoch) {
    if (epoch == 0 || epoch >= epoch_) return false;
    ++stale_commands_;
    log_.warn("refused {} for {} from coordinator epoch {}: registered with epoch {}", type, actor,
              epoch, epoch_);
    return true;
}

void Agent::start_actor(const wire::StartActor& m) {
    auto lf = LogFields{.job = m.job, .actor = m.actor};
    if (auto it = actors_.find(m.actor); it != actors_.end()) {
        if (it->second.report.attempt >= m.attempt) return;  // a repeated start
        stop_actor(m.actor, "superseded by a newer attempt");
    }
    finished_.erase(m.actor);
    auto aid = ActorId::parse(m.actor);
    if (!aid.ok()) return;
    ActorContext ctx;
    ctx.actor = *aid;
    ctx.attempt = m.attempt;
    ctx.node = opt_.node.id;
    ctx.spec_yaml = m.spec_yaml;
    ctx.placement = m.placement;
    // GPU slots the coordinator assigned -> this node's device indices (declared gpu_devices, or
    // the slot itself), which the actor exports as CUDA_VISIBLE_DEVICES.
    if (auto at = ctx.placement.find("actors");
        at != ctx.placement.end() && at->contains(m.actor) && (*at)[m.actor].contains("gpus")) {
        auto& me = (*at)[m.actor];
        std::string devices;
        for (const auto& slot : me["gpus"]) {
            const int k = slot.get<int>();
            const auto& declared = opt_.node.gpu_devices;
            const int device = k < static_cast<int>(declared.size()) ? declared[k] : k;
            devices += (devices.empty() ? "" : ",") + std::to_string(device);
        }
        me["cuda_visible_devices"] = devices;
    }
    ctx.coordinator_http = opt_.coordinator_http;
    ctx.api_token = actor_token_;
    ctx.run_dir = opt_.run_dir;
    ctx.runtime_endpoint = runtime_ ? runtime_->endpoint() : "";
    const std::string dir = fmt::format("{}/actors/{}", opt_.run_dir, m.job);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::string ctx_path =
        fmt::format("{}/{}-{}.{}.json", dir, actor_role_name(aid->role), aid->index, m.attempt);
    Actor a;
    a.job = m.job;
    a.report = {m.actor, m.attempt, wire::ActorPhase::kStarting, 0, ""};
    auto fail_start = [&](const std::string& why) {
        log_.with(lf).error("cannot start {}: {}", m.actor, why);
        wire::ActorReport r{m.actor, m.attempt, wire::ActorPhase::kFailed, 127, why};
        finished_[m.actor] = {r, clock_.now()};
        send_msg(
            wire::ActorState{m.actor, m.attempt, wire::ActorPhase::kFailed, 127, why, nullptr});
    };
    if (Status s = write_file_atomic(ctx_path, ctx.to_json().dump(), 0600); !s.ok())
        return fail_start(s.message());
    // A job may name a user actor (trainer.command / rollout.command) instead of the built-in one.
    auto spec = config::parse_job_text(m.spec_yaml, m.actor);
    if (!spec.ok()) return fail_start(spec.status().message());
    ctx.spec = std::move(*spec);
    Result<std::unique_ptr<ActorProcess>> proc = unavailable("not started");
    if (auto user = user_command(ctx)) {
        proc = ActorProcess::spawn(user_actor_command(*user, ctx, ctx_path, opt_.bin_dir));
        if (!proc.ok())
            return fail_start(
                fmt::format("{}.command: {}", actor_role_name(aid->role), proc.status().message()));
    } else {
        const std::string exe =
            fmt::format("{}/tandem-{}-node", opt_.bin_dir, actor_role_name(aid->role));
        proc = ActorProcess::spawn({exe, "actor", "--context", ctx_path});
    }
    if (!proc.ok()) return fail_start(proc.status().message());
    a.process = std::move(*proc);
    a.report.phase = wire::ActorPhase::kRunning;
    log_.with(lf).info("started {} (attempt {}, pid {})", m.actor, m.attempt, a.process->pid());
    actors_[m.actor] = std::move(a);
    send_msg(wire::ActorState{m.actor, m.attempt, wire::ActorPhase::kRunning, 0, "", nullptr});
}

void Agent::stop_actor(const std::string& actor, const std::string& reason) {
    auto it = actors_.find(actor);
    if (it == actors_.end()) return;
    log_.with({.job = it->second.job, .actor = actor}).info("stopping {}: {}", actor, reason);
    it->second.process->terminate(clock_, kStopGrace);
}

void Agent::pump_actor(const std::string& name, Actor& a, int fd) {
    // stdout and stderr are logs; the actor talks to the cluster through the runtime socket.
    const bool is_stdout = fd == a.process->stdout_fd();
    for (auto& line : a.process->read_lines(fd)) {
        std::string level = "info", msg = line;
        if (!is_stdout) {
            level = "stderr";  // the last lines are kept by the process (describe_exit)
        }
        log_actor_line(a.job, name, std::move(level), std::move(msg));
    }
}

void Agent::log_actor_line(const std::string& job, const std::string& actor, std::string level,
                           std::string msg) {
    log_.with({.job = job, .actor = actor})
        .log(level == "error"  ? LogLevel::kError
             : level == "warn" ? LogLevel::kWarn
                               : LogLevel::kInfo,
             fmt::format("[{}] {}", actor, msg));
    pending_logs_[job].push_back({actor, clock_.wall_ns(), std::move(level), std::move(msg)});
}

void Agent::pump_runtime() {
    for (auto& in : runtime_->receive()) {
        auto it = actors_.find(in.actor);
        if (in.envelope.type == wire::LogLines::kType) {
            auto m = wire::LogLines::from_json(in.envelope.body);
            if (!m.ok()) continue;
            for (auto& l : m->lines) {
                if (l.level == "error" && it != actors_.end()) it->second.last_error = l.msg;
                log_actor_line(in.job, in.actor, std::move(l.level), std::move(l.msg));
            }
            continue;
        }
        if (in.envelope.type == wire::ActorState::kType) {
            // Progress of a running actor; its exit is the agent's to report.
            auto m = wire::ActorState::from_json(in.envelope.body);
            if (!m.ok() || it == actors_.end()) continue;
            send_msg(wire::ActorState{in.actor, it->second.report.attempt,
                                      wire::ActorPhase::kRunning, 0, "", m->progress});
            continue;
        }
        wire::Envelope e = std::move(in.envelope);
        e.seq = ++seq_;
        send(e);
    }
}

void Agent::reap_actors() {
    for (auto it = actors_.begin(); it != actors_.end();) {
        Actor& a = it->second;
        a.process->kill_if_overdue(clock_);
        auto code = a.process->poll_exit();
        if (!code) {
            ++it;
            continue;
        }
        // Drain what is left in the pipes before judging.
        for (int fd : {a.process->stdout_fd(), a.process->stderr_fd()}) {
            if (fd >= 0) pump_actor(it->first, a, fd);
        }
        wire::ActorReport r = a.report;
        r.exit_code = *code;
        if (a.process->terminating()) {
            r.phase = wire::ActorPhase::kStopped;
        } else if (*code == 0) {
            r.phase = wire::ActorPhase::kSucceeded;
        } else {
            r.phase = wire::ActorPhase::kFailed;
            // The reason the actor reported (runtime fail() or an error line), else its exit code
            // and last stderr lines.
            r.error = a.last_error.empty() ? a.process->describe_exit(*code)
                                           : fmt::format("{} (exit code {})", a.last_error, *code);
        }
        log_.with({.job = a.job, .actor = it->first})
            .info("{} {} (exit code {})", it->first, wire::actor_phase_name(r.phase), *code);
        if (runtime_) runtime_->forget_actor(it->first);
        send_msg(wire::ActorState{r.actor, r.attempt, r.phase, r.exit_code, r.error, nullptr});
        finished_[it->first] = {r, clock_.now()};
        it = actors_.erase(it);
    }
    const auto now = clock_.now();
    for (auto it = finished_.begin(); it != finished_.end();) {
        it = now - it->second.at > kFinishedKeep ? finished_.erase(it) : std::next(it);
    }
}

void Agent::flush_logs() {
    for (auto& [job, lines] : pending_logs_) {
        if (lines.empty()) continue;
        wire::LogLines m;
        m.job = job;
        m.lines = std::move(lines);
        lines.clear();
        send_msg(m);
    }
    pending_logs_.clear();
}

int Agent::run(const std::atomic<bool>& stop) {
    auto runtime = RuntimeServer::bind(zmq_, opt_.run_dir, opt_.node.id, instance_);
    if (!runtime.ok()) {
        log_.error("{}", runtime.status().message());
        return 1;
    }
    runtime_ = std::move(*runtime);
    log_.debug("serving the actor runtime at {}", runtime_->endpoint());
    connect();
    next_register_ = clock_.now();
    std::mt19937_64 rng(std::hash<std::string>()(instance_));
    const auto dead_after = std::chrono::milliseconds(opt_.cluster.coordinator.dead_after_ms);
    // Registration retries stay well inside the silence that replaces the socket, so every socket
    // carries registrations (a backoff beyond it would replace each socket before its first one).
    const auto max_backoff = std::clamp<Clock::Duration>(dead_after / 4, kMinBackoff, kMaxBackoff);
    while (!stop.load(std::memory_order_relaxed) && !refused_) {  // relaxed: a flag, no data
        const auto now = clock_.now();
        if (!registered_ && now >= next_register_) {
            send_register();
            next_register_ = now + backoff_ + std::chrono::milliseconds(rng() % 100);
            backoff_ = std::min<Clock::Duration>(backoff_ * 2, max_backoff);
        }
        if (registered_ && now >= next_heartbeat_) {
            send_heartbeat();
            next_heartbeat_ = now + std::chrono::milliseconds(heartbeat_ms_);
        }
        if (now >= next_log_flush_) {
            flush_logs();
            next_log_flush_ = now + std::chrono::milliseconds(200);
        }
        // Nothing heard for twice the time the coordinator takes to declare us dead (a live one
        // answers a heartbeat at least every dead_after_ms): it is gone, restarting, or the
        // connection is wedged. A fresh socket drops what was queued for the old one (heartbeats,
        // logs), and registration starts at once. (A coordinator that restarts on the same
        // address usually hears this socket sooner: ZeroMQ reconnects by itself, the restarted
        // coordinator answers the next heartbeat with not_found, and the agent registers again.)
        const auto silent = now - last_heard_;
        if (silent > 2 * dead_after) {
            log_.warn("no answer from the coordinator for {:.1f} s; reconnecting",
                      std::chrono::duration<double>(silent).count());
            connect();
            next_register_ = now;
        }

        std::vector<zmq::pollitem_t> items;
        items.push_back({socket_->handle(), 0, ZMQ_POLLIN, 0});
        items.push_back({runtime_->socket().handle(), 0, ZMQ_POLLIN, 0});
        std::vector<std::pair<std::string, int>> fds;
        for (auto& [name, a] : actors_) {
            for (int fd : {a.process->stdout_fd(), a.process->stderr_fd()}) {
                if (fd < 0) continue;
                items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
                fds.emplace_back(name, fd);
            }
        }
        try {
            zmq::poll(items.data(), items.size(), std::chrono::milliseconds(50));
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
            continue;  // a signal (SIGTERM sets `stop`): look at the flag again
        }
        if (items[0].revents & ZMQ_POLLIN) {
            while (auto frames = wire::try_recv_frames(*socket_)) on_message(*frames);
        }
        if (items[1].revents & ZMQ_POLLIN) pump_runtime();
        constexpr size_t kSockets = 2;
        for (size_t i = kSockets; i < items.size(); ++i) {
            if (!(items[i].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) continue;
            auto it = actors_.find(fds[i - kSockets].first);
            if (it != actors_.end()) pump_actor(it->first, it->second, fds[i - kSockets].second);
        }
        reap_actors();
    }
    // Shutting down: stop the actors and tell the coordinator.
    for (auto& [name, a] : actors_) a.process->terminate(clock_, kStopGrace);
    const auto deadline = clock_.now() + kStopGrace + std::chrono::seconds(1);
    while (!actors_.empty() && clock_.now() < deadline) {
        pump_runtime();
        reap_actors();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    flush_logs();
    return refused_.value_or(0);
}

}  // namespace tandem::agent
