#include "common/rl/grpo_protocol.h"

#include <fmt/format.h>

#include "common/net/http_client.h"

namespace tandem::rl {

using Json = nlohmann::json;

std::string TrajectoryBatch::encode() const {
    Json trajs = Json::array();
    for (const auto& t : trajectories) {
        trajs.push_back({{"p", t.prompt},
                         {"c", t.completion},
                         {"lp", t.behaviour_logprobs},
                         {"r", t.reward},
                         {"g", t.group},
                         {"v", t.version}});
    }
    const Json j = {{"rollout", rollout},
                    {"batch", batch},
                    {"version", version},
                    {"rollout_s", rollout_s},
                    {"weight_sync_wait_s", weight_sync_wait_s},
                    {"trainer_wait_s", trainer_wait_s},
                    {"fetch_s", fetch_s},
                    {"generated_tokens", generated_tokens},
                    {"trajectories", trajs}};
    const std::vector<uint8_t> bytes = Json::to_msgpack(j);
    return std::string(bytes.begin(), bytes.end());
}

Result<TrajectoryBatch> TrajectoryBatch::decode(const std::string& bytes) {
    try {
        const Json j = Json::from_msgpack(bytes);
        TrajectoryBatch b;
        b.rollout = j.at("rollout").get<int64_t>();
        b.batch = j.at("batch").get<int64_t>();
        b.version = j.at("version").get<int64_t>();
        b.rollout_s = j.at("rollout_s").get<double>();
        b.weight_sync_wait_s = j.at("weight_sync_wait_s").get<double>();
        b.trainer_wait_s = j.at("trainer_wait_s").get<double>();
        b.fetch_s = j.at("fetch_s").get<double>();
        b.generated_tokens = j.at("generated_tokens").get<int64_t>();
        for (const auto& t : j.at("trajectories")) {
            model::Trajectory tr;
            tr.prompt = t.at("p").get<std::vector<int32_t>>();
            tr.completion = t.at("c").get<std::vector<int32_t>>();
            tr.behaviour_logprobs = t.at("lp").get<std::vector<float>>();
            tr.reward = t.at("r").get<double>();
            tr.group = t.at("g").get<uint64_t>();
            tr.version = t.at("v").get<int64_t>();
            if (tr.behaviour_logprobs.size() != tr.completion.size()) {
                return invalid_argument("trajectory batch: log-probs and tokens differ in length");
            }
            b.trajectories.push_back(std::move(tr));
        }
        return b;
    } catch (const Json::exception& e) {
        return invalid_argument(fmt::format("trajectory batch: {}", e.what()));
    }
}

void ChannelAnnouncer::describe(Version version, const VersionInfo& info) {
    std::lock_guard<std::mutex> lock(mu_);
    info_[version] = info;
}

Status ChannelAnnouncer::announce(const weights::VersionDescriptor& shard_version) {
    Json j = weights::to_json(shard_version);
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = info_.find(shard_version.version);
        if (it != info_.end()) {
            j["step"] = it->second.step;
            j["data_cursor"] = it->second.data_cursor;
            j["trainer_attempt"] = it->second.trainer_attempt;
            // Older versions' entries are of no further use (one trainer, one shard per version).
            info_.erase(info_.begin(), it);
        }
    }
    channel_.version(shard_version.version, j);
    return Status();
}

void ChannelAnnouncer::retire(JobId /*job: the actor's own*/, Version version, uint32_t shard) {
    channel_.retire(version, shard);
}

namespace {
Result<Json> get_json(const std::string& http, const std::string& target,
                      const std::string& token) {
    TANDEM_ASSIGN_OR_RETURN(auto reply, net::http_call(http, "GET", target, "", token));
    if (reply.status != 200) {
        return unavailable(fmt::format("GET {}: HTTP {}: {}", target, reply.status, reply.body));
    }
    Json j = Json::parse(reply.body, nullptr, false);
    if (j.is_discarded()) return internal_error(fmt::format("GET {}: not JSON", target));
    return j;
}
}  // namespace

Result<std::optional<std::string>> JobClient::endpoint(const std::string& actor,
                                                       const std::string& name) const {
    TANDEM_ASSIGN_OR_RETURN(Json j, get_json(http_, "/api/v1/jobs/" + job_.str(), token_));
    for (const auto& a : j.value("actors", Json::array())) {
        if (a.value("actor", "") != actor) continue;
        const Json eps = a.value("endpoints", Json::object());
        if (eps.contains(name) && eps[name].is_string())
            return std::optional<std::string>(eps[name].get<std::string>());
    }
    return std::optional<std::string>();
}

Result<std::optional<PublishedVersion>> JobClient::latest_version() const {
    const std::string target = "/api/v1/jobs/" + job_.str() + "/versions/latest";
    TANDEM_ASSIGN_OR_RETURN(auto reply, net::http_call(http_, "GET", target, "", token_));
    if (reply.status == 404) return std::optional<PublishedVersion>();
    if (reply.status != 200) {
        return unavailable(fmt::format("GET {}: HTTP {}: {}", target, reply.status, reply.body));
    }
    Json j = Json::parse(reply.body, nullptr, false);
    if (j.is_discarded()) return internal_error(fmt::format("GET {}: not JSON", target));
    Json d = j.value("descriptor", Json::object());
    d.erase("publisher_nodes");
    PublishedVersion out;
    TANDEM_ASSIGN_OR_RETURN(out.descriptor, weights::descriptor_from_json(d));
    if (!out.descriptor.complete()) return std::optional<PublishedVersion>();
    if (d.contains("step") && d["step"].is_number_integer()) {
        VersionInfo info;
        info.step = d["step"].get<int64_t>();
        info.data_cursor = d.value("data_cursor", uint64_t{0});
        info.trainer_attempt = d.value("trainer_attempt", int64_t{0});
        out.info = info;
    }
    return std::optional<PublishedVersion>(std::move(out));
}

Result<std::optional<int64_t>> JobClient::max_version() const {
    TANDEM_ASSIGN_OR_RETURN(Json j,
                            get_json(http_, "/api/v1/jobs/" + job_.str() + "/versions", token_));
    std::optional<int64_t> top;
    for (const auto& v : j.value("versions", Json::array())) {
        if (!v.contains("version") || !v["version"].is_number()) continue;
        const int64_t n = v["version"].get<int64_t>();
        if (!top || n > *top) top = n;
    }
    return top;
}

std::string weight_transports(const nlohmann::json& placement) {
    const nlohmann::json& actors = placement.value("actors", nlohmann::json::object());
    std::string host;
    for (const auto& [id, a] : actors.items()) {
        const std::string h = a.value("host", "");
        if (h.empty() || (!host.empty() && h != host)) return "";
        host = h;
    }
    return host.empty() ? "" : "shm,self";
}

}  // namespace tandem::rl
