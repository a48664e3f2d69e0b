#pragma once

// Log-sum-exp merge of partial attention results. A partial is the normalised attention of the
// same queries against a subset of the keys: o [tq, hq, d] fp32 and lse [hq, tq] fp32 (natural
// log). Merging partials over disjoint key sets gives the attention over their union. The merge is
// associative and commutative up to rounding; a partial with lse = -inf (no key) is the identity
// and never produces NaN, whatever its o holds.

#include <cstdint>
#include <span>

#include "common/status.h"

namespace tandem::kernels {

struct AttentionPartial {
    const float* o = nullptr;    // [tq, hq, d]
    const float* lse = nullptr;  // [hq, tq]
};

// acc := acc (+) part, in place. o_acc/lse_acc and o/lse have the shapes above.
void merge_attention_into(int64_t tq, int hq, int d, float* o_acc, float* lse_acc, const float* o,
                          const float* lse);

// out := parts[0] (+) ... (+) parts[n-1], computed in one pass (max-shifted weights), so the
// result does not depend on how the parts would have been paired. `out` may not alias a part.
Status merge_attention(std::span<const AttentionPartial> parts, int64_t tq, int hq, int d,
                       float* o_out, float* lse_out);

}  // namespace tandem::kernels
