#pragma once

// NodeRegistry: which node agents exist, how to reach them (ZeroMQ routing id), and whether they
// are alive. Refuses a wrong cluster secret and a second live agent with the same node id; marks a
// node dead when it misses heartbeats for dead_after_ms. Owned by the coordinator loop; not
// thread-safe.

#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/config/cluster_spec.h"
#include "common/log.h"
#include "common/wire/messages.h"
#include "coordinator/records.h"
#include "coordinator/state_store.h"

namespace tandem::coord {

class NodeRegistry {
public:
    struct Entry {
        NodeRecord record;
        std::string routing_id;  // empty until the agent registers with this coordinator
        std::string instance;
        Clock::TimePoint last_heartbeat{};
        Clock::TimePoint last_ack{};  // the last heartbeat_ack sent to it (AgentDispatcher)
    };

    NodeRegistry(const Clock& clock, StateStore& store, const config::CoordinatorSpec& spec,
                 std::string secret);

    // Nodes from the store after a restart: they count as alive until dead_after_ms from now, so
    // their agents can re-register before anything is rescheduled.
    void restore(std::vector<NodeRecord> nodes);

    // permission_denied for a wrong secret; already_exists for a second live agent with the id.
    // An agent of another release is accepted with a warning (wire::release_skew_message): its
    // envelope already showed the same control-protocol major, as in a rolling upgrade.
    Result<const Entry*> on_register(const wire::Register& m, const std::string& routing_id);
    // nullptr if the sender is not the registered agent of m.node_id (it must register again).
    Entry* on_heartbeat(const wire::Heartbeat& m, const std::string& routing_id);

    // Marks nodes dead whose last heartbeat is older than dead_after_ms; returns them with the
    // reason ("missed heartbeats for 5.2 s").
    std::vector<std::pair<std::string, std::string>> sweep();

    const Entry* find(const std::string& node_id) const;
    std::optional<std::string> node_of(const std::string& routing_id) const;
    const std::map<std::string, Entry>& entries() const { return nodes_; }
    size_t alive_count() const;
    const config::CoordinatorSpec& spec() const { return spec_; }

private:
    void forget_routing(const Entry& e);

    const Clock& clock_;
    StateStore& store_;
    const config::CoordinatorSpec spec_;
    const std::string secret_;
    Logger log_;
    std::map<std::string, Entry> nodes_;  // entries are never erased: pointers to them stay valid
    // Routing id -> connected entry: a heartbeat finds its node with one hash lookup.
    std::unordered_map<std::string, Entry*> by_routing_;
};

}  // namespace tandem::coord
