#pragma once

// AgentDispatcher: what agent messages mean. Decodes envelopes from the AgentServer, answers
// malformed ones with an error (logged once per kind of problem, rate-limited), and hands valid
// ones to the NodeRegistry, JobManager and VersionTable. NodeSender is the JobManager's way back to
// a node. Both owned by the coordinator loop; not thread-safe.

#include <map>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/wire/messages.h"
#include "coordinator/agent_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/runtime_relay.h"
#include "coordinator/version_table.h"

namespace tandem::coord {

class NodeSender final : public AgentLink {
public:
    // `epoch`: stamped into every StartActor/StopActor (0: not stamped, tests).
    NodeSender(AgentServer& server, const NodeRegistry& nodes, uint64_t epoch = 0)
        : server_(server), nodes_(nodes), epoch_(epoch) {}
    Status send(const std::string& node_id, const wire::Envelope& e) override;

private:
    AgentServer& server_;
    const NodeRegistry& nodes_;
    const uint64_t epoch_;
};

struct DispatcherSettings {
    int64_t heartbeat_ms = 1000;  // told to agents when they register
    uint64_t epoch = 0;           // this coordinator incarnation (StateStore::epoch)
    std::string actor_token;      // the HTTP token (role actor) agents hand their actors
};

class AgentDispatcher {
public:
    AgentDispatcher(const Clock& clock, AgentServer& server, NodeRegistry& nodes, JobManager& jobs,
                    VersionTable& versions, Metrics& metrics, DispatcherSettings settings);
    AgentDispatcher(const AgentDispatcher&) = delete;
    AgentDispatcher& operator=(const AgentDispatcher&) = delete;

    void handle(const std::string& routing_id, const std::vector<std::string>& frames);
    // Marks nodes dead that missed their heartbeats and fails their actors; call periodically.
    void sweep();

private:
    void reply_error(const std::string& routing_id, const Status& s, uint64_t in_reply_to);
    void on_register(const std::string& routing_id, const wire::Envelope& e);
    void on_heartbeat(const std::string& routing_id, const wire::Envelope& e);
    void send(const std::string& routing_id, const wire::Envelope& e);
    // The actor (and its current attempt) that announced a version, from the descriptor's shards.
    VersionPublisher publisher_of(JobId job, const Json& descriptor) const;
    // Versions whose publisher exited, was replaced or lost its job become unavailable.
    void check_publishers();
    // The actor runtime's requests relayed by agents: version numbers and relay places.
    void on_version_assign(const std::string& routing_id, const std::string& node,
                           const wire::Envelope& e);
    void on_relay_join(const std::string& routing_id, const std::string& node,
                       const wire::Envelope& e);
    void on_version_published(const std::string& routing_id, const std::string& node,
                              const wire::Envelope& e);
    // Raises each running job's fence to its trainer's current attempt.
    void advance_fences();

    const Clock& clock_;
    AgentServer& server_;
    NodeRegistry& nodes_;
    JobManager& jobs_;
    VersionTable& versions_;
    Metrics& metrics_;
    const DispatcherSettings settings_;
    const Clock::Duration ack_every_;  // the longest a live node goes without a heartbeat_ack
    Logger log_;
    RateLimitedLogger bad_input_log_;
    std::map<std::string, double*> messages_by_type_;  // counter cells, by message type
    uint64_t seq_ = 0;
    NodeSender runtime_link_;
    RuntimeRelay runtime_;
};

}  // namespace tandem::coord
