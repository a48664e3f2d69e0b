#include "rollout_node/completion_sampler.h"

#include <fmt/format.h>

#include "common/gpu/kv_pages.h"
#include "rollout_node/context_parallel_plan.h"

namespace tandem::rollout {

namespace {

class CpuSampler final : public CompletionSampler {
public:
    explicit CpuSampler(model::GroupGenerator gen) : gen_(std::move(gen)) {}
    const char* device() const override { return "cpu"; }
    Result<std::vector<model::Completion>> generate(const float* params, int64_t version,
                                                    std::span<const std::vector<int32_t>> prompts,
                                                    int group_size,
                                                    const model::SamplingOptions& options,
                                                    model::GenerateStats* stats) override {
        // The system-prompt KV cache (rollout.kv_cache.prefix_*) is kept per weight version.
        gen_.set_weights_version(version);
        return gen_.generate(params, prompts, group_size, options, stats);
    }

private:
    model::GroupGenerator gen_;
};

}  // namespace

std::unique_ptr<CompletionSampler> make_cpu_sampler(model::GroupGenerator gen) {
    return std::make_unique<CpuSampler>(std::move(gen));
}

std::string cuda_generation_unsupported(const config::JobSpec& job) {
    // Quantized pages: bf16, int8 and int4 per token, with compression (common/gpu/kv_pages.h);
    // not on context-parallel device ranks, whose shards are bf16 rows.
    const config::KvCacheSpec& kv = job.rollout.kv_cache;
    if (job.rollout.context_parallel > 1 && kv.dtype != config::KvCacheDType::kF32) {
        return fmt::format(
            "rollout.kv_cache.dtype {} with rollout.context_parallel > 1 (the device ranks' "
            "shards are bf16)",
            config::enum_name(kv.dtype));
    }
    return gpu::device_kv_unsupported(kv);
}

Result<gpu::DeviceChoice> rollout_device(const config::JobSpec& job, const gpu::DeviceFacts& facts,
                                         std::string_view job_name) {
    TANDEM_ASSIGN_OR_RETURN(
        gpu::DeviceChoice choice,
        gpu::resolve_device(job.rollout.device, facts, job_name, "rollout.device"));
    if (!choice.cuda()) return choice;
    const std::string missing = cuda_generation_unsupported(job);
    if (missing.empty()) {
        // rollout.context_parallel > 1: one GPU of the actor's per rank (context_parallel_plan.h).
        const std::string short_of = context_parallel_gpu_shortfall(job, facts);
        if (short_of.empty()) {
            if (job.rollout.context_parallel > 1) {
                choice.reason += fmt::format("; context parallel over {} of its GPUs ({})",
                                             job.rollout.context_parallel, facts.assigned);
            }
            return choice;
        }
        if (job.rollout.device == config::ComputeDevice::kCuda) {
            return invalid_argument(
                fmt::format("job {}: rollout.device is cuda but {}", job_name, short_of));
        }
        return gpu::DeviceChoice{config::ComputeDevice::kCpu,
                                 fmt::format("cpu (auto: a GPU is there, but {})", short_of)};
    }
    if (job.rollout.device == config::ComputeDevice::kCuda) {
        return invalid_argument(fmt::format(
            "job {}: rollout.device is cuda but generation on the device does not support {}; "
            "set rollout.device: cpu or drop the setting",
            job_name, missing));
    }
    return gpu::DeviceChoice{config::ComputeDevice::kCpu,
                             fmt::format("cpu (auto: a GPU is there, but device generation does "
                                         "not support {})",
                                         missing)};
}

}  // namespace tandem::rollout
