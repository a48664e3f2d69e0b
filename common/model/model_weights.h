#pragma once

// The model's parameters as one flat fp32 buffer in the weight-plane layout of params.h, and
// their Hugging Face form on disk: `config.json` + `model.safetensors`.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/model/config.h"
#include "common/model/params.h"
#include "common/model/vocab.h"
#include "common/status.h"
#include "common/weights/layout.h"

namespace tandem::model {

// Owns the buffer (layout().total_bytes() bytes; padding between tensors is zero). Copyable;
// not thread-safe.
class ModelWeights {
public:
    // Empty (no config, no buffer); use zeros() or random().
    ModelWeights() = default;
    // All zeros.
    static Result<ModelWeights> zeros(const ModelConfig& config);
    // Hugging Face Llama initialisation: N(0, std^2) for embeddings and linear weights, 1 for
    // norm weights.
    static Result<ModelWeights> random(const ModelConfig& config, uint64_t seed, double std = 0.02);

    const ModelConfig& config() const { return config_; }
    const weights::Layout& layout() const { return layout_; }
    const ParamIndex& index() const { return index_; }
    float* data() { return data_.data(); }
    const float* data() const { return data_.data(); }
    int64_t elements() const { return static_cast<int64_t>(data_.size()); }
    // The bytes to publish as a weight version, exactly as laid out by layout().
    std::span<const std::byte> bytes() const {
        return std::as_bytes(std::span<const float>(data_));
    }
    // Replaces the parameters by a buffer laid out by layout() (a fetched version).
    Status assign(std::span<const std::byte> bytes);
    // Fills the named tensor from `src`; shapes must match; F32, BF16 and F16 are accepted.
    Status set_tensor(const std::string& name, const std::vector<int64_t>& shape,
                      weights::DType dtype, std::span<const std::byte> src);

private:
    ModelConfig config_;
    weights::Layout layout_;
    ParamIndex index_;
    std::vector<float> data_;
};

struct Pretrained {
    ModelWeights weights;
    std::optional<Vocabulary> vocab;
};

struct SaveOptions;  // hf_model.h

// Writes <dir>/config.json and <dir>/model.safetensors (creating dir), or shards with
// model.safetensors.index.json above options.max_shard_bytes (2 GiB by default). With tied
// embeddings no lm_head.weight is written, as Hugging Face does.
Status save_pretrained(const std::string& dir, const ModelWeights& weights,
                       const Vocabulary* vocab);
Status save_pretrained(const std::string& dir, const ModelWeights& weights, const Vocabulary* vocab,
                       const SaveOptions& options);
// Reads a Hugging Face directory (hf_model.h: inspect_hf_directory then load_hf_directory).
// Tensors are matched by name; every tensor of the layout must be present (lm_head.weight may be
// missing when tied) and unknown tensors are errors.
Result<Pretrained> load_pretrained(const std::string& dir);

}  // namespace tandem::model
