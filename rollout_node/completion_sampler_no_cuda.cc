// make_cuda_sampler and make_cuda_context_parallel_sampler in a build without CUDA (rollout_device
// never picks cuda there).
#include "rollout_node/completion_sampler.h"
#include "rollout_node/context_parallel_sampler.h"

namespace tandem::rollout {

Result<std::unique_ptr<CompletionSampler>> make_cuda_sampler(const model::ModelConfig&,
                                                             const model::GeneratorOptions&,
                                                             const config::JobSpec&) {
    return unavailable(
        "the rollout on cuda: this build has no CUDA (TANDEM_CUDA=OFF or nvcc not found at build "
        "time)");
}

bool context_parallel_nccl_built() { return false; }

Result<std::unique_ptr<CompletionSampler>> make_cuda_context_parallel_sampler(
    const model::ModelConfig&, const model::GeneratorOptions&, const config::JobSpec&,
    const ContextParallelPlan&) {
    return unavailable(
        "the rollout on cuda with rollout.context_parallel > 1: this build has no CUDA "
        "(TANDEM_CUDA=OFF or nvcc not found at build time)");
}

}  // namespace tandem::rollout
