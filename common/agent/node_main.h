#pragma once

// The main() of a node agent binary (tandem-trainer-node, tandem-rollout-node):
//
//   tandem-<role>-node --cluster FILE --node ID [--run-dir DIR] [KEY.PATH=VALUE ...]   the agent
//   tandem-<role>-node actor --context FILE                                          one actor
//
// The actor side is supplied by the binary (runtime::actor_main with its GRPO actor): it gets the
// context the agent wrote and returns the process exit code.

#include <functional>

#include "common/agent/actor_context.h"
#include "common/ids.h"

namespace tandem::agent {

// Runs one actor; returns the process exit code.
using ActorMain = std::function<int(const ActorContext&)>;

int node_main(ActorRole role, int argc, char** argv, const ActorMain& actor);

}  // namespace tandem::agent
