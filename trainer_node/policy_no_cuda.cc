// make_cuda_policy in a build without CUDA (gpu::resolve_device never picks cuda there).
#include "trainer_node/policy.h"

namespace tandem::trainer {

Result<std::unique_ptr<Policy>> make_cuda_policy(const model::ModelWeights&,
                                                 const model::TrainerOptions&) {
    return unavailable(
        "the trainer on cuda: this build has no CUDA (TANDEM_CUDA=OFF or nvcc not found at build "
        "time)");
}

}  // namespace tandem::trainer
