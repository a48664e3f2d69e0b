#include "coordinator/node_registry.h"

#include <fmt/format.h>

#include "common/version.h"

namespace tandem::coord {

NodeRegistry::NodeRegistry(const Clock& clock, StateStore& store,
                           const config::CoordinatorSpec& spec, std::string secret)
    : clock_(clock), store_(store), spec_(spec), secret_(std::move(secret)), log_("registry") {}

void NodeRegistry::restore(std::vector<NodeRecord> nodes) {
    for (auto& n : nodes) {
        Entry e;
        e.record = std::move(n);
        e.last_heartbeat = clock_.now();  // grace: dead_after_ms from the restart
        nodes_[e.record.id] = std::move(e);
    }
}

Result<const NodeRegistry::Entry*> NodeRegistry::on_register(const wire::Register& m,
                                                             const std::string& routing_id) {
    if (m.secret != secret_) {
        log_.warn("node {} ({}) refused: wrong cluster secret", m.node_id, m.host);
        return permission_denied(fmt::format("node {}: wrong cluster secret", m.node_id));
    }
    if (Status s = validate_node_id(m.node_id); !s.ok()) return s;
    const auto now = clock_.now();
    auto it = nodes_.find(m.node_id);
    if (it != nodes_.end()) {
        const Entry& old = it->second;
        const double since = seconds_between(old.last_heartbeat, now);
        const bool live = old.record.state == NodeState::kAlive && !old.routing_id.empty() &&
                          since * 1000 < static_cast<double>(spec_.dead_after_ms);
        if (live && old.instance != m.instance) {
            log_.warn("node {} refused: id already registered by a live agent on {}", m.node_id,
                      old.record.host);
            return already_exists(fmt::format(
                "node id {} is already registered by a live agent on {} (last heartbeat {:.1f} s "
                "ago)",
                m.node_id, old.record.host, since));
        }
        forget_routing(it->second);
    }
    Entry& e = nodes_[m.node_id];
    const bool was_dead = e.record.state == NodeState::kDead && !e.record.id.empty();
    const int64_t first_seen = e.record.first_seen_ns ? e.record.first_seen_ns : clock_.wall_ns();
    e.record = NodeRecord{m.node_id,
                          m.role,
                          m.host,
                          m.agent_version,
                          m.resources,
                          m.labels,
                          NodeState::kAlive,
                          first_seen,
                          clock_.wall_ns(),
                          ""};
    e.routing_id = routing_id;
    e.instance = m.instance;
    e.last_heartbeat = now;
    e.last_ack = now;  // the register_ack counts as one
    by_routing_[routing_id] = &e;
    if (Status s = store_.save_node(e.record); !s.ok())
        log_.error("saving node {}: {}", m.node_id, s.message());
    log_.info("node {} registered ({}, {}, {} cpus, {} MiB, {} gpus){}", m.node_id, m.role, m.host,
              m.resources.cpus, m.resources.memory_mb, m.resources.gpus,
              was_dead ? " after being dead" : "");
    if (const std::string skew = wire::release_skew_message(m.node_id, m.agent_version, kVersion);
        !skew.empty())
        log_.warn("{}", skew);
    return &e;
}

NodeRegistry::Entry* NodeRegistry::on_heartbeat(const wire::Heartbeat& m,
                                                const std::string& routing_id) {
    auto it = by_routing_.find(routing_id);
    if (it == by_routing_.end()) return nullptr;
    Entry& e = *it->second;
    if (e.record.id != m.node_id || e.record.state != NodeState::kAlive) return nullptr;
    e.last_heartbeat = clock_.now();
    e.record.last_seen_ns = clock_.wall_ns();
    return &e;
}

std::vector<std::pair<std::string, std::string>> NodeRegistry::sweep() {
    std::vector<std::pair<std::string, std::string>> dead;
    const auto now = clock_.now();
    for (auto& [id, e] : nodes_) {
        if (e.record.state != NodeState::kAlive) continue;
        const double since = seconds_between(e.last_heartbeat, now);
        if (since * 1000 < static_cast<double>(spec_.dead_after_ms)) continue;
        e.record.state = NodeState::kDead;
        e.record.dead_reason =
            e.routing_id.empty()
                ? fmt::format("did not re-register within {:.1f} s of a coordinator restart", since)
                : fmt::format("missed heartbeats for {:.1f} s", since);
        forget_routing(e);
        e.routing_id.clear();
        log_.warn("node {} is dead: {}", id, e.record.dead_reason);
        if (Status s = store_.save_node(e.record); !s.ok())
            log_.error("saving node {}: {}", id, s.message());
        dead.emplace_back(id, e.record.dead_reason);
    }
    return dead;
}

void NodeRegistry::forget_routing(const Entry& e) {
    // Only if the connection still belongs to this node (it may have registered another id since).
    auto it = by_routing_.find(e.routing_id);
    if (it != by_routing_.end() && it->second == &e) by_routing_.erase(it);
}

const NodeRegistry::Entry* NodeRegistry::find(const std::string& node_id) const {
    auto it = nodes_.find(node_id);
    return it == nodes_.end() ? nullptr : &it->second;
}

std::optional<std::string> NodeRegistry::node_of(const std::string& routing_id) const {
    auto it = by_routing_.find(routing_id);
    if (it == by_routing_.end()) return std::nullopt;
    return it->second->record.id;
}

size_t NodeRegistry::alive_count() const {
    size_t n = 0;
    for (const auto& [id, e] : nodes_) n += e.record.state == NodeState::kAlive;
    return n;
}

}  // namespace tandem::coord
