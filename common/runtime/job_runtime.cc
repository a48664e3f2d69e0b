#include "common/runtime/job_runtime.h"

#include <fmt/format.h>

namespace tandem::runtime {

Json VersionInfo::to_json() const {
    return {{"version", version},
            {"fence", fence.to_json()},
            {"step", step},
            {"data_cursor", data_cursor}};
}

Result<VersionInfo> VersionInfo::from_json(const Json& j) {
    if (!j.is_object()) return invalid_argument("version info: expected a JSON object");
    VersionInfo v;
    try {
        v.version = j.at("version").get<Version>();
        TANDEM_ASSIGN_OR_RETURN(v.fence, Fence::from_json(j.at("fence")));
        v.step = j.value("step", int64_t{0});
        v.data_cursor = j.value("data_cursor", uint64_t{0});
    } catch (const Json::exception& e) {
        return invalid_argument(fmt::format("version info: {}", e.what()));
    }
    return v;
}

std::optional<std::string> Peer::endpoint(std::string_view name) const {
    auto it = endpoints.find(std::string(name));
    if (it == endpoints.end()) return std::nullopt;
    return it->second;
}

const Peer* JobView::peer(const ActorId& id) const {
    for (const auto& p : peers) {
        if (p.actor == id) return &p;
    }
    return nullptr;
}

std::vector<const Peer*> JobView::live(ActorRole role) const {
    std::vector<const Peer*> out;
    for (const auto& p : peers) {
        if (p.actor.role == role && p.alive()) out.push_back(&p);
    }
    return out;
}

void RuntimeAnnouncer::expect(const VersionInfo& info) {
    std::lock_guard lock(mu_);
    expected_[info.version] = info;
}

Status RuntimeAnnouncer::announce(const weights::VersionDescriptor& shard_version) {
    VersionInfo info;
    {
        std::lock_guard lock(mu_);
        auto it = expected_.find(shard_version.version);
        if (it == expected_.end()) {
            return invalid_argument(fmt::format(
                "version {} was not assigned by the version table (call expect() first)",
                shard_version.version));
        }
        info = it->second;
        expected_.erase(expected_.begin(), it);  // older ones will not be announced any more
    }
    return runtime_.announce_version(info, shard_version);
}

void RuntimeAnnouncer::retire(JobId /*job*/, Version version, uint32_t shard) {
    runtime_.retire_version(version, shard);
}

}  // namespace tandem::runtime
