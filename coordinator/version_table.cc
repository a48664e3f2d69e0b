#include "coordinator/version_table.h"

#include <fmt/format.h>

namespace tandem::coord {

VersionTable::VersionTable(const Clock& clock, StateStore& store)
    : clock_(clock), store_(store), log_("versions") {}

void VersionTable::restore(JobId job, std::vector<VersionRecord> versions) {
    for (auto& v : versions) versions_[job][v.version] = std::move(v);
}

Status VersionTable::publish(JobId job, Version version, const Json& descriptor,
                             const std::string& node) {
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
    rec.available = true;
    log_.with({.job = job.str(), .version = version})
        .debug("version {} published by {}", version, node);
    return store_.save_version(job, rec);
}

void VersionTable::on_node_dead(const std::string& node) {
    for (auto& [job, table] : versions_) {
        for (auto& [v, rec] : table) {
            if (!rec.available) continue;
            for (const auto& n : rec.descriptor.value("publisher_nodes", Json::array())) {
                if (n == node) {
                    rec.available = false;
                    if (Status s = store_.save_version(job, rec); !s.ok()) {
                        log_.error("saving version {} of {}: {}", v, job.str(), s.message());
                    }
                    break;
                }
            }
        }
    }
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
