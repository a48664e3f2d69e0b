// tandem-rollout-node: the node agent for rollout actors.
#include "common/agent/node_main.h"
#include "rollout_node/grpo_rollout_actor.h"

int main(int argc, char** argv) {
    return tandem::agent::node_main(tandem::ActorRole::kRollout, argc, argv,
                                    &tandem::rollout::run_grpo_rollout);
}
