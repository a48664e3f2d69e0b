// tandem-trainer-node: the node agent for trainer actors.
#include "common/agent/node_main.h"

int main(int argc, char** argv) {
    return tandem::agent::node_main(tandem::ActorRole::kTrainer, argc, argv, /*grpo=*/nullptr);
}
