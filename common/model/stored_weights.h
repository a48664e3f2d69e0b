#pragma once

// Parameters kept in the dtype a checkpoint stores them in (BF16 or F16: half the bytes of F32)
// for inference. The buffer has the element offsets of the fp32 layout (params.h), so one
// ParamIndex addresses both; the inference engine widens one layer at a time (and the embedding
// rows it looks up, and the LM head in row chunks) to fp32 and computes in fp32, so logits equal
// those of the same values widened at load. Training keeps fp32 master weights (ModelWeights).

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "common/model/config.h"
#include "common/model/model_weights.h"
#include "common/model/params.h"
#include "common/status.h"
#include "common/weights/dtype.h"
#include "common/weights/layout.h"

namespace tandem::model {

// Widens n BF16 or F16 values (raw bits) to fp32; any other dtype is a programming error.
void widen_to_f32(weights::DType dtype, const uint16_t* src, int64_t n, float* dst);
// The nearest BF16 / F16 (round to nearest even) of an fp32 value.
uint16_t f32_to_bf16(float x);
uint16_t f32_to_f16(float x);

// A read-only view of a parameter buffer in F32, BF16 or F16. Cheap to copy; does not own.
struct WeightView {
    weights::DType dtype = weights::DType::kF32;
    const void* data = nullptr;

    WeightView() = default;
    WeightView(const float* f32) : data(f32) {}  // NOLINT: implicit, so fp32 callers are unchanged
    WeightView(weights::DType d, const void* p) : dtype(d), data(p) {}

    bool is_f32() const { return dtype == weights::DType::kF32; }
    const float* f32() const { return is_f32() ? static_cast<const float*>(data) : nullptr; }
    // Elements [offset, offset + count) as fp32: a pointer into the buffer when it is F32, else
    // widened into `scratch` (resized as needed).
    const float* widen(uint64_t offset, int64_t count, std::vector<float>& scratch) const;
};

// [begin, end) element ranges of each decoder layer's tensors in the flat layout (they are
// contiguous), so a layer can be widened in one piece.
std::vector<std::pair<uint64_t, uint64_t>> layer_ranges(const ModelConfig& config,
                                                        const weights::Layout& layout);

// The typed pointers of one layer when the layer's tensors begin at element `begin` and that
// element is at `base` (the layer widened on its own, or the whole buffer with begin 0).
ParamPtrs<const float>::Layer layer_pointers(const ParamIndex::Layer& layer, const float* base,
                                             uint64_t begin);

// Owns a parameter buffer in F32, BF16 or F16 with the fp32 layout's element offsets. Movable;
// not thread-safe.
class StoredWeights {
public:
    StoredWeights() = default;
    // The values of `w` rounded to `dtype` (F32 copies).
    static Result<StoredWeights> narrow(const ModelWeights& w, weights::DType dtype);
    // An empty (zero) buffer in `dtype` for `config`.
    static Result<StoredWeights> zeros(const ModelConfig& config, weights::DType dtype);

    const ModelConfig& config() const { return config_; }
    const weights::Layout& layout() const { return layout_; }  // the fp32 parameter layout
    weights::DType dtype() const { return dtype_; }
    WeightView view() const;
    // Bytes of the parameter buffer held in memory.
    uint64_t resident_bytes() const;
    // Fills the named tensor from `src` stored as `dtype`: raw copy when it is this buffer's
    // dtype, else converted (F32 <- any; BF16/F16 <- F32 rounds). Shapes must match.
    Status set_tensor(const std::string& name, const std::vector<int64_t>& shape,
                      weights::DType dtype, std::span<const std::byte> src);
    // Every parameter widened to fp32 (a trainer's master weights).
    Result<ModelWeights> widened() const;

private:
    ModelConfig config_;
    weights::Layout layout_;
    weights::DType dtype_ = weights::DType::kF32;
    std::vector<float> f32_;
    std::vector<uint16_t> half_;
};

}  // namespace tandem::model
