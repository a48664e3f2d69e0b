#include "coordinator/runtime_relay.h"

#include <fmt/format.h>

namespace tandem::coord {

wire::JobView RuntimeRelay::view(const JobRecord& job) const {
    wire::JobView v;
    v.job = job.id.str();
    const wire::Fence fence = versions_.fence(job.id);
    if (fence.valid()) v.fence = fence.to_json();
    if (auto newest = versions_.latest(job.id)) {
        Json descriptor = newest->descriptor;
        Json info = descriptor.value("info", Json());
        descriptor.erase("info");
        descriptor.erase("publisher_nodes");
        v.newest = {{"info", info}, {"descriptor", descriptor}};
    }
    for (const auto& a : job.actors) {
        v.peers.push_back({{"actor", a.name()},
                           {"attempt", a.attempt},
                           {"phase", wire::actor_phase_name(a.phase)},
                           {"endpoints", a.endpoints}});
    }
    v.cancelled = is_final(job.state);
    v.metrics_step = job.last_metrics.empty() ? -1 : job.step;
    return v;
}

void RuntimeRelay::push(JobId id) {
    const JobRecord* job = jobs_.find(id);
    if (!job) return;
    const bool final = is_final(job->state);
    if (final && final_pushed_.count(id)) return;
    std::set<std::string> nodes;
    for (const auto& a : job->actors) {
        if (!a.node.empty()) nodes.insert(a.node);
    }
    if (nodes.empty()) return;
    const wire::JobView v = view(*job);
    const wire::Envelope e = wire::make_envelope(v, 0);
    const std::string body = e.body.dump();
    bool all_sent = true;
    for (const auto& node : nodes) {
        std::string& last = sent_[{node, id}];
        if (last == body) continue;
        if (link_.send(node, e).ok()) {
            last = body;
        } else {
            all_sent = false;
        }
    }
    if (final && all_sent) {
        final_pushed_.insert(id);
        for (const auto& node : nodes) sent_.erase({node, id});
    }
}

void RuntimeRelay::push_all() {
    for (const auto& [id, job] : jobs_.jobs()) {
        if (final_pushed_.count(id)) continue;
        push(id);
    }
}

void RuntimeRelay::forget(const std::string& node) {
    for (auto it = sent_.begin(); it != sent_.end();) {
        it = it->first.first == node ? sent_.erase(it) : std::next(it);
    }
    final_pushed_.clear();  // a returning node may hold actors of jobs that ended meanwhile
}

}  // namespace tandem::coord
