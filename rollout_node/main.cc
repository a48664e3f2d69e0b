// tandem-rollout-node: the node agent for rollout actors.
#include "common/agent/node_main.h"

int main(int argc, char** argv) {
    return tandem::agent::node_main(tandem::ActorRole::kRollout, argc, argv, /*grpo=*/nullptr);
}
