// rollout.device: cuda: completions from gpu::DeviceGenerator, with weights versions converted
// from device memory (rollout_node/device_weights.h).
#include <fmt/format.h>

#include <string>

#include "common/gpu/device_generate.h"
#include "rollout_node/completion_sampler.h"
#include "rollout_node/device_weights.h"

namespace tandem::rollout {

namespace {

class CudaSampler final : public CompletionSampler, public DeviceWeightSink {
public:
    explicit CudaSampler(std::unique_ptr<gpu::DeviceGenerator> gen) : gen_(std::move(gen)) {}
    const char* device() const override { return "cuda"; }
    DeviceWeightSink* device_weights() override { return this; }

    // The version arrives in device memory (DeviceRolloutWeights: a CUDA IPC slot or the fetch
    // buffer) and is converted to bf16 on the generator's stream; no host copy.
    Status load_device(Version version, std::span<const DevicePiece> pieces) override {
        loaded_ = -1;
        std::vector<gpu::DeviceF32Piece> f32;
        for (const DevicePiece& p : pieces) {
            f32.push_back({static_cast<const float*>(p.data), static_cast<int64_t>(p.offset / 4),
                           static_cast<int64_t>(p.bytes / 4)});
        }
        TANDEM_RETURN_IF_ERROR(gen_->load_device(f32));
        loaded_ = static_cast<int64_t>(version);
        return Status();
    }

    Result<std::vector<model::Completion>> generate(const float*, int64_t version,
                                                    std::span<const std::vector<int32_t>> prompts,
                                                    int group_size,
                                                    const model::SamplingOptions& options,
                                                    model::GenerateStats* stats) override {
        if (version != loaded_) {
            return internal_error(fmt::format(
                "the rollout on cuda: asked to generate with weights version {}, the device "
                "holds {}",
                version, loaded_ < 0 ? std::string("none") : std::to_string(loaded_)));
        }
        // The system-prompt cache (rollout.kv_cache.prefix_tokens) is kept per weights version.
        gen_->set_weights_version(version);
        gpu::DeviceGenerateStats ds;
        TANDEM_ASSIGN_OR_RETURN(auto out, gen_->generate(prompts, group_size, options, &ds));
        if (stats) {
            const model::ModelConfig& c = gen_->config();
            *stats = model::GenerateStats{};
            stats->prompt_tokens = ds.prompt_tokens;
            stats->generated_tokens = ds.generated_tokens;
            stats->decode_steps = ds.decode_steps;
            stats->peak_blocks = ds.peak_blocks;
            // Keys and values of every layer in the format blocks are written in (bf16 rows or
            // quantized pages): bytes per position of a full block; the device memory the peak's
            // blocks took (a second pool's pages included); blocks sealed or compressed so far.
            const double per_token = static_cast<double>(ds.kv.block_bytes) / ds.kv.block_tokens;
            stats->kv_bytes_per_token = per_token;
            stats->kv_peak_bytes = ds.peak_blocks * gen_->block_bytes();
            stats->kv_compression = per_token / (int64_t{2} * c.num_layers * c.kv_dim() * 4);
            stats->kv_compressed = ds.kv.compressions;
            stats->kv_waves = ds.waves;
            stats->kv_admission_waits = ds.admission_waits;
            stats->kv_prefix_hits = ds.prefix_hits;
            stats->kv_prefix_bytes = ds.prefix_bytes;
            stats->kv_evictions = ds.evictions;
        }
        return out;
    }

private:
    std::unique_ptr<gpu::DeviceGenerator> gen_;
    int64_t loaded_ = -1;
};

}  // namespace

Result<std::unique_ptr<CompletionSampler>> make_cuda_sampler(const model::ModelConfig& config,
                                                             const model::GeneratorOptions& options,
                                                             const config::JobSpec& job) {
    gpu::DeviceGenerateOptions o;
    o.eos_token = options.eos_token;
    o.stop_tokens = options.stop_tokens;
    o.job = job.name;
    o.prefix_tokens = job.rollout.kv_cache.prefix_tokens;
    o.kv_budget_bytes = job.rollout.kv_cache.budget_bytes;
    o.kv_cache = model::KvCacheOptions::from_spec(job.rollout.kv_cache, o.block_tokens);
    TANDEM_ASSIGN_OR_RETURN(auto gen, gpu::DeviceGenerator::create(config, o));
    return std::unique_ptr<CompletionSampler>(std::make_unique<CudaSampler>(std::move(gen)));
}

}  // namespace tandem::rollout
