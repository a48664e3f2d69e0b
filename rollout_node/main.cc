// tandem-rollout-node: the node agent for rollout actors.
#include "common/agent/node_main.h"
#include "common/runtime/actor_main.h"
#include "rollout_node/grpo_rollout_actor.h"

int main(int argc, char** argv) {
    return tandem::agent::node_main(
        tandem::ActorRole::kRollout, argc, argv, [](const tandem::agent::ActorContext& ctx) {
            return tandem::runtime::actor_main(ctx, &tandem::rollout::run_grpo_rollout);
        });
}
