#pragma once

// The attention shape of the decoder's self-attention over packed sequences, shared by the CPU
// transformer (common/model/transformer.cc) and the device model (common/gpu), so both attend
// alike. Header only; pure.

#include <cstdint>

#include "common/model/config.h"
#include "kernels/attention.h"

namespace tandem::model {

// Causal attention of `len` query rows at positions [first, first + len) to the keys at
// positions [0, first + len): a whole sequence (first = 0) or a continuation behind its prefix
// (first = the prefix's length). Scale 1 / sqrt(head_dim); lse dense [num_heads, len].
inline kernels::AttentionParams self_attention(const ModelConfig& c, int64_t len,
                                               int64_t first = 0) {
    kernels::AttentionParams p;
    p.tq = len;
    p.tk = first + len;
    p.q_pos0 = first;
    p.hq = c.num_heads;
    p.hkv = c.num_kv_heads;
    p.d = c.head_dim();
    p.scale = kernels::default_softmax_scale(p.d);
    p.causal = true;
    return p;
}

}  // namespace tandem::model
