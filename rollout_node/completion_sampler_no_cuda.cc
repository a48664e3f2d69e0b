// make_cuda_sampler in a build without CUDA (rollout_device never picks cuda there).
#include "rollout_node/completion_sampler.h"

namespace tandem::rollout {

Result<std::unique_ptr<CompletionSampler>> make_cuda_sampler(const model::ModelConfig&,
                                                             const model::GeneratorOptions&,
                                                             const config::JobSpec&) {
    return unavailable(
        "the rollout on cuda: this build has no CUDA (TANDEM_CUDA=OFF or nvcc not found at build "
        "time)");
}

}  // namespace tandem::rollout
