// rollout.device: cuda: completions from gpu::DeviceGenerator.
#include <fmt/format.h>

#include "common/gpu/device_generate.h"
#include "rollout_node/completion_sampler.h"

namespace tandem::rollout {

namespace {

class CudaSampler final : public CompletionSampler {
public:
    explicit CudaSampler(std::unique_ptr<gpu::DeviceGenerator> gen) : gen_(std::move(gen)) {}
    const char* device() const override { return "cuda"; }
    Result<std::vector<model::Completion>> generate(const float* params, int64_t version,
                                                    std::span<const std::vector<int32_t>> prompts,
                                                    int group_size,
                                                    const model::SamplingOptions& options,
                                                    model::GenerateStats* stats) override {
        // The fetched version goes up from the reader's buffer once; later batches reuse it.
        if (version != loaded_) {
            TANDEM_RETURN_IF_ERROR(gen_->load(params));
            loaded_ = version;
        }
        gpu::DeviceGenerateStats ds;
        TANDEM_ASSIGN_OR_RETURN(auto out, gen_->generate(prompts, group_size, options, &ds));
        if (stats) {
            const model::ModelConfig& c = gen_->config();
            *stats = model::GenerateStats{};
            stats->prompt_tokens = ds.prompt_tokens;
            stats->generated_tokens = ds.generated_tokens;
            stats->decode_steps = ds.decode_steps;
            stats->peak_blocks = ds.peak_blocks;
            // bf16 keys and values of every layer: bytes per position, and the peak they held.
            const int64_t per_token = int64_t{2} * c.num_layers * c.kv_dim() * 2;
            stats->kv_bytes_per_token = static_cast<double>(per_token);
            stats->kv_peak_bytes = ds.peak_blocks * block_tokens_ * per_token;
            stats->kv_compression = 0.5;  // bf16 against f32
        }
        return out;
    }

private:
    std::unique_ptr<gpu::DeviceGenerator> gen_;
    int64_t loaded_ = -1;
    int64_t block_tokens_ = gpu::DeviceGenerateOptions{}.block_tokens;
};

}  // namespace

Result<std::unique_ptr<CompletionSampler>> make_cuda_sampler(const model::ModelConfig& config,
                                                             const model::GeneratorOptions& options,
                                                             const config::JobSpec& job) {
    gpu::DeviceGenerateOptions o;
    o.eos_token = options.eos_token;
    o.stop_tokens = options.stop_tokens;
    o.job = job.name;
    TANDEM_ASSIGN_OR_RETURN(auto gen, gpu::DeviceGenerator::create(config, o));
    return std::unique_ptr<CompletionSampler>(std::make_unique<CudaSampler>(std::move(gen)));
}

}  // namespace tandem::rollout
