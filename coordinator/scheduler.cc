#include "coordinator/scheduler.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::coord {

namespace {

bool fits(const NodeCapacity& n, const config::ActorResources& r) {
    return n.alive && n.free_cpus + 1e-9 >= r.cpus && n.free_memory_mb >= r.memory_mb &&
           n.free_gpus + 1e-9 >= r.gpu_share();
}

void take(NodeCapacity& n, const config::ActorResources& r) {
    n.free_cpus -= r.cpus;
    n.free_memory_mb -= r.memory_mb;
    n.free_gpus -= r.gpu_share();
    n.actors += 1;
}

std::string plural(int n, std::string_view word) {
    return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s");
}

// What a node lacks for `r`, for the pending reason.
std::string shortage(const NodeCapacity& n, const config::ActorResources& r) {
    if (!n.alive) return fmt::format("{} dead", n.id);
    std::vector<std::string> lacks;
    if (n.free_gpus + 1e-9 < r.gpu_share())
        lacks.push_back(fmt::format("{:g} free gpus", n.free_gpus));
    if (n.free_cpus + 1e-9 < r.cpus) lacks.push_back(fmt::format("{:g} free cpus", n.free_cpus));
    if (n.free_memory_mb < r.memory_mb)
        lacks.push_back(fmt::format("{} MiB free", n.free_memory_mb));
    std::string s = n.id + ": ";
    for (size_t i = 0; i < lacks.size(); ++i) s += (i ? ", " : "") + lacks[i];
    return s;
}

std::string demand_text(const config::ActorResources& r) {
    std::string s;
    if (r.gpus > 0) {
        s += plural(r.gpus, "gpu");
        if (r.actors_per_gpu > 1) s += fmt::format(" (shared by up to {})", r.actors_per_gpu);
        s += ", ";
    }
    s += fmt::format("{:g} cpu{}, {} MiB", r.cpus, r.cpus == 1.0 ? "" : "s", r.memory_mb);
    return s;
}

}  // namespace

Result<Placement> place(const PlacementRequest& request, std::vector<NodeCapacity> nodes) {
    Placement out;
    std::set<std::string> used;     // nodes this job already uses
    std::set<std::string> anchors;  // colocate: nodes holding this job's trainers
    // Replicas of each role of this job per node: one role's replicas go to distinct nodes
    // while any node with room holds fewer of them (both strategies), so losing one node costs
    // one replica, as Ray's SPREAD would place them.
    std::map<std::pair<std::string, ActorRole>, int> replicas;
    for (const auto& [actor, node] : request.fixed) {
        used.insert(node);
        const bool trainer = actor.find("/trainer-") != std::string::npos;
        if (trainer) anchors.insert(node);
        replicas[{node, trainer ? ActorRole::kTrainer : ActorRole::kRollout}] += 1;
    }
    const bool spread = request.placement.strategy == config::PlacementStrategy::kSpread;
    const bool colocate = request.placement.colocate;

    // Trainers first, so colocated rollouts can follow them.
    std::vector<ActorDemand> order = request.actors;
    std::stable_sort(order.begin(), order.end(), [](const ActorDemand& a, const ActorDemand& b) {
        return a.actor.role == ActorRole::kTrainer && b.actor.role != ActorRole::kTrainer;
    });

    for (const auto& d : order) {
        NodeCapacity* best = nullptr;
        auto better = [&](const NodeCapacity& a, const NodeCapacity& b) {
            // First the node with fewer of this job's replicas of the actor's role; then
            // pack: prefer nodes this job uses, then the fullest (fewest free cpus);
            // spread: prefer nodes this job does not use, then the emptiest.
            const int ra = replicas[{a.id, d.actor.role}], rb = replicas[{b.id, d.actor.role}];
            if (ra != rb) return ra < rb;
            const bool ua = used.count(a.id) > 0, ub = used.count(b.id) > 0;
            if (ua != ub) return spread ? !ua : ua;
            if (a.actors != b.actors) return spread ? a.actors < b.actors : a.actors > b.actors;
            if (a.free_cpus != b.free_cpus)
                return spread ? a.free_cpus > b.free_cpus : a.free_cpus < b.free_cpus;
            return a.id < b.id;
        };
        for (auto& n : nodes) {
            if (request.avoid.count(n.id)) continue;
            const bool role_ok = colocate && d.actor.role == ActorRole::kRollout && !anchors.empty()
                                     ? anchors.count(n.id) > 0
                                     : n.role == d.actor.role;
            if (!role_ok || !fits(n, d.resources)) continue;
            if (!best || better(n, *best)) best = &n;
        }
        if (!best) {
            // Explain with the whole demand of this role, as the user thinks of it.
            int need = 0;
            for (const auto& x : request.actors) need += x.actor.role == d.actor.role;
            const std::string role(actor_role_name(d.actor.role));
            std::vector<std::string> why;
            int of_role = 0;
            for (const auto& n : nodes) {
                const bool candidate =
                    colocate && d.actor.role == ActorRole::kRollout && !anchors.empty()
                        ? anchors.count(n.id) > 0
                        : n.role == d.actor.role;
                if (!candidate) continue;
                ++of_role;
                if (request.avoid.count(n.id)) {
                    why.push_back(n.id + ": avoided after a failure");
                } else if (!fits(n, d.resources)) {
                    why.push_back(shortage(n, d.resources));
                }
            }
            int placed_of_role = 0;
            for (const auto& [a, node] : out)
                placed_of_role += a.find("/" + role + "-") != std::string::npos;
            std::string msg = fmt::format("needs {} with {} each", plural(need, role + " actor"),
                                          demand_text(d.resources));
            if (colocate && d.actor.role == ActorRole::kRollout && !anchors.empty()) {
                msg += fmt::format(" on the trainer's nodes (colocate); they can take {}",
                                   placed_of_role);
            } else if (of_role == 0) {
                msg += fmt::format("; the cluster has no {} nodes", role);
            } else {
                msg += fmt::format("; the {} can take {}", plural(of_role, role + " node"),
                                   placed_of_role);
            }
            if (!why.empty()) {
                msg += " (";
                for (size_t i = 0; i < why.size(); ++i) msg += (i ? "; " : "") + why[i];
                msg += ")";
            }
            return unavailable(msg);
        }
        take(*best, d.resources);
        used.insert(best->id);
        replicas[{best->id, d.actor.role}] += 1;
        if (d.actor.role == ActorRole::kTrainer) anchors.insert(best->id);
        out[d.actor.str()] = best->id;
    }
    return out;
}

Result<std::vector<int>> assign_gpus(const std::string& node, int64_t node_gpus,
                                     const std::set<int>& used, int64_t want) {
    std::map<int, double> load;
    for (int slot : used) load[slot] = 1.0;
    return assign_gpus(node, node_gpus, load, want, 1);
}

Result<std::vector<int>> assign_gpus(const std::string& node, int64_t node_gpus,
                                     const std::map<int, double>& load, int64_t want,
                                     int actors_per_gpu) {
    const double part = 1.0 / std::max(1, actors_per_gpu);
    auto used = [&](int slot) {
        auto it = load.find(slot);
        return it == load.end() ? 0.0 : it->second;
    };
    // Candidates: slots with room for `part` (an exclusive actor needs an unused one). Sharing
    // actors take the fullest first; ties and exclusive actors by slot number.
    std::vector<int> room;
    for (int slot = 0; slot < node_gpus; ++slot) {
        const double u = used(slot);
        if (actors_per_gpu > 1 ? u + part <= 1.0 + 1e-9 : u <= 1e-9) room.push_back(slot);
    }
    if (actors_per_gpu > 1) {
        std::stable_sort(room.begin(), room.end(),
                         [&](int a, int b) { return used(a) > used(b) + 1e-9; });
    }
    if (static_cast<int64_t>(room.size()) < want) {
        if (actors_per_gpu > 1) {
            return unavailable(fmt::format(
                "node {} has {} of its {} gpus with room for an actor sharing one {} ways; {} "
                "needed",
                node, room.size(), node_gpus, actors_per_gpu, want));
        }
        return unavailable(fmt::format("node {} has {} of its {} gpus free; {} needed", node,
                                       room.size(), node_gpus, want));
    }
    room.resize(static_cast<size_t>(want));
    std::sort(room.begin(), room.end());
    return room;
}

}  // namespace tandem::coord
