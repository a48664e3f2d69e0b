#include "coordinator/agent_dispatcher.h"

#include <fmt/format.h>

#include "common/version.h"

namespace tandem::coord {

Status NodeSender::send(const std::string& node_id, const wire::Envelope& e) {
    const auto* n = nodes_.find(node_id);
    if (!n || n->routing_id.empty())
        return unavailable(fmt::format("node {} is not connected", node_id));
    if (epoch_ == 0 || (e.type != wire::StartActor::kType && e.type != wire::StopActor::kType))
        return server_.send(n->routing_id, e);
    wire::Envelope stamped = e;  // commands carry the epoch: agents refuse an older coordinator's
    stamped.body["epoch"] = epoch_;
    return server_.send(n->routing_id, stamped);
}

AgentDispatcher::AgentDispatcher(const Clock& clock, AgentServer& server, NodeRegistry& nodes,
                                 JobManager& jobs, VersionTable& versions, Metrics& metrics,
                                 DispatcherSettings settings)
    : clock_(clock),
      server_(server),
      nodes_(nodes),
      jobs_(jobs),
      versions_(versions),
      metrics_(metrics),
      settings_(settings),
      ack_every_(std::chrono::milliseconds(nodes.spec().dead_after_ms)),
      log_("agents"),
      bad_input_log_(Logger("agents"), std::chrono::seconds(5), clock),
      runtime_link_(server, nodes),
      runtime_(jobs, versions, runtime_link_) {
    metrics_.describe_counter("tandem_agent_messages_total", "Messages from node agents by type");
    metrics_.describe_histogram("tandem_heartbeat_rtt_seconds",
                                "Heartbeat round trip as measured by the agents",
                                {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1});
    metrics_.gauge("tandem_nodes", "Node agents by state", [this] {
        double alive = 0, dead = 0;
        for (const auto& [id, e] : nodes_.entries()) {
            (e.record.state == NodeState::kAlive ? alive : dead) += 1;
        }
        return std::vector<std::pair<Metrics::Labels, double>>{{{{"state", "alive"}}, alive},
                                                               {{{"state", "dead"}}, dead}};
    });
}

void AgentDispatcher::send(const std::string& routing_id, const wire::Envelope& e) {
    if (Status s = server_.send(routing_id, e); !s.ok()) {
        log_.debug("reply {} not sent: {}", e.type, s.message());
    }
}

void AgentDispatcher::reply_error(const std::string& routing_id, const Status& s,
                                  uint64_t in_reply_to) {
    wire::Error err{std::string(status_code_name(s.code())), s.message(), in_reply_to};
    send(routing_id, wire::make_envelope(err, ++seq_));
}

void AgentDispatcher::handle(const std::string& routing_id,
                             const std::vector<std::string>& frames) {
    wire::Envelope partial;
    auto env = wire::decode(frames, &partial);
    if (!env.ok()) {
        metrics_.inc("tandem_agent_messages_total", {{"type", "invalid"}});
        if (partial.major != wire::kProtocolMajor && frames.size() >= 2) {
            // Another Tandem release that speaks another protocol: name both releases, in the
            // log and in the answer (which carries this coordinator's release for the agent).
            wire::Error err;
            err.code = std::string(status_code_name(env.status().code()));
            err.message = wire::protocol_mismatch_message(
                wire::string_field_of(frames[1], "node_id"),
                wire::string_field_of(frames[1], "agent_version"),
                fmt::format("{}.{}", partial.major, partial.minor), kVersion,
                fmt::format("{}.{}", wire::kProtocolMajor, wire::kProtocolMinor));
            err.in_reply_to = partial.seq;
            err.coordinator_version = kVersion;
            bad_input_log_.warn("refused a message: {}", err.message);
            send(routing_id, wire::make_envelope(err, ++seq_));
            return;
        }
        bad_input_log_.warn("refused a message: {}", env.status().message());
        reply_error(routing_id, env.status(), partial.seq);
        return;
    }
    const wire::Envelope& e = *env;
    double*& cell = messages_by_type_[e.type];  // decode() accepted it: a known type
    if (!cell) cell = metrics_.counter_cell("tandem_agent_messages_total", {{"type", e.type}});
    *cell += 1;
    if (e.type == wire::Register::kType) return on_register(routing_id, e);
    if (e.type == wire::Heartbeat::kType) return on_heartbeat(routing_id, e);

    const auto node = nodes_.node_of(routing_id);
    if (!node) {
        reply_error(routing_id, not_found("unknown agent: register first"), e.seq);
        return;
    }
    if (e.type == wire::ActorState::kType) {
        const auto m = *wire::body_as<wire::ActorState>(e);
        if (wire::is_terminal(m.phase)) {
            // Before the JobManager restarts it under a new attempt: the versions of this
            // attempt go with the reason it gave.
            auto aid = ActorId::parse(m.actor);
            if (aid.ok()) {
                versions_.on_publisher_gone(
                    aid->job, m.actor, m.attempt,
                    fmt::format("publisher {} {} (exit code {}){}", m.actor,
                                wire::actor_phase_name(m.phase), m.exit_code,
                                m.error.empty() ? "" : ": " + m.error));
            }
        }
        jobs_.on_actor_state(*node, m);
        if (auto aid = ActorId::parse(m.actor); aid.ok()) runtime_.push(aid->job);
    } else if (e.type == wire::LogLines::kType) {
        jobs_.on_log_lines(*node, *wire::body_as<wire::LogLines>(e));
    } else if (e.type == wire::ActorEndpoint::kType) {
        const auto m = *wire::body_as<wire::ActorEndpoint>(e);
        jobs_.on_endpoint(*node, m);
        if (auto aid = ActorId::parse(m.actor); aid.ok()) runtime_.push(aid->job);
    } else if (e.type == wire::JobMetrics::kType) {
        const auto m = *wire::body_as<wire::JobMetrics>(e);
        jobs_.on_metrics(m);
        if (auto job = JobId::parse(m.job); job.ok()) runtime_.push(*job);
    } else if (e.type == wire::VersionPublished::kType) {
        on_version_published(routing_id, *node, e);
    } else if (e.type == wire::VersionAssign::kType) {
        on_version_assign(routing_id, *node, e);
    } else if (e.type == wire::JobEvent::kType) {
        // Recorded with the job's log lines (level "event"): the JobManager keeps events of its
        // own.
        const auto m = *wire::body_as<wire::JobEvent>(e);
        wire::LogLines lines;
        lines.job = m.job;
        lines.lines.push_back({m.actor, clock_.wall_ns(), "event", m.kind + ": " + m.message});
        jobs_.on_log_lines(*node, lines);
    } else if (e.type == wire::VersionRetired::kType) {
        // No error replies for these two: an agent takes not_found to mean "register again".
        auto m = *wire::body_as<wire::VersionRetired>(e);
        auto job = JobId::parse(m.job);
        if (!job.ok() || !jobs_.find(*job)) {
            bad_input_log_.warn("node {}: version_retired for unknown job {}", *node, m.job);
            return;
        }
        if (Status s =
                versions_.retire(*job, m.version, static_cast<uint32_t>(m.shard), m.publisher);
            !s.ok()) {
            bad_input_log_.warn("node {}: version_retired: {}", *node, s.message());
        }
        runtime_.push(*job);
    } else if (e.type == wire::RelayJoin::kType) {
        on_relay_join(routing_id, *node, e);
    } else if (e.type == wire::Error::kType) {
        auto m = *wire::body_as<wire::Error>(e);
        bad_input_log_.warn("node {} reports an error: {}: {}", *node, m.code, m.message);
    } else {
        reply_error(routing_id,
                    invalid_argument(fmt::format("{} is not sent to the coordinator", e.type)),
                    e.seq);
    }
}

void AgentDispatcher::on_register(const std::string& routing_id, const wire::Envelope& e) {
    auto m = *wire::body_as<wire::Register>(e);
    auto entry = nodes_.on_register(m, routing_id);
    if (!entry.ok()) {
        reply_error(routing_id, entry.status(), e.seq);
        return;
    }
    wire::RegisterAck ack;
    ack.node_id = m.node_id;
    ack.epoch = settings_.epoch;
    ack.stop_actors = jobs_.reconcile(m.node_id, m.actors, /*registering=*/true);
    ack.heartbeat_ms = settings_.heartbeat_ms;
    ack.actor_token = settings_.actor_token;
    ack.coordinator_version = kVersion;
    send(routing_id, wire::make_envelope(ack, ++seq_));
    runtime_.forget(m.node_id);  // its actors get their jobs' views again at the next sweep
    jobs_.schedule();
}

void AgentDispatcher::on_heartbeat(const std::string& routing_id, const wire::Envelope& e) {
    auto m = *wire::body_as<wire::Heartbeat>(e);
    auto* entry = nodes_.on_heartbeat(m, routing_id);
    if (!entry) {
        reply_error(
            routing_id,
            not_found(fmt::format("node {} is not registered here: register again", m.node_id)),
            e.seq);
        return;
    }
    if (m.last_rtt_us >= 0) metrics_.observe("tandem_heartbeat_rtt_seconds", m.last_rtt_us / 1e6);
    // No reply per heartbeat: an ack when the agent asks for one ("echo", its round-trip sample)
    // or when this node has had none for dead_after_ms, so that an agent hears a live
    // coordinator at least twice within its silence limit (2 x dead_after_ms). (Every
    // dead_after_ms / 2 answered 0.4 heartbeats in 1 at 1 Hz instead of 0.25, for no gain.)
    const auto echo = e.body.find("echo");
    const bool asked = echo != e.body.end() && echo->is_boolean() && echo->get<bool>();
    if (asked || entry->last_heartbeat - entry->last_ack >= ack_every_) {
        entry->last_ack = entry->last_heartbeat;
        send(routing_id, wire::make_envelope(wire::HeartbeatAck{m.sent_ns, m.epoch}, ++seq_));
    }
    // Level-triggered state: agents send their whole actor list when it changed and every few
    // heartbeats; a heartbeat without one has no state to reconcile.
    if (!e.body.contains("actors")) return;
    for (const auto& actor : jobs_.reconcile(m.node_id, m.actors)) {
        send(routing_id,
             wire::make_envelope(wire::StopActor{actor, "not part of a running job"}, ++seq_));
    }
}

void AgentDispatcher::sweep() {
    for (const auto& [node, reason] : nodes_.sweep()) {
        versions_.on_node_dead(node, reason);
        jobs_.on_node_dead(node, reason);
    }
    // Level-triggered: also catches publishers failed by a heartbeat's reconciliation, a job
    // cancelled or finished, an actor restarted under a new attempt.
    check_publishers();
    advance_fences();
    runtime_.push_all();
}

namespace {
// The trainer actor of a job, if it has one.
const ActorRecord* trainer_of(const JobRecord& job) {
    for (const auto& a : job.actors) {
        if (a.id.role == ActorRole::kTrainer && a.id.index == 0) return &a;
    }
    return nullptr;
}
// Tandem restarts actors, not whole jobs: every job runs its first attempt.
constexpr int64_t kJobAttempt = 1;
}  // namespace

void AgentDispatcher::advance_fences() {
    for (const auto& [id, job] : jobs_.jobs()) {
        if (is_final(job.state)) continue;
        const ActorRecord* t = trainer_of(job);
        if (t && t->attempt > 0) versions_.advance_fence(id, {kJobAttempt, t->attempt});
    }
}

void AgentDispatcher::on_version_assign(const std::string& routing_id, const std::string& node,
                                        const wire::Envelope& e) {
    const auto m = *wire::body_as<wire::VersionAssign>(e);
    wire::VersionAssigned reply;
    reply.job = m.job;
    reply.actor = m.actor;
    reply.step = m.step;
    auto fail = [&](const Status& s) {
        reply.error_code = std::string(status_code_name(s.code()));
        reply.error = s.message();
        log_.with({.job = m.job, .actor = m.actor})
            .warn("version for step {} refused: {}", m.step, s.message());
        send(routing_id, wire::make_envelope(reply, ++seq_));
    };
    auto job = JobId::parse(m.job);
    const JobRecord* rec = job.ok() ? jobs_.find(*job) : nullptr;
    if (!rec) return fail(not_found(fmt::format("no job {}", m.job)));
    if (const ActorRecord* t = trainer_of(*rec); t && t->attempt > 0)
        versions_.advance_fence(*job, {kJobAttempt, t->attempt});
    const wire::Fence fence{kJobAttempt, m.attempt};
    auto v = versions_.assign(*job, fence, m.step, m.after);
    if (!v.ok()) return fail(v.status());
    reply.info = {{"version", *v},
                  {"fence", fence.to_json()},
                  {"step", m.step},
                  {"data_cursor", m.data_cursor}};
    (void)node;
    send(routing_id, wire::make_envelope(reply, ++seq_));
    runtime_.push(*job);  // the fence may have moved
}

void AgentDispatcher::on_version_published(const std::string& routing_id, const std::string& node,
                                           const wire::Envelope& e) {
    auto m = *wire::body_as<wire::VersionPublished>(e);
    auto job = JobId::parse(m.job);
    if (!job.ok() || !jobs_.find(*job)) {
        reply_error(routing_id, not_found(fmt::format("no job {}", m.job)), e.seq);
        return;
    }
    if (m.info.is_object()) m.descriptor["info"] = m.info;
    if (Status s = versions_.publish(*job, m.version, m.descriptor, node,
                                     publisher_of(*job, m.descriptor));
        !s.ok()) {
        log_.with({.job = m.job, .version = m.version})
            .warn("version {} of {} not recorded: {}", m.version, m.job, s.message());
    }
    runtime_.push(*job);
}

void AgentDispatcher::on_relay_join(const std::string& routing_id, const std::string& node,
                                    const wire::Envelope& e) {
    auto m = *wire::body_as<wire::RelayJoin>(e);
    auto job = JobId::parse(m.job);
    const JobRecord* rec = job.ok() ? jobs_.find(*job) : nullptr;
    if (!rec) {
        bad_input_log_.warn("node {}: relay_join for unknown job {}", node, m.job);
        return;
    }
    wire::RelayAssigned reply;
    reply.job = m.job;
    reply.actor = m.reader;
    reply.version = m.version;
    const auto fan_out = static_cast<uint32_t>(std::max(1, rec->spec.rollout.relay_fanout));
    auto link = versions_.join_relay(*job, m.version, m.reader, m.relay_source, fan_out);
    if (!link.ok()) {
        log_.with({.job = m.job, .actor = m.reader, .version = m.version})
            .debug("relay join refused: {}", link.status().message());
        reply.error = link.status().message();
    } else if (auto a = versions_.relay_assignment(*job, m.version, m.reader); a.ok()) {
        reply.source = a->source;
    } else {
        reply.error = a.status().message();
    }
    send(routing_id, wire::make_envelope(reply, ++seq_));
}

VersionPublisher AgentDispatcher::publisher_of(JobId job, const Json& descriptor) const {
    VersionPublisher p;
    if (descriptor.contains("shards") && descriptor["shards"].is_array() &&
        !descriptor["shards"].empty() && descriptor["shards"][0].is_object()) {
        p.actor = descriptor["shards"][0].value("publisher", "");
    }
    if (const JobRecord* j = jobs_.find(job)) {
        for (const auto& a : j->actors) {
            if (a.name() == p.actor) p.attempt = a.attempt;
        }
    }
    return p;
}

void AgentDispatcher::check_publishers() {
    versions_.check_publishers(
        [this](JobId job, const VersionPublisher& p) -> std::optional<std::string> {
            const JobRecord* j = jobs_.find(job);
            if (!j) return fmt::format("job {} is gone", job.str());
            for (const auto& a : j->actors) {
                if (a.name() != p.actor) continue;
                if (p.attempt >= 0 && a.attempt != p.attempt) {
                    return fmt::format("publisher {} (attempt {}) was replaced by attempt {}",
                                       p.actor, p.attempt, a.attempt);
                }
                if (wire::is_terminal(a.phase)) {
                    return fmt::format("publisher {} {} (exit code {}){}", p.actor,
                                       wire::actor_phase_name(a.phase), a.exit_code,
                                       a.last_error.empty() ? "" : ": " + a.last_error);
                }
                if (is_final(j->state)) {
                    return fmt::format("job {} is {}", job.str(), job_state_name(j->state));
                }
                return std::nullopt;
            }
            // Not an actor of the job (a test publishing by hand): only node loss applies.
            return std::nullopt;
        });
}

}  // namespace tandem::coord
