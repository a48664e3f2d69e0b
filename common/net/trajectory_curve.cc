#include "common/net/trajectory_curve.h"

#include <fmt/format.h>

#include "common/ids.h"

namespace tandem::net {

namespace {

using Json = nlohmann::json;

std::string server_label(const JobId& job) {
    return fmt::format("tandem trajectories v1 trainer {}", job.str());
}
std::string rollout_label(const JobId& job, uint32_t index) {
    return fmt::format("tandem trajectories v1 rollout {} {}", job.str(), index);
}

Result<CurveKeys> keys_of(const Json& tc) {
    if (!tc.is_object() || !tc.contains("secret_key") || !tc["secret_key"].is_string())
        return invalid_argument("placement.trajectory_curve: no secret_key");
    return curve_keys_from_secret(tc["secret_key"].get<std::string>());
}

}  // namespace

Result<Json> trajectory_curve_for(const std::string& root_secret_z85, const std::string& actor,
                                  const Json& placement) {
    TANDEM_ASSIGN_OR_RETURN(ActorId id, ActorId::parse(actor));
    TANDEM_ASSIGN_OR_RETURN(CurveKeys server,
                            derive_curve_keys(root_secret_z85, server_label(id.job)));
    if (id.role == ActorRole::kRollout) {
        TANDEM_ASSIGN_OR_RETURN(
            CurveKeys mine, derive_curve_keys(root_secret_z85, rollout_label(id.job, id.index)));
        return Json{{"secret_key", mine.secret_z85}, {"server_key", server.public_z85}};
    }
    Json peers = Json::object();
    const Json actors =
        placement.is_object() ? placement.value("actors", Json::object()) : Json::object();
    for (const auto& [name, where] : actors.items()) {
        auto peer = ActorId::parse(name);
        if (!peer.ok() || peer->role != ActorRole::kRollout || peer->job != id.job) continue;
        TANDEM_ASSIGN_OR_RETURN(
            CurveKeys k, derive_curve_keys(root_secret_z85, rollout_label(id.job, peer->index)));
        peers[k.public_z85] = name;
    }
    return Json{{"secret_key", server.secret_z85}, {"peers", peers}};
}

Result<std::unique_ptr<ZapHandler>> secure_trajectory_server(zmq::context_t& zmq,
                                                             zmq::socket_t& pull,
                                                             const Json& placement) {
    if (!placement.is_object() || !placement.contains("trajectory_curve"))
        return std::unique_ptr<ZapHandler>();
    const Json& tc = placement["trajectory_curve"];
    TANDEM_ASSIGN_OR_RETURN(CurveKeys keys, keys_of(tc));
    TANDEM_ASSIGN_OR_RETURN(auto zap, ZapHandler::create(zmq, "trajectories"));
    const Json peers = tc.value("peers", Json::object());
    for (const auto& [key, name] : peers.items()) {
        if (name.is_string()) zap->allow(kTrajectoryZapDomain, key, name.get<std::string>());
    }
    set_curve_server(pull, keys, kTrajectoryZapDomain);
    TANDEM_RETURN_IF_ERROR(zap->watch(pull, "trajectory PULL"));
    zap->start();
    return zap;
}

Status secure_trajectory_client(zmq::socket_t& push, const Json& placement) {
    if (!placement.is_object() || !placement.contains("trajectory_curve")) return Status();
    const Json& tc = placement["trajectory_curve"];
    TANDEM_ASSIGN_OR_RETURN(CurveKeys keys, keys_of(tc));
    if (!tc.contains("server_key") || !tc["server_key"].is_string())
        return invalid_argument("placement.trajectory_curve: no server_key");
    set_curve_client(push, keys, tc["server_key"].get<std::string>());
    return Status();
}

}  // namespace tandem::net
