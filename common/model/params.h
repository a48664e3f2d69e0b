#pragma once

// Where each parameter lives in the model's flat buffer. The buffer is a weight-plane Layout of
// fp32 tensors with Hugging Face Llama names, in this order:
//   model.embed_tokens.weight                          [vocab, hidden]
//   per layer i: model.layers.{i}.input_layernorm.weight          [hidden]
//                model.layers.{i}.self_attn.{q,k,v,o}_proj.weight  [q_dim|kv_dim|kv_dim|hidden,
//                                                                   hidden|hidden|hidden|q_dim]
//                model.layers.{i}.post_attention_layernorm.weight [hidden]
//                model.layers.{i}.mlp.{gate,up}_proj.weight        [intermediate, hidden]
//                model.layers.{i}.mlp.down_proj.weight             [hidden, intermediate]
//   optional per layer (config flags): self_attn.{q,k,v}_proj.bias (qkv_bias),
//   self_attn.o_proj.bias
//                (o_bias), mlp.{gate,up,down}_proj.bias (mlp_bias),
//                self_attn.{q,k}_norm.weight [head_dim] (qk_norm)
//   model.norm.weight                                  [hidden]
//   lm_head.weight                                     [vocab, hidden]  (absent when tied)
// Linear weights are [out, in] (y = x W^T), as in PyTorch. Offsets are 256-byte aligned, so the
// same element offsets also index a double buffer of layout.total_bytes() / 4 elements (used by
// the double-precision reference path).

#include <cstdint>
#include <vector>

#include "common/model/config.h"
#include "common/status.h"
#include "common/weights/layout.h"

namespace tandem::model {

Result<weights::Layout> make_param_layout(const ModelConfig& config);

// Element offsets of every tensor (fp32 elements from the start of the flat buffer).
// Immutable; safe to share.
struct ParamIndex {
    static constexpr uint64_t kAbsent = ~uint64_t{0};  // an optional tensor the config lacks
    struct Layer {
        uint64_t input_norm, wq, wk, wv, wo, post_norm, wg, wu, wd;
        uint64_t bq = kAbsent, bk = kAbsent, bv = kAbsent, bo = kAbsent, bg = kAbsent, bu = kAbsent,
                 bd = kAbsent, q_norm = kAbsent, k_norm = kAbsent;
    };
    uint64_t embed = 0;
    std::vector<Layer> layers;
    uint64_t final_norm = 0;
    uint64_t lm_head = 0;                                 // == embed when tied
    uint64_t elements = 0;                                // layout.total_bytes() / 4
    std::vector<std::pair<uint64_t, uint64_t>> matrices;  // [begin, end) of 2-D weights (decay)

    static Result<ParamIndex> create(const ModelConfig& config, const weights::Layout& layout);
};

// Typed pointers into one flat buffer (T = const float, float, const double or double). Optional
// tensors the config lacks are null.
template <typename T>
struct ParamPtrs {
    struct Layer {
        T *input_norm, *wq, *wk, *wv, *wo, *post_norm, *wg, *wu, *wd;
        T *bq, *bk, *bv, *bo, *bg, *bu, *bd, *q_norm, *k_norm;
    };
    T* embed;
    std::vector<Layer> layers;
    T* final_norm;
    T* lm_head;

    ParamPtrs(const ParamIndex& index, T* base) {
        embed = base + index.embed;
        layers.reserve(index.layers.size());
        auto opt = [base](uint64_t off) -> T* {
            return off == ParamIndex::kAbsent ? nullptr : base + off;
        };
        for (const auto& l : index.layers) {
            layers.push_back({base + l.input_norm, base + l.wq, base + l.wk, base + l.wv,
                              base + l.wo, base + l.post_norm, base + l.wg, base + l.wu,
                              base + l.wd, opt(l.bq), opt(l.bk), opt(l.bv), opt(l.bo), opt(l.bg),
                              opt(l.bu), opt(l.bd), opt(l.q_norm), opt(l.k_norm)});
        }
        final_norm = base + index.final_norm;
        lm_head = base + index.lm_head;
    }
};

}  // namespace tandem::model
