#include "coordinator/job_manager.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/config/loader.h"

namespace tandem::coord {

namespace {

const config::ActorResources& resources_of(const JobRecord& job, ActorRole role) {
    return role == ActorRole::kTrainer ? job.spec.trainer.resources : job.spec.rollout.resources;
}

bool live(const ActorRecord& a) {
    return !a.node.empty() && !wire::is_terminal(a.phase) && a.phase != wire::ActorPhase::kPending;
}

// A GRPO job runs on whichever of its rollout actors are alive (the trainer takes each step from
// them), so a rollout that cannot be restarted does not end the job.
bool replaceable(const JobRecord& job, const ActorRecord& a) {
    return job.spec.kind == config::JobKind::kGrpo && a.id.role == ActorRole::kRollout;
}

int live_rollouts(const JobRecord& job) {
    int n = 0;
    for (const auto& a : job.actors) n += a.id.role == ActorRole::kRollout && live(a);
    return n;
}

}  // namespace

JobManager::JobManager(const Clock& clock, StateStore& store, NodeRegistry& nodes, AgentLink& link,
                       Metrics& metrics)
    : clock_(clock), store_(store), nodes_(nodes), link_(link), metrics_(metrics), log_("jobs") {
    metrics_.describe_counter("tandem_scheduler_decisions_total",
                              "Scheduling attempts by outcome (placed, pending, restart)");
    metrics_.describe_counter("tandem_actor_restarts_total", "Actors restarted after a failure");
    metrics_.gauge("tandem_jobs", "Jobs by state", [this] {
        std::map<std::string, double> by;
        for (auto s : {JobState::kPending, JobState::kRunning, JobState::kSucceeded,
                       JobState::kFailed, JobState::kCancelled}) {
            by[std::string(job_state_name(s))] = 0;
        }
        for (const auto& [id, j] : jobs_) by[std::string(job_state_name(j.state))] += 1;
        std::vector<std::pair<Metrics::Labels, double>> out;
        for (const auto& [s, n] : by) out.push_back({{{"state", s}}, n});
        return out;
    });
}

void JobManager::restore(std::vector<JobRecord> jobs) {
    for (auto& j : jobs) {
        log_.with({.job = j.id.str()})
            .info("restored {} in state {}", j.id.str(), job_state_name(j.state));
        jobs_[j.id] = std::move(j);
    }
}

const JobRecord* JobManager::find(JobId id) const {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? nullptr : &it->second;
}

const JobRecord* JobManager::find(const std::string& name_or_id) const {
    if (auto id = JobId::parse(name_or_id); id.ok()) return find(*id);
    const JobRecord* latest = nullptr;  // by name: the newest job with that name
    for (const auto& [id, j] : jobs_) {
        if (j.spec.name == name_or_id) latest = &j;
    }
    return latest;
}

JobRecord* JobManager::mutable_find(JobId id) {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? nullptr : &it->second;
}

ActorRecord* JobManager::find_actor(JobRecord& job, const std::string& actor) {
    for (auto& a : job.actors) {
        if (a.name() == actor) return &a;
    }
    return nullptr;
}

std::vector<NodeCapacity> JobManager::capacities() const {
    std::map<std::string, NodeCapacity> caps;
    for (const auto& [id, e] : nodes_.entries()) {
        NodeCapacity c;
        c.id = id;
        c.role = e.record.role == "trainer" ? ActorRole::kTrainer : ActorRole::kRollout;
        c.alive = e.record.state == NodeState::kAlive;
        c.free_cpus = e.record.resources.cpus;
        c.free_memory_mb = e.record.resources.memory_mb;
        c.free_gpus = e.record.resources.gpus;
        caps[id] = c;
    }
    for (const auto& [jid, j] : jobs_) {
        for (const auto& a : j.actors) {
            if (!live(a)) continue;
            auto it = caps.find(a.node);
            if (it == caps.end()) continue;
            const auto& r = resources_of(j, a.id.role);
            it->second.free_cpus -= r.cpus;
            it->second.free_memory_mb -= r.memory_mb;
            it->second.free_gpus -= r.gpu_share();
            it->second.actors += 1;
        }
    }
    std::vector<NodeCapacity> out;
    for (auto& [id, c] : caps) out.push_back(c);
    return out;
}

void JobManager::event(JobRecord& job, const std::string& kind, const std::string& message) {
    EventRecord e{0, clock_.wall_ns(), kind, message};
    if (auto seq = store_.append_event(job.id, e); !seq.ok()) {
        log_.error("saving event of {}: {}", job.id.str(), seq.status().message());
    }
    log_.with({.job = job.id.str()}).info("{}: {}", kind, message);
}

void JobManager::persist(const JobRecord& job) {
    if (Status s = store_.save_job(job); !s.ok()) {
        log_.error("saving {}: {}", job.id.str(), s.message());
    }
}

Result<SubmitResult> JobManager::submit(const std::string& spec_yaml, const std::string& source,
                                        bool dry_run) {
    TANDEM_ASSIGN_OR_RETURN(config::JobSpec spec, config::parse_job_text(spec_yaml, source));
    JobRecord job;
    job.spec = std::move(spec);
    job.spec_yaml = config::to_yaml(job.spec);
    job.submitted_ns = clock_.wall_ns();
    auto add = [&](ActorRole role, int n) {
        for (int i = 0; i < n; ++i) {
            ActorRecord a;
            a.id.role = role;
            a.id.index = static_cast<uint32_t>(i);
            job.actors.push_back(std::move(a));
        }
    };
    add(ActorRole::kTrainer, job.spec.trainer.replicas);
    add(ActorRole::kRollout, job.spec.rollout.replicas);

    SubmitResult result;
    result.spec_yaml = job.spec_yaml;
    if (dry_run) {
        PlacementRequest req;
        req.placement = job.spec.placement;
        for (const auto& a : job.actors) req.actors.push_back({a.id, resources_of(job, a.id.role)});
        auto plan = place(req, capacities());
        if (plan.ok()) {
            result.plan = std::move(*plan);
        } else {
            result.pending_reason = plan.status().message();
        }
        return result;
    }
    TANDEM_ASSIGN_OR_RETURN(uint64_t n, store_.allocate_job_id());
    job.id = JobId(n);
    for (auto& a : job.actors) a.id.job = job.id;
    result.id = job.id;
    JobRecord& stored = jobs_[job.id] = std::move(job);
    persist(stored);
    event(stored, "submitted",
          fmt::format("{} ({}): {} trainer and {} rollout actors, priority {}", stored.spec.name,
                      config::enum_name(stored.spec.kind), stored.spec.trainer.replicas,
                      stored.spec.rollout.replicas, stored.spec.priority));
    schedule();
    if (stored.state == JobState::kPending) result.pending_reason = stored.reason;
    return result;
}

Status JobManager::cancel(JobId id, const std::string& why) {
    JobRecord* job = mutable_find(id);
    if (!job) return not_found(fmt::format("no job {}", id.str()));
    if (is_final(job->state)) {
        return invalid_argument(
            fmt::format("{} is already {}", id.str(), job_state_name(job->state)));
    }
    finish(*job, JobState::kCancelled, why);
    return Status();
}

void JobManager::schedule() {
    // Pending actors of running jobs first: they keep a job that already runs whole.
    for (auto& [id, j] : jobs_) {
        if (j.state != JobState::kRunning) continue;
        for (auto& a : j.actors) {
            if (a.phase == wire::ActorPhase::kPending) place_pending(j, a);
        }
    }
    std::vector<JobRecord*> pending;
    for (auto& [id, j] : jobs_) {
        if (j.state == JobState::kPending) pending.push_back(&j);
    }
    std::stable_sort(pending.begin(), pending.end(), [](const JobRecord* a, const JobRecord* b) {
        return a->spec.priority > b->spec.priority;  // then FIFO: map order is submission order
    });
    for (JobRecord* j : pending) try_place(*j);
}

bool JobManager::try_place(JobRecord& job) {
    PlacementRequest req;
    req.placement = job.spec.placement;
    for (const auto& a : job.actors) req.actors.push_back({a.id, resources_of(job, a.id.role)});
    auto plan = place(req, capacities());
    if (!plan.ok()) {
        metrics_.inc("tandem_scheduler_decisions_total", {{"outcome", "pending"}});
        if (job.reason != plan.status().message()) {
            job.reason = plan.status().message();
            persist(job);
            event(job, "pending", job.reason);
        }
        return false;
    }
    metrics_.inc("tandem_scheduler_decisions_total", {{"outcome", "placed"}});
    std::string where;
    for (auto& a : job.actors) {
        a.node = plan->at(a.name());
        where += fmt::format("{}{} on {}", where.empty() ? "" : ", ", a.name(), a.node);
    }
    job.state = JobState::kRunning;
    job.reason.clear();
    job.started_ns = clock_.wall_ns();
    persist(job);
    event(job, "placed", where);
    for (auto& a : job.actors) start_actor(job, a);
    persist(job);
    return true;
}

Json JobManager::placement_json(const JobRecord& job) const {
    Json actors = Json::object();
    for (const auto& a : job.actors) {
        const auto* n = nodes_.find(a.node);
        actors[a.name()] = {{"node", a.node}, {"host", n ? n->record.host : ""}};
        if (!a.gpus.empty()) actors[a.name()]["gpus"] = a.gpus;
    }
    return {{"actors", actors}};
}

void JobManager::start_actor(JobRecord& job, ActorRecord& actor) {
    actor.attempt += 1;
    actor.phase = wire::ActorPhase::kStarting;
    actor.exit_code = 0;
    actor.endpoints = Json::object();
    // Which of the node's GPUs: none another live actor on the node holds, unless both share
    // (resources.actors_per_gpu).
    actor.gpus.clear();
    const config::ActorResources& want = resources_of(job, actor.id.role);
    if (want.gpus > 0) {
        std::map<int, double> load;
        for (const auto& [jid, j] : jobs_) {
            for (const auto& other : j.actors) {
                if (&other == &actor || other.node != actor.node || !live(other)) continue;
                const int k = resources_of(j, other.id.role).actors_per_gpu;
                // An exclusive holder fills its slot: nobody shares it.
                for (int slot : other.gpus) load[slot] += k > 1 ? 1.0 / k : 1.0;
            }
        }
        const auto* n = nodes_.find(actor.node);
        auto slots = assign_gpus(actor.node, n ? n->record.resources.gpus : 0, load, want.gpus,
                                 want.actors_per_gpu);
        if (slots.ok()) {
            actor.gpus = *slots;
        } else {
            log_.with({.job = job.id.str(), .actor = actor.name()})
                .error("{}", slots.status().message());
        }
    }
    send_start(job, actor);
}

void JobManager::send_start(const JobRecord& job, const ActorRecord& actor) {
    wire::StartActor m;
    m.actor = actor.name();
    m.job = job.id.str();
    m.attempt = actor.attempt;
    m.spec_yaml = job.spec_yaml;
    m.placement = placement_json(job);
    if (Status s = link_.send(actor.node, wire::make_envelope(m, ++seq_)); !s.ok()) {
        // The node's heartbeat reconciliation or its death will settle the actor.
        log_.with({.job = job.id.str(), .actor = actor.name()})
            .warn("could not send start to {}: {}", actor.node, s.message());
    }
}

void JobManager::stop_actor(const ActorRecord& actor, const std::string& reason) {
    wire::StopActor m{actor.name(), reason};
    if (Status s = link_.send(actor.node, wire::make_envelope(m, ++seq_)); !s.ok()) {
        log_.with({.actor = actor.name()})
            .debug("could not send stop to {}: {}", actor.node, s.message());
    }
}

void JobManager::finish(JobRecord& job, JobState state, const std::string& reason) {
    no_rollout_since_.erase(job.id);
    for (auto& a : job.actors) {
        if (a.phase == wire::ActorPhase::kPending) a.phase = wire::ActorPhase::kStopped;
        if (!live(a)) continue;
        stop_actor(a, fmt::format("job {}", job_state_name(state)));
        a.phase = wire::ActorPhase::kStopped;
    }
    job.state = state;
    job.reason = reason;
    job.finished_ns = clock_.wall_ns();
    persist(job);
    event(job, "finished",
          fmt::format("{}{}{}", job_state_name(state), reason.empty() ? "" : ": ", reason));
    schedule();  // freed resources may let pending jobs run
}

void JobManager::actor_finished(JobRecord& job, ActorRecord& actor) {
    event(job, "actor_exited", fmt::format("{} on {} succeeded", actor.name(), actor.node));
    const bool trainers_only = job.spec.kind == config::JobKind::kGrpo;
    bool done = true;
    for (const auto& a : job.actors) {
        if (trainers_only && a.id.role != ActorRole::kTrainer) continue;
        done = done && a.phase == wire::ActorPhase::kSucceeded;
    }
    persist(job);
    if (done) finish(job, JobState::kSucceeded, "");
}

void JobManager::actor_failed(JobRecord& job, ActorRecord& actor, const std::string& error) {
    const std::string failed_node = actor.node;
    actor.phase = wire::ActorPhase::kFailed;
    actor.last_error = error;
    event(job, "actor_failed", fmt::format("{} on {}: {}", actor.name(), failed_node, error));
    const bool spare = replaceable(job, actor);
    if (job.restarts_used >= job.spec.max_actor_restarts) {
        if (spare) return actor_replaceable(job, actor, "");
        finish(job, JobState::kFailed,
               fmt::format("actor {} on {} failed: {}{}", actor.name(), failed_node, error,
                           job.spec.max_actor_restarts > 0
                               ? fmt::format(" (after {} restarts)", job.restarts_used)
                               : ""));
        return;
    }
    // Restart in place when the node is alive, otherwise anywhere else it fits.
    PlacementRequest req = placement_of(job, actor);
    const auto* node = nodes_.find(failed_node);
    if (!node || node->record.state != NodeState::kAlive) req.avoid.insert(failed_node);
    actor.node.clear();  // its resources are free for the placement below
    const auto caps = capacities();
    const bool in_place = req.avoid.count(failed_node) == 0;
    PlacementRequest here = req;  // the failed node only (pack would prefer the job's others)
    for (const auto& c : caps) {
        if (c.id != failed_node) here.avoid.insert(c.id);
    }
    auto plan = place(in_place ? here : req, caps);
    if (!plan.ok() && in_place) plan = place(req, caps);
    if (!plan.ok()) {
        if (spare) return actor_replaceable(job, actor, plan.status().message());
        actor.node = failed_node;
        finish(job, JobState::kFailed,
               fmt::format("actor {} on {} failed: {}; no node to restart it: {}", actor.name(),
                           failed_node, error, plan.status().message()));
        return;
    }
    job.restarts_used += 1;
    restart_on(job, actor, plan->at(actor.name()),
               fmt::format(", restart {} of {}", job.restarts_used, job.spec.max_actor_restarts));
    if (spare) check_rollouts(job);
}

PlacementRequest JobManager::placement_of(const JobRecord& job, const ActorRecord& actor) const {
    PlacementRequest req;
    req.placement = job.spec.placement;
    req.actors.push_back({actor.id, resources_of(job, actor.id.role)});
    for (const auto& a : job.actors) {
        if (&a != &actor && live(a)) req.fixed[a.name()] = a.node;
    }
    return req;
}

void JobManager::restart_on(JobRecord& job, ActorRecord& actor, const std::string& node,
                            const std::string& note) {
    actor.node = node;
    metrics_.inc("tandem_actor_restarts_total");
    metrics_.inc("tandem_scheduler_decisions_total", {{"outcome", "restart"}});
    start_actor(job, actor);
    persist(job);
    event(job, "actor_restarted",
          fmt::format("{} restarted on {} (attempt {}{})", actor.name(), actor.node, actor.attempt,
                      note));
}

void JobManager::actor_replaceable(JobRecord& job, ActorRecord& actor,
                                   const std::string& why_not_placed) {
    const int others = live_rollouts(job);
    if (why_not_placed.empty()) {
        // Restarts used up: it stays failed (on the node it failed on).
        persist(job);
        event(job, "actor_lost",
              fmt::format("{} will not be restarted: the job's {} restarts are used up; the job "
                          "continues on {} live rollout {}",
                          actor.name(), job.spec.max_actor_restarts, others,
                          others == 1 ? "actor" : "actors"));
    } else {
        // Its restart is counted now; it is placed when a node with room registers (schedule()).
        job.restarts_used += 1;
        actor.node.clear();
        actor.phase = wire::ActorPhase::kPending;
        actor.endpoints = Json::object();
        metrics_.inc("tandem_scheduler_decisions_total", {{"outcome", "pending"}});
        persist(job);
        event(job, "actor_pending",
              fmt::format("{} waits for a node with room (restart {} of {}): {}; the job "
                          "continues on {} live rollout {}",
                          actor.name(), job.restarts_used, job.spec.max_actor_restarts,
                          why_not_placed, others, others == 1 ? "actor" : "actors"));
    }
    check_rollouts(job);
}

bool JobManager::place_pending(JobRecord& job, ActorRecord& actor) {
    auto plan = place(placement_of(job, actor), capacities());
    if (!plan.ok()) return false;
    restart_on(job, actor, plan->at(actor.name()), "; it was pending");
    check_rollouts(job);
    return true;
}

void JobManager::check_rollouts(JobRecord& job) {
    if (job.state != JobState::kRunning || job.spec.kind != config::JobKind::kGrpo) return;
    if (live_rollouts(job) > 0) {
        no_rollout_since_.erase(job.id);
        return;
    }
    int pending = 0;
    std::string story;
    for (const auto& a : job.actors) {
        if (a.id.role != ActorRole::kRollout) continue;
        pending += a.phase == wire::ActorPhase::kPending;
        story += fmt::format("{}{} {}{}{}", story.empty() ? "" : "; ", a.name(),
                             wire::actor_phase_name(a.phase), a.node.empty() ? "" : " on " + a.node,
                             a.last_error.empty() ? "" : " (" + a.last_error + ")");
    }
    if (pending == 0) {
        finish(job, JobState::kFailed,
               fmt::format("no rollout actor of {} can run any more (restarts used up: {} of "
                           "{}): {}",
                           job.id.str(), job.restarts_used, job.spec.max_actor_restarts, story));
        return;
    }
    const auto now = clock_.now();
    const auto [it, first] = no_rollout_since_.emplace(job.id, now);
    const int64_t timeout_ms = job.spec.rollout.none_alive_timeout_ms;
    if (first) {
        event(job, "no_rollout_alive",
              fmt::format("no rollout actor of {} is alive: {}; the job fails unless one runs "
                          "again within {:.1f} s (rollout.none_alive_timeout_ms)",
                          job.id.str(), story, static_cast<double>(timeout_ms) / 1000));
    }
    const double waited_s = seconds_between(it->second, now);
    if (waited_s * 1000 >= static_cast<double>(timeout_ms)) {
        finish(job, JobState::kFailed,
               fmt::format("no rollout actor of {} was alive for {:.1f} s "
                           "(rollout.none_alive_timeout_ms = {}): {}",
                           job.id.str(), waited_s, timeout_ms, story));
    }
}

void JobManager::sweep() {
    // Every running job, not only those with a clock: a restored job starts its clock here.
    for (auto& [id, job] : jobs_) check_rollouts(job);
}

void JobManager::on_actor_state(const std::string& node, const wire::ActorState& m) {
    auto aid = ActorId::parse(m.actor);
    if (!aid.ok()) return;
    JobRecord* job = mutable_find(aid->job);
    if (!job || is_final(job->state)) return;
    ActorRecord* actor = find_actor(*job, m.actor);
    // Reports from an older attempt or another node are stale.
    if (!actor || actor->attempt != m.attempt || actor->node != node ||
        wire::is_terminal(actor->phase))
        return;
    if (!m.progress.is_null()) actor->progress = m.progress;
    switch (m.phase) {
        case wire::ActorPhase::kStarting:
        case wire::ActorPhase::kPending:  // the coordinator's own; agents do not report it
            break;
        case wire::ActorPhase::kRunning:
            if (actor->phase != wire::ActorPhase::kRunning) {
                actor->phase = wire::ActorPhase::kRunning;
                persist(*job);
                event(*job, "actor_started",
                      fmt::format("{} running on {} (attempt {})", m.actor, node, m.attempt));
            }
            break;
        case wire::ActorPhase::kSucceeded:
            actor->phase = wire::ActorPhase::kSucceeded;
            actor->exit_code = m.exit_code;
            actor_finished(*job, *actor);
            break;
        case wire::ActorPhase::kFailed:
        case wire::ActorPhase::kStopped:
            actor->exit_code = m.exit_code;
            actor_failed(
                *job, *actor,
                m.error.empty() ? fmt::format("exited with code {}", m.exit_code) : m.error);
            break;
    }
}

std::vector<std::string> JobManager::reconcile(const std::string& node,
                                               const std::vector<wire::ActorReport>& reports,
                                               bool registering) {
    std::vector<std::string> stop;
    std::map<std::string, const wire::ActorReport*> by_actor;
    for (const auto& r : reports) {
        by_actor[r.actor] = &r;
        auto aid = ActorId::parse(r.actor);
        const JobRecord* job = aid.ok() ? find(aid->job) : nullptr;
        const ActorRecord* actor = nullptr;
        if (job) {
            for (const auto& a : job->actors) {
                if (a.name() == r.actor) actor = &a;
            }
        }
        const bool wanted = job && !is_final(job->state) && actor && actor->node == node &&
                            actor->attempt == r.attempt;
        if (!wanted && !wire::is_terminal(r.phase)) stop.push_back(r.actor);
        if (wanted) {
            wire::ActorState s;
            s.actor = r.actor;
            s.attempt = r.attempt;
            s.phase = r.phase;
            s.exit_code = r.exit_code;
            s.error = r.error;
            s.progress = nullptr;
            on_actor_state(node, s);
        }
    }
    // Actors this node should run but does not know: they died with an agent restart.
    for (auto& [id, job] : jobs_) {
        if (is_final(job.state)) continue;
        for (auto& a : job.actors) {
            if (a.node != node || wire::is_terminal(a.phase) || by_actor.count(a.name())) continue;
            if (a.phase == wire::ActorPhase::kStarting) {
                // Still in flight, or sent while the agent was away: a new registration gets it
                // again (agents ignore a start for an attempt they already run).
                if (registering) send_start(job, a);
                continue;
            }
            actor_failed(job, a,
                         fmt::format("not running on {} any more (agent restarted?)", node));
        }
    }
    return stop;
}

void JobManager::on_node_dead(const std::string& node, const std::string& reason) {
    for (auto& [id, job] : jobs_) {
        if (is_final(job.state)) continue;
        bool hit = false;
        for (auto& a : job.actors) hit = hit || (a.node == node && live(a));
        if (!hit) continue;
        event(job, "node_lost", fmt::format("node {} {}", node, reason));
        for (auto& a : job.actors) {
            if (a.node == node && live(a) && !is_final(job.state)) {
                actor_failed(job, a, fmt::format("node {} lost ({})", node, reason));
            }
        }
    }
    schedule();
}

void JobManager::on_log_lines(const std::string& node, const wire::LogLines& m) {
    auto id = JobId::parse(m.job);
    JobRecord* job = id.ok() ? mutable_find(*id) : nullptr;
    if (!job) return;
    std::vector<LogRecord> lines;
    for (const auto& l : m.lines) {
        lines.push_back({0, l.ts_ns, l.actor, l.level, l.msg});
    }
    if (Status s = store_.append_logs(job->id, lines); !s.ok()) {
        log_.error("saving logs of {} from {}: {}", job->id.str(), node, s.message());
    }
}

void JobManager::on_endpoint(const std::string& node, const wire::ActorEndpoint& m) {
    auto aid = ActorId::parse(m.actor);
    JobRecord* job = aid.ok() ? mutable_find(aid->job) : nullptr;
    if (!job || is_final(job->state)) return;
    ActorRecord* actor = find_actor(*job, m.actor);
    if (!actor || actor->attempt != m.attempt || actor->node != node) return;
    actor->endpoints[m.name] = m.address;
    persist(*job);
}

void JobManager::on_metrics(const wire::JobMetrics& m) {
    auto id = JobId::parse(m.job);
    JobRecord* job = id.ok() ? mutable_find(*id) : nullptr;
    if (!job) return;
    job->step = std::max(job->step, m.step);
    job->last_metrics = m.values;
    if (Status s = store_.append_metrics(job->id, m.step, clock_.wall_ns(), m.values); !s.ok()) {
        log_.error("saving metrics of {}: {}", job->id.str(), s.message());
    }
    persist(*job);
}

}  // namespace tandem::coord
