#pragma once

// Whole-sequence convenience over an in-process ring: shards full inputs by the layout, runs
// ring attention with one thread per rank (or every rank stepped on the calling thread) and
// gathers the full outputs. Used by the tandem-attn tool and by tests.

#include "kernels/ring/ring_attention.h"

namespace tandem::kernels {

enum class RingDrive { kThreads, kStepped };

// q [T, hq, d], k and v [T, hkv, d] -> o [T, hq, d], lse [hq, T] (T = config.seq_len).
Status ring_forward_in_process(const RingAttentionConfig& config, int ranks, RingDrive drive,
                               const float* q, const float* k, const float* v, float* o,
                               float* lse);

}  // namespace tandem::kernels
