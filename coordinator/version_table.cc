#include "coordinator/version_table.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::coord {

namespace {

// The table's own fields ride in the persisted descriptor under this key (the store keeps one
// descriptor column); restore() takes them out again.
constexpr const char* kTableKey = "version_table";

Json publisher_json(const VersionPublisher& p) {
    return {{"actor", p.actor}, {"attempt", p.attempt}, {"node", p.node}};
}
VersionPublisher publisher_from_json(const Json& j) {
    return {j.value("actor", ""), j.value("attempt", int64_t{-1}), j.value("node", "")};
}
Json relay_json(const RelayLink& r) {
    return {{"reader", r.reader},
            {"relay_source", r.relay_source},
            {"parent", r.parent.empty() ? Json(nullptr) : Json(r.parent)},
            {"depth", r.depth}};
}
RelayLink relay_from_json(const Json& j) {
    RelayLink r;
    r.reader = j.value("reader", "");
    r.relay_source = j.value("relay_source", Json(nullptr));
    const Json parent = j.value("parent", Json(nullptr));
    r.parent = parent.is_string() ? parent.get<std::string>() : "";
    r.depth = j.value("depth", uint32_t{1});
    return r;
}

// The actor ids of a descriptor's shards (the weight plane's JSON: shards[].publisher).
std::vector<std::string> shard_publishers(const Json& descriptor) {
    std::vector<std::string> out;
    if (!descriptor.contains("shards") || !descriptor["shards"].is_array()) return out;
    for (const auto& s : descriptor["shards"]) {
        if (s.is_object() && s.contains("publisher") && s["publisher"].is_string())
            out.push_back(s["publisher"].get<std::string>());
    }
    return out;
}

std::string describe(JobId job, Version version) {
    return fmt::format("version {} of {}", version, job.str());
}

}  // namespace

Json version_json(const VersionRecord& v) {
    Json publishers = Json::array();
    for (const auto& p : v.publishers) publishers.push_back(publisher_json(p));
    Json relays = Json::array();
    for (const auto& r : v.relays) relays.push_back(relay_json(r));
    return {{"version", v.version},
            {"published_ns", v.published_ns},
            {"state", version_state_name(v.state)},
            {"available", v.available},
            {"reason", v.reason},
            {"publishers", publishers},
            {"relays", relays},
            {"descriptor", v.descriptor}};
}

VersionTable::VersionTable(const Clock& clock, StateStore& store)
    : clock_(clock), store_(store), log_("versions") {}

void VersionTable::restore(JobId job, std::vector<VersionRecord> versions) {
    for (auto& v : versions) {
        if (v.descriptor.is_object() && v.descriptor.contains(kTableKey)) {
            const Json t = v.descriptor[kTableKey];
            v.descriptor.erase(kTableKey);
            auto state = parse_version_state(t.value("state", ""));
            v.state = state.ok()    ? *state
                      : v.available ? VersionState::kAvailable
                                    : VersionState::kUnavailable;
            v.reason = t.value("reason", "");
            for (const auto& p : t.value("publishers", Json::array()))
                v.publishers.push_back(publisher_from_json(p));
            for (const auto& r : t.value("relays", Json::array()))
                v.relays.push_back(relay_from_json(r));
        } else {
            v.state = v.available ? VersionState::kAvailable : VersionState::kUnavailable;
        }
        v.available = v.state == VersionState::kAvailable;
        if (v.available) {
            for (const auto& p : v.publishers) {
                if (!p.actor.empty()) by_publisher_[{job, p.actor, p.attempt}].insert(v.version);
            }
        }
        if (v.descriptor.is_object() && v.descriptor.contains("info") &&
            v.descriptor["info"].is_object() && v.descriptor["info"].contains("fence")) {
            if (auto f = wire::Fence::from_json(v.descriptor["info"]["fence"]); f.ok())
                advance_fence(job, *f);
        }
        const Version version = v.version;
        versions_[job][version] = std::move(v);
    }
}

VersionTable::Numbering& VersionTable::numbering(JobId job) {
    Numbering& n = numbering_[job];
    // Above every recorded version, restored or published (recorded versions carry their fence).
    if (auto it = versions_.find(job); it != versions_.end() && !it->second.empty()) {
        n.next = std::max(n.next, it->second.rbegin()->first + 1);
    }
    return n;
}

void VersionTable::advance_fence(JobId job, const wire::Fence& fence) {
    Numbering& n = numbering(job);
    if (fence > n.fence) {
        log_.with({.job = job.str()})
            .info("fence of {} moves from {} to {}", job.str(), n.fence.str(), fence.str());
        n.fence = fence;
        // Assignments of older fences can never be asked for again.
        std::erase_if(n.assigned, [&](const auto& e) { return e.first.first < fence; });
    }
}

wire::Fence VersionTable::fence(JobId job) const {
    auto it = numbering_.find(job);
    return it == numbering_.end() ? wire::Fence{} : it->second.fence;
}

Result<Version> VersionTable::assign(JobId job, const wire::Fence& fence, int64_t step,
                                     int64_t after) {
    if (!fence.valid()) return invalid_argument(fmt::format("fence {}: not valid", fence.str()));
    advance_fence(job, fence);
    Numbering& n = numbering(job);
    if (fence < n.fence) {
        return unavailable(fmt::format("trainer of fence {} was fenced off: {} is at fence {}",
                                       fence.str(), job.str(), n.fence.str()));
    }
    if (auto it = n.assigned.find({fence, step}); it != n.assigned.end()) return it->second;
    Version v = n.next;
    if (after >= 0) v = std::max(v, static_cast<Version>(after) + 1);
    n.next = v + 1;
    n.assigned[{fence, step}] = v;
    log_.with({.job = job.str(), .version = v})
        .debug("assigned version {} to step {} of fence {}", v, step, fence.str());
    return v;
}

VersionRecord* VersionTable::find(JobId job, Version version) {
    auto it = versions_.find(job);
    if (it == versions_.end()) return nullptr;
    auto v = it->second.find(version);
    return v == it->second.end() ? nullptr : &v->second;
}

void VersionTable::save(JobId job, const VersionRecord& rec) {
    VersionRecord stored = rec;
    Json publishers = Json::array();
    for (const auto& p : rec.publishers) publishers.push_back(publisher_json(p));
    Json relays = Json::array();
    for (const auto& r : rec.relays) relays.push_back(relay_json(r));
    stored.descriptor[kTableKey] = {{"state", version_state_name(rec.state)},
                                    {"reason", rec.reason},
                                    {"publishers", publishers},
                                    {"relays", relays}};
    if (Status s = store_.save_version(job, stored); !s.ok()) {
        log_.with({.job = job.str(), .version = rec.version})
            .error("saving {}: {}", describe(job, rec.version), s.message());
    }
}

Status VersionTable::publish(JobId job, Version version, const Json& descriptor,
                             const std::string& node, const VersionPublisher& publisher) {
    if (descriptor.is_object() && descriptor.contains("info") && descriptor["info"].is_object() &&
        descriptor["info"].contains("fence")) {
        auto fence = wire::Fence::from_json(descriptor["info"]["fence"]);
        if (!fence.ok()) return fence.status().with_context(describe(job, version));
        advance_fence(job, *fence);
        const wire::Fence current = numbering(job).fence;
        if (*fence < current) {
            return unavailable(
                fmt::format("{} refused: its trainer (fence {}) was fenced off by "
                            "fence {}",
                            describe(job, version), fence->str(), current.str()));
        }
    }
    auto& table = versions_[job];
    VersionRecord& rec = table[version];
    if (rec.published_ns == 0) {
        rec.version = version;
        rec.published_ns = clock_.wall_ns();
        rec.descriptor = descriptor;
        rec.descriptor["publisher_nodes"] = Json::array();
    } else {
        // Another shard of the same version: append its shards.
        if (descriptor.contains("shards") && descriptor["shards"].is_array()) {
            for (const auto& s : descriptor["shards"]) rec.descriptor["shards"].push_back(s);
        }
    }
    rec.descriptor["publisher_nodes"].push_back(node);
    VersionPublisher p = publisher;
    p.node = node;
    if (p.actor.empty()) {
        const auto named = shard_publishers(descriptor);
        if (!named.empty()) p.actor = named.front();
    }
    rec.publishers.push_back(p);
    if (rec.state == VersionState::kAvailable) {
        rec.available = true;
        if (!p.actor.empty()) by_publisher_[{job, p.actor, p.attempt}].insert(version);
    }
    log_.with({.job = job.str(), .actor = p.actor, .version = version})
        .debug("version {} published by {} on {}", version, p.actor, node);
    save(job, rec);
    return Status();
}

void VersionTable::mark(JobId job, VersionRecord& rec, VersionState state,
                        const std::string& reason) {
    if (rec.state != VersionState::kAvailable) return;
    rec.state = state;
    rec.available = false;
    rec.reason = reason;
    for (const auto& p : rec.publishers) {
        auto it = by_publisher_.find({job, p.actor, p.attempt});
        if (it == by_publisher_.end()) continue;
        it->second.erase(rec.version);
        if (it->second.empty()) by_publisher_.erase(it);
    }
    log_.with({.job = job.str(), .version = rec.version})
        .info("{} is {}: {}", describe(job, rec.version), version_state_name(state), reason);
    save(job, rec);
}

Status VersionTable::retire(JobId job, Version version, uint32_t shard,
                            const std::string& publisher) {
    VersionRecord* rec = find(job, version);
    if (!rec) return not_found(fmt::format("{} was never published", describe(job, version)));
    mark(job, *rec, VersionState::kRetired,
         fmt::format("{} released the slot of shard {} (reclaimed for a newer version, or the "
                     "publisher shut down)",
                     publisher, shard));
    return Status();
}

void VersionTable::on_node_dead(const std::string& node, const std::string& reason) {
    const std::string why = reason.empty() ? fmt::format("node {} was lost", node)
                                           : fmt::format("node {} was lost: {}", node, reason);
    for (auto& [job, table] : versions_) {
        for (auto& [v, rec] : table) {
            if (rec.state != VersionState::kAvailable) continue;
            const bool hit = std::any_of(rec.publishers.begin(), rec.publishers.end(),
                                         [&](const VersionPublisher& p) { return p.node == node; });
            if (hit) mark(job, rec, VersionState::kUnavailable, why);
        }
    }
}

void VersionTable::on_publisher_gone(JobId job, const std::string& actor, int64_t attempt,
                                     const std::string& reason) {
    check_publishers([&](JobId j, const VersionPublisher& p) -> std::optional<std::string> {
        if (j == job && p.actor == actor && p.attempt == attempt) return reason;
        return std::nullopt;
    });
}

void VersionTable::check_publishers(const PublisherGone& gone) {
    std::vector<std::pair<PublisherKey, std::string>> dead;
    for (const auto& [key, versions] : by_publisher_) {
        const auto& [job, actor, attempt] = key;
        if (auto why = gone(job, VersionPublisher{actor, attempt, ""})) dead.push_back({key, *why});
    }
    for (const auto& [key, why] : dead) {
        auto it = by_publisher_.find(key);
        if (it == by_publisher_.end()) continue;
        const std::set<Version> versions = it->second;  // mark() edits the index
        const JobId job = std::get<0>(key);
        for (Version v : versions) {
            if (VersionRecord* rec = find(job, v)) mark(job, *rec, VersionState::kUnavailable, why);
        }
        by_publisher_.erase(key);
    }
}

Result<VersionRecord> VersionTable::get(JobId job, Version version) const {
    auto it = versions_.find(job);
    const VersionRecord* rec = nullptr;
    if (it != versions_.end()) {
        auto v = it->second.find(version);
        if (v != it->second.end()) rec = &v->second;
    }
    if (!rec) return not_found(fmt::format("{} was never published", describe(job, version)));
    if (rec->state != VersionState::kAvailable) {
        return unavailable(fmt::format("{} is {}: {}", describe(job, version),
                                       version_state_name(rec->state), rec->reason));
    }
    return *rec;
}

Result<RelayLink> VersionTable::join_relay(JobId job, Version version, const std::string& reader,
                                           const Json& relay_source, uint32_t fan_out) {
    TANDEM_RETURN_IF_ERROR(get(job, version));
    if (reader.empty()) return invalid_argument("relay join: reader: empty");
    if (fan_out == 0) return invalid_argument("relay join: fan-out must be at least 1");
    VersionRecord& rec = *find(job, version);
    for (const auto& r : rec.relays) {
        if (r.reader == reader) return r;
    }
    RelayLink link;
    link.reader = reader;
    link.relay_source = relay_source;
    size_t direct = 0;
    std::map<std::string, size_t> children;
    for (const auto& r : rec.relays) {
        if (r.parent.empty()) {
            ++direct;
        } else {
            ++children[r.parent];
        }
    }
    if (direct >= fan_out) {
        // Breadth first: the earliest relaying reader with room. Join order is depth order
        // because every parent joined before its children.
        for (const auto& r : rec.relays) {
            if (r.relay_source.is_null() || children[r.reader] >= fan_out) continue;
            link.parent = r.reader;
            link.depth = r.depth + 1;
            break;
        }
        // No relaying reader has room (none relays): read the publishers.
    }
    rec.relays.push_back(link);
    log_.with({.job = job.str(), .actor = reader, .version = version})
        .debug("{} reads {} from {}", reader, describe(job, version),
               link.parent.empty() ? "the publishers" : link.parent);
    save(job, rec);
    return link;
}

Result<VersionTable::Assignment> VersionTable::relay_assignment(JobId job, Version version,
                                                                const std::string& reader) const {
    TANDEM_ASSIGN_OR_RETURN(VersionRecord rec, get(job, version));
    Assignment out;
    bool found = false;
    for (const auto& r : rec.relays) {
        if (r.reader == reader) {
            out.link = r;
            found = true;
        }
    }
    if (!found) {
        return not_found(
            fmt::format("{} has not joined the relay tree of {}", reader, describe(job, version)));
    }
    for (const auto& r : rec.relays) {
        if (!out.link.parent.empty() && r.reader == out.link.parent) out.source = r.relay_source;
    }
    return out;
}

std::vector<VersionRecord> VersionTable::list(JobId job) const {
    std::vector<VersionRecord> out;
    auto it = versions_.find(job);
    if (it == versions_.end()) return out;
    for (const auto& [v, rec] : it->second) out.push_back(rec);
    return out;
}

std::optional<VersionRecord> VersionTable::latest(JobId job) const {
    auto it = versions_.find(job);
    if (it == versions_.end()) return std::nullopt;
    for (auto r = it->second.rbegin(); r != it->second.rend(); ++r) {
        if (r->second.available) return r->second;
    }
    return std::nullopt;
}

size_t VersionTable::count(JobId job) const {
    auto it = versions_.find(job);
    return it == versions_.end() ? 0 : it->second.size();
}

}  // namespace tandem::coord
