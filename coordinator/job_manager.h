#pragma once

// JobManager: jobs from submission to their final state. Keeps the pending queue (priority, then
// submission order), asks the Scheduler for gang placements, starts and stops actors through the
// AgentLink, applies the actor failure policy (max_actor_restarts, in place or on another node),
// and writes every change and a per-job event log to the StateStore. A GRPO job's rollout actors
// are replaceable: one that cannot be restarted now waits as `pending` (placed when a node with
// room registers) or, with its restarts used up, stays failed, and the job runs on the others;
// it fails when no rollout is alive for longer than rollout.none_alive_timeout_ms. Owned by the
// coordinator loop; not thread-safe.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/wire/messages.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/records.h"
#include "coordinator/scheduler.h"
#include "coordinator/state_store.h"

namespace tandem::coord {

// How the JobManager reaches node agents (the AgentServer in production, a fake in tests).
class AgentLink {
public:
    virtual ~AgentLink() = default;
    virtual Status send(const std::string& node_id, const wire::Envelope& e) = 0;
};

struct SubmitResult {
    JobId id;                       // invalid for a dry run
    std::string spec_yaml;          // resolved
    std::optional<Placement> plan;  // where it would go now
    std::string pending_reason;     // why it cannot be placed now
};

class JobManager {
public:
    JobManager(const Clock& clock, StateStore& store, NodeRegistry& nodes, AgentLink& link,
               Metrics& metrics);

    // Jobs from the store after a restart; running jobs keep their actors.
    void restore(std::vector<JobRecord> jobs);

    // Validates, persists and queues a job (or, with dry_run, only plans it).
    Result<SubmitResult> submit(const std::string& spec_yaml, const std::string& source,
                                bool dry_run);
    Status cancel(JobId id, const std::string& why);

    void on_actor_state(const std::string& node, const wire::ActorState& m);
    // What an agent says runs on it (heartbeat, registration); returns actors it must stop.
    // `registering`: the agent just (re)registered, so starts it never saw are sent again.
    std::vector<std::string> reconcile(const std::string& node,
                                       const std::vector<wire::ActorReport>& reports,
                                       bool registering = false);
    void on_node_dead(const std::string& node, const std::string& reason);
    void on_log_lines(const std::string& node, const wire::LogLines& m);
    void on_endpoint(const std::string& node, const wire::ActorEndpoint& m);
    void on_metrics(const wire::JobMetrics& m);

    // Places what can be placed (pending actors of running jobs, then pending jobs); called when
    // nodes or jobs change.
    void schedule();
    // Deadlines: fails GRPO jobs that have had no live rollout actor for longer than their
    // rollout.none_alive_timeout_ms. Called periodically by the coordinator loop.
    void sweep();

    const std::map<JobId, JobRecord>& jobs() const { return jobs_; }
    const JobRecord* find(JobId id) const;
    // The job a name or id refers to ("job-000003", "3").
    const JobRecord* find(const std::string& name_or_id) const;
    std::vector<NodeCapacity> capacities() const;

private:
    JobRecord* mutable_find(JobId id);
    ActorRecord* find_actor(JobRecord& job, const std::string& actor);
    void event(JobRecord& job, const std::string& kind, const std::string& message);
    void persist(const JobRecord& job);
    bool try_place(JobRecord& job);
    void start_actor(JobRecord& job, ActorRecord& actor);  // next attempt
    void send_start(const JobRecord& job, const ActorRecord& actor);
    void stop_actor(const ActorRecord& actor, const std::string& reason);
    void actor_failed(JobRecord& job, ActorRecord& actor, const std::string& error);
    void actor_finished(JobRecord& job, ActorRecord& actor);
    // A request to place `actor` alone beside the job's live actors.
    PlacementRequest placement_of(const JobRecord& job, const ActorRecord& actor) const;
    // Starts the actor's next attempt on `node`; the actor_restarted event ends with `note`.
    void restart_on(JobRecord& job, ActorRecord& actor, const std::string& node,
                    const std::string& note);
    // A failed actor that the job can do without (a GRPO rollout): pending when restarts are
    // left (counted now), failed for good otherwise; the job goes on if any rollout can run.
    void actor_replaceable(JobRecord& job, ActorRecord& actor, const std::string& why_not_placed);
    // Places a pending actor of a running job; false when no node has room.
    bool place_pending(JobRecord& job, ActorRecord& actor);
    // Starts or clears the job's no-live-rollout clock; fails the job when no rollout can come
    // back or the clock ran past rollout.none_alive_timeout_ms.
    void check_rollouts(JobRecord& job);
    void finish(JobRecord& job, JobState state, const std::string& reason);
    Json placement_json(const JobRecord& job) const;

    const Clock& clock_;
    StateStore& store_;
    NodeRegistry& nodes_;
    AgentLink& link_;
    Metrics& metrics_;
    Logger log_;
    std::map<JobId, JobRecord> jobs_;
    // Running GRPO jobs with no live rollout actor: since when (monotonic; restarts with the
    // coordinator).
    std::map<JobId, Clock::TimePoint> no_rollout_since_;
    uint64_t seq_ = 0;
};

}  // namespace tandem::coord
