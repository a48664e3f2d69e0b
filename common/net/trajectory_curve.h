#pragma once

// CURVE on the trajectory plane (docs/security.md). The coordinator derives each job's keys from
// its own secret key and sends each actor its part inside start_actor's placement, under
// "trajectory_curve" (the control plane is CURVE-encrypted whenever this is used; the agent writes
// it into the actor's context file, mode 0600):
//
//   trainer:  {"secret_key": S, "peers": {"<rollout public key>": "job-000001/rollout-0", ...}}
//   rollout:  {"secret_key": S, "server_key": "<the trainer's public key>"}
//
// No "trajectory_curve" in the placement: the cluster runs without CURVE and the sockets stay
// plain.

#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/net/curve.h"
#include "common/status.h"

namespace tandem::net {

inline constexpr const char* kTrajectoryZapDomain = "tandem-trajectories";

// The "trajectory_curve" object for `actor` ("job-000001/rollout-0"); `placement` lists the job's
// actors under "actors" (the trainer's peers are its rollouts there). Null for actors that push
// or pull no trajectories.
Result<nlohmann::json> trajectory_curve_for(const std::string& root_secret_z85,
                                            const std::string& actor,
                                            const nlohmann::json& placement);

// Trainer side, before `pull` binds: with "trajectory_curve" in `placement`, makes `pull` a CURVE
// server that accepts only the listed rollout keys and returns the ZAP handler that checks them
// (it counts refused handshakes); nullptr when the placement has none.
Result<std::unique_ptr<ZapHandler>> secure_trajectory_server(zmq::context_t& zmq,
                                                             zmq::socket_t& pull,
                                                             const nlohmann::json& placement);
// Rollout side, before `push` connects: the rollout's key and the trainer's public key.
Status secure_trajectory_client(zmq::socket_t& push, const nlohmann::json& placement);

}  // namespace tandem::net
