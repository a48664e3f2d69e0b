#pragma once

// The main() of a node agent binary (tandem-trainer-node, tandem-rollout-node):
//
//   tandem-<role>-node --cluster FILE --node ID [--run-dir DIR] [KEY.PATH=VALUE ...]   the agent
//   tandem-<role>-node actor --context FILE                                          one actor
//
// Actor kinds other than the built-in diagnostic one are supplied by the binary.

#include <functional>

#include "common/agent/actor_context.h"
#include "common/ids.h"

namespace tandem::agent {

// Runs an actor of a `kind: grpo` job; returns the process exit code.
using GrpoActorMain = std::function<int(const ActorContext&, ActorChannel&)>;

int node_main(ActorRole role, int argc, char** argv, const GrpoActorMain& grpo);

}  // namespace tandem::agent
