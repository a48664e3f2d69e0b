#include "common/model/stored_weights.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace tandem::model {

namespace {

bool is_half(weights::DType d) { return d == weights::DType::kBF16 || d == weights::DType::kF16; }

float bf16_value(uint16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float f16_value(uint16_t v) {
    _Float16 h;
    std::memcpy(&h, &v, 2);
    return static_cast<float>(h);
}

}  // namespace

void widen_to_f32(weights::DType dtype, const uint16_t* src, int64_t n, float* dst) {
    if (dtype == weights::DType::kBF16) {
        for (int64_t i = 0; i < n; ++i) dst[i] = bf16_value(src[i]);
    } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = f16_value(src[i]);
    }
}

uint16_t f32_to_bf16(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu)) {
        return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN stays a (quiet) NaN
    }
    bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
    return static_cast<uint16_t>(bits >> 16);
}

uint16_t f32_to_f16(float x) {
    const _Float16 h = static_cast<_Float16>(x);
    uint16_t v;
    std::memcpy(&v, &h, 2);
    return v;
}

const float* WeightView::widen(uint64_t offset, int64_t count, std::vector<float>& scratch) const {
    if (is_f32()) return static_cast<const float*>(data) + offset;
    if (static_cast<int64_t>(scratch.size()) < count) scratch.resize(static_cast<size_t>(count));
    widen_to_f32(dtype, static_cast<const uint16_t*>(data) + offset, count, scratch.data());
    return scratch.data();
}

std::vector<std::pair<uint64_t, uint64_t>> layer_ranges(const ModelConfig& config,
                                                        const weights::Layout& layout) {
    std::vector<std::pair<uint64_t, uint64_t>> out(static_cast<size_t>(config.num_layers),
                                                   {~uint64_t{0}, 0});
    constexpr std::string_view kPrefix = "model.layers.";
    for (const auto& t : layout.tensors()) {
        if (!t.name.starts_with(kPrefix)) continue;
        const size_t dot = t.name.find('.', kPrefix.size());
        const int layer = std::stoi(t.name.substr(kPrefix.size(), dot - kPrefix.size()));
        if (layer < 0 || layer >= config.num_layers) continue;
        auto& [begin, end] = out[static_cast<size_t>(layer)];
        begin = std::min(begin, t.offset / 4);
        end = std::max(end, (t.offset + t.bytes) / 4);
    }
    return out;
}

ParamPtrs<const float>::Layer layer_pointers(const ParamIndex::Layer& l, const float* base,
                                             uint64_t begin) {
    auto at = [&](uint64_t off) -> const float* {
        return off == ParamIndex::kAbsent ? nullptr : base + (off - begin);
    };
    return {at(l.input_norm), at(l.wq), at(l.wk), at(l.wv), at(l.wo),     at(l.post_norm),
            at(l.wg),         at(l.wu), at(l.wd), at(l.bq), at(l.bk),     at(l.bv),
            at(l.bo),         at(l.bg), at(l.bu), at(l.bd), at(l.q_norm), at(l.k_norm)};
}

Result<StoredWeights> StoredWeights::zeros(const ModelConfig& config, weights::DType dtype) {
    if (dtype != weights::DType::kF32 && !is_half(dtype)) {
        return invalid_argument(fmt::format("stored weights: dtype {}; F32, BF16 or F16 expected",
                                            weights::dtype_name(dtype)));
    }
    StoredWeights s;
    s.config_ = config;
    s.dtype_ = dtype;
    TANDEM_ASSIGN_OR_RETURN(s.layout_, make_param_layout(config));
    const size_t elements = static_cast<size_t>(s.layout_.total_bytes() / 4);
    if (is_half(dtype)) {
        s.half_.assign(elements, 0);
    } else {
        s.f32_.assign(elements, 0.0f);
    }
    return s;
}

Result<StoredWeights> StoredWeights::narrow(const ModelWeights& w, weights::DType dtype) {
    TANDEM_ASSIGN_OR_RETURN(StoredWeights s, zeros(w.config(), dtype));
    const float* src = w.data();
    const size_t n = static_cast<size_t>(w.elements());
    if (!is_half(dtype)) {
        std::memcpy(s.f32_.data(), src, n * 4);
    } else {
        for (size_t i = 0; i < n; ++i) {
            s.half_[i] = dtype == weights::DType::kBF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
        }
    }
    return s;
}

WeightView StoredWeights::view() const {
    if (is_half(dtype_)) return WeightView(dtype_, half_.data());
    return WeightView(f32_.data());
}

uint64_t StoredWeights::resident_bytes() const {
    return f32_.size() * sizeof(float) + half_.size() * sizeof(uint16_t);
}

Status StoredWeights::set_tensor(const std::string& name, const std::vector<int64_t>& shape,
                                 weights::DType dtype, std::span<const std::byte> src) {
    const weights::TensorInfo* t = layout_.find(name);
    if (!t) return invalid_argument(fmt::format("stored weights: unknown tensor \"{}\"", name));
    if (shape != t->shape) {
        return invalid_argument(fmt::format("stored weights: \"{}\" has shape [{}], expected [{}]",
                                            name, fmt::join(shape, ", "),
                                            fmt::join(t->shape, ", ")));
    }
    if (dtype != weights::DType::kF32 && !is_half(dtype)) {
        return invalid_argument(fmt::format("stored weights: \"{}\" has dtype {}; F32, BF16 or F16",
                                            name, weights::dtype_name(dtype)));
    }
    const uint64_t n = t->elements();
    if (src.size() != n * weights::dtype_size(dtype)) {
        return invalid_argument(
            fmt::format("stored weights: \"{}\": {} bytes for {} elements of {}", name, src.size(),
                        n, weights::dtype_name(dtype)));
    }
    const uint64_t off = t->offset / 4;
    if (dtype == dtype_) {
        void* dst = is_half(dtype_) ? static_cast<void*>(half_.data() + off)
                                    : static_cast<void*>(f32_.data() + off);
        std::memcpy(dst, src.data(), src.size());
        return Status();
    }
    if (dtype_ == weights::DType::kF32) {  // a half tensor into an F32 buffer
        std::vector<uint16_t> raw(n);
        std::memcpy(raw.data(), src.data(), src.size());
        widen_to_f32(dtype, raw.data(), static_cast<int64_t>(n), f32_.data() + off);
        return Status();
    }
    // Into a half buffer from F32 or the other half type: through fp32, rounded.
    std::vector<float> wide(n);
    if (dtype == weights::DType::kF32) {
        std::memcpy(wide.data(), src.data(), src.size());
    } else {
        std::vector<uint16_t> raw(n);
        std::memcpy(raw.data(), src.data(), src.size());
        widen_to_f32(dtype, raw.data(), static_cast<int64_t>(n), wide.data());
    }
    for (uint64_t i = 0; i < n; ++i) {
        half_[off + i] =
            dtype_ == weights::DType::kBF16 ? f32_to_bf16(wide[i]) : f32_to_f16(wide[i]);
    }
    return Status();
}

Result<ModelWeights> StoredWeights::widened() const {
    TANDEM_ASSIGN_OR_RETURN(ModelWeights w, ModelWeights::zeros(config_));
    if (is_half(dtype_)) {
        widen_to_f32(dtype_, half_.data(), static_cast<int64_t>(half_.size()), w.data());
    } else {
        std::memcpy(w.data(), f32_.data(), f32_.size() * sizeof(float));
    }
    return w;
}

}  // namespace tandem::model
