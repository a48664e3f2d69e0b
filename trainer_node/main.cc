// tandem-trainer-node: the node agent for trainer actors.
#include "common/agent/node_main.h"
#include "common/runtime/actor_main.h"
#include "trainer_node/grpo_trainer_actor.h"

int main(int argc, char** argv) {
    return tandem::agent::node_main(
        tandem::ActorRole::kTrainer, argc, argv, [](const tandem::agent::ActorContext& ctx) {
            return tandem::runtime::actor_main(ctx, &tandem::trainer::run_grpo_trainer);
        });
}
