#include "common/model/model_weights.h"

#include <cstring>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/model/rng.h"
#include "common/model/stored_weights.h"
#include "common/weights/safetensors.h"

namespace tandem::model {

Result<ModelWeights> ModelWeights::zeros(const ModelConfig& config) {
    ModelWeights w;
    w.config_ = config;
    TANDEM_ASSIGN_OR_RETURN(w.layout_, make_param_layout(config));
    TANDEM_ASSIGN_OR_RETURN(w.index_, ParamIndex::create(config, w.layout_));
    w.data_.assign(static_cast<size_t>(w.index_.elements), 0.0f);
    return w;
}

Result<ModelWeights> ModelWeights::random(const ModelConfig& config, uint64_t seed, double std) {
    TANDEM_ASSIGN_OR_RETURN(ModelWeights w, zeros(config));
    Rng rng(mix_seed(seed, 0x696e6974));
    for (const auto& t : w.layout_.tensors()) {
        float* p = w.data_.data() + t.offset / 4;
        const uint64_t n = t.elements();
        if (t.name.ends_with(".bias")) {
            continue;  // zeros, as transformers initialises biases
        } else if (t.shape.size() == 1) {
            for (uint64_t i = 0; i < n; ++i) p[i] = 1.0f;
        } else {
            for (uint64_t i = 0; i < n; ++i) p[i] = static_cast<float>(std * rng.normal());
        }
    }
    return w;
}

Status ModelWeights::assign(std::span<const std::byte> bytes) {
    if (bytes.size() != data_.size() * sizeof(float)) {
        return invalid_argument(fmt::format("model weights: got {} bytes, the layout {} has {}",
                                            bytes.size(), layout_.fingerprint_text(),
                                            data_.size() * sizeof(float)));
    }
    std::memcpy(data_.data(), bytes.data(), bytes.size());
    return Status();
}

Status ModelWeights::set_tensor(const std::string& name, const std::vector<int64_t>& shape,
                                weights::DType dtype, std::span<const std::byte> src) {
    const weights::TensorInfo* t = layout_.find(name);
    if (!t) return invalid_argument(fmt::format("model weights: unknown tensor \"{}\"", name));
    if (shape != t->shape) {
        return invalid_argument(fmt::format("model weights: \"{}\" has shape [{}], expected [{}]",
                                            name, fmt::join(shape, ", "),
                                            fmt::join(t->shape, ", ")));
    }
    const uint64_t n = t->elements();
    if (src.size() != n * weights::dtype_size(dtype)) {
        return invalid_argument(fmt::format("model weights: \"{}\": {} bytes for {} elements of {}",
                                            name, src.size(), n, weights::dtype_name(dtype)));
    }
    float* dst = data_.data() + t->offset / 4;
    switch (dtype) {
        case weights::DType::kF32:
            std::memcpy(dst, src.data(), n * 4);
            return Status();
        case weights::DType::kBF16:
        case weights::DType::kF16: {
            std::vector<uint16_t> raw(n);
            std::memcpy(raw.data(), src.data(), n * 2);
            widen_to_f32(dtype, raw.data(), static_cast<int64_t>(n), dst);
            return Status();
        }
        default:
            return invalid_argument(
                fmt::format("model weights: \"{}\" has dtype {}; F32, BF16 or "
                            "F16 expected",
                            name, weights::dtype_name(dtype)));
    }
}

// save_pretrained and load_pretrained: hf_model.cc.

}  // namespace tandem::model
