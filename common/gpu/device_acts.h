#pragma once

// Internal to common/gpu: the device copies of one batch's indices and, for training, the
// activations each layer's backward needs (DeviceModel::train_forward keeps them,
// DeviceModel::backward reads them). Not thread-safe; owned by one DeviceModel.

#include <cstdint>
#include <vector>

#include "common/gpu/device_model.h"

namespace tandem::gpu {

using kernels::cuda::DeviceBuffer;

struct DeviceModel::Rows {
    int64_t n = 0;
    std::vector<int32_t> pos;        // host copy
    DeviceBuffer tokens, positions;  // int32 [n]
    DeviceBuffer f;                  // bf16 [n, hidden]: the final norm's output
};

// One layer's saved activations, shapes as common/model/transformer.h's LayerActs: fp32 where
// the backward needs the value (norm inputs, attention output, MLP pre-activations), bf16 where
// it is a GEMM input (normed rows, q/k/v after RoPE).
struct LayerActs {
    DeviceBuffer x_in, rstd1;     // fp32 [n, hidden], [n]
    DeviceBuffer a;               // bf16 [n, hidden]: input norm output
    DeviceBuffer q, k, v;         // bf16 [n, q_dim], [n, kv_dim] x 2 (q, k rotated)
    DeviceBuffer q_raw, k_raw;    // fp32, qk_norm only: projection + bias (the norm's input)
    DeviceBuffer rstd_q, rstd_k;  // fp32 [n * heads], qk_norm only
    DeviceBuffer o, lse;          // fp32 [n, q_dim], [n * num_heads] (per sequence [heads, len])
    DeviceBuffer x_mid, rstd2;    // fp32 [n, hidden], [n]
    DeviceBuffer b;               // bf16 [n, hidden]: post-attention norm output
    DeviceBuffer g, u;            // fp32 [n, intermediate]: gate and up projections (+ biases)
};

struct DeviceModel::Saved {
    Rows rows;
    std::vector<int64_t> begin, prefix;  // the batch's sequences
    std::vector<LayerActs> layers;
    DeviceBuffer x_out, rstd_f;  // fp32 [n, hidden] (last layer's output), [n]
    // Scored rows: srow (the row predicting) then target, int32 [2 * ns] on the device; trow
    // (the predicted token's row) on the host.
    int64_t ns = 0;
    DeviceBuffer idx;
    DeviceBuffer fs;  // bf16 [ns, hidden]: final norm rows of the scored rows
    std::vector<int64_t> trow;
    float inv_temp = 1.0f;
};

}  // namespace tandem::gpu
