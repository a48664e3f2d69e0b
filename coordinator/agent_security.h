#pragma once

// CURVE on the agent plane, coordinator side (docs/security.md).
//
// AgentIdentity: with CURVE on, every agent connection carries the node id its public key belongs
// to (the ZAP handler's "User-Id"). A register or heartbeat that claims another node id is refused
// (a node presenting another node's id with its own key); other messages are bound to the node by
// the routing id that registered. Owned by the coordinator loop; not thread-safe.
//
// TrajectoryKeyStamper: an AgentLink in front of the real one that adds each trajectory actor's
// CURVE keys to start_actor's placement (common/net/trajectory_curve.h). Owned by the coordinator
// loop; not thread-safe.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "common/config/cluster_spec.h"
#include "common/log.h"
#include "common/net/curve.h"
#include "common/status.h"
#include "coordinator/job_manager.h"

namespace tandem::coord {

inline constexpr const char* kAgentZapDomain = "tandem-agents";

// The coordinator's side of CURVE on the agent plane: its key pair (RUN_DIR/keys/coordinator.key,
// made when missing) and a ZAP handler on `zmq` that knows each node's public key
// (nodes[].public_key, else RUN_DIR/keys/<id>.pub; a node with neither is an error naming it).
// The handler is not started: watch the ROUTER, bind it, then start().
struct AgentCurve {
    net::CurveKeys keys;
    std::unique_ptr<net::ZapHandler> zap;
};
Result<AgentCurve> load_agent_curve(const config::ClusterSpec& spec, const std::string& run_dir,
                                    zmq::context_t& zmq);

class AgentIdentity {
public:
    // OK when `frames` (an envelope, routing id removed) claims no node id or `user_id`'s; else
    // permission_denied naming both (logged once per pair).
    Status check(const std::string& user_id, const std::vector<std::string>& frames);
    uint64_t refused() const { return refused_; }

private:
    Logger log_{"agents"};
    std::set<std::string> logged_;
    uint64_t refused_ = 0;
};

class TrajectoryKeyStamper final : public AgentLink {
public:
    TrajectoryKeyStamper(AgentLink& inner, std::string root_secret_z85)
        : inner_(inner), root_(std::move(root_secret_z85)) {}
    Status send(const std::string& node_id, const wire::Envelope& e) override;

private:
    AgentLink& inner_;
    const std::string root_;
};

}  // namespace tandem::coord
