#include "coordinator/agent_security.h"

#include <fmt/format.h>

#include "common/net/trajectory_curve.h"
#include "common/wire/messages.h"

namespace tandem::coord {

Result<AgentCurve> load_agent_curve(const config::ClusterSpec& spec, const std::string& run_dir,
                                    zmq::context_t& zmq) {
    AgentCurve out;
    const std::string key_path = net::curve_key_path(run_dir, "coordinator");
    auto keys = net::read_curve_keys(key_path);
    if (!keys.ok() && keys.status().code() == StatusCode::kNotFound) {
        keys = net::generate_curve_keys();  // as the admin token: `tandem up` makes it otherwise
        if (keys.ok()) TANDEM_RETURN_IF_ERROR(net::write_curve_keys(run_dir, "coordinator", *keys));
    }
    if (!keys.ok()) return keys.status();
    out.keys = *keys;
    TANDEM_ASSIGN_OR_RETURN(out.zap, net::ZapHandler::create(zmq, "agents"));
    for (size_t i = 0; i < spec.nodes.size(); ++i) {
        const auto& n = spec.nodes[i];
        std::string key = n.public_key;
        if (key.empty()) {
            auto pub = net::read_curve_public(net::curve_public_path(run_dir, n.id));
            if (!pub.ok())
                return invalid_argument(
                    fmt::format("node {} has no CURVE public key: nodes[{}].public_key is empty "
                                "and {} (`tandem up` makes the node's keys there)",
                                n.id, i, pub.status().message()));
            key = *pub;
        }
        out.zap->allow(kAgentZapDomain, key, n.id);
    }
    return out;
}

Status AgentIdentity::check(const std::string& user_id, const std::vector<std::string>& frames) {
    // Header "TANDEM/<major>.<minor> <type> <seq>": only register and heartbeat name a node.
    if (frames.size() < 2) return Status();
    const std::string& header = frames[0];
    const size_t a = header.find(' ');
    const size_t b = a == std::string::npos ? a : header.find(' ', a + 1);
    if (b == std::string::npos) return Status();  // malformed: the dispatcher answers it
    const std::string type = header.substr(a + 1, b - a - 1);
    if (type != wire::Register::kType && type != wire::Heartbeat::kType) return Status();
    const auto body = nlohmann::json::parse(frames[1], nullptr, false);
    if (!body.is_object() || !body.contains("node_id") || !body["node_id"].is_string())
        return Status();
    const std::string claimed = body["node_id"].get<std::string>();
    if (claimed == user_id) return Status();
    ++refused_;
    const std::string who = user_id.empty() ? std::string("an unauthenticated peer") : user_id;
    if (logged_.size() < 1024 && logged_.insert(user_id + "\n" + claimed).second) {
        log_.warn(
            "refused {} claiming node id {} from the connection of node {}: a node may only "
            "use the id its CURVE key belongs to (logged once per pair)",
            type, claimed, who);
    }
    return permission_denied(fmt::format(
        "node id {} does not belong to this connection's CURVE key (the key of {})", claimed, who));
}

Status TrajectoryKeyStamper::send(const std::string& node_id, const wire::Envelope& e) {
    if (e.type != wire::StartActor::kType) return inner_.send(node_id, e);
    const std::string actor = e.body.value("actor", "");
    const nlohmann::json placement = e.body.value("placement", nlohmann::json::object());
    auto tc = net::trajectory_curve_for(root_, actor, placement);
    if (!tc.ok()) return tc.status().with_context(fmt::format("trajectory keys of {}", actor));
    wire::Envelope stamped = e;
    stamped.body["placement"]["trajectory_curve"] = *tc;
    return inner_.send(node_id, stamped);
}

}  // namespace tandem::coord
