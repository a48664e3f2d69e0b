#pragma once

// A host ContextParallelRankOps (common/gpu/context_parallel_device.h) for CPU tests of device
// context-parallel generation: the CPU engine's layer functions on host fp32 buffers, called as
// model::ContextParallelGenerator calls them, over a kernels::fakes::HostRingOps. Test-only code.

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/gpu/context_parallel_device.h"
#include "common/model/decoder_layer.h"
#include "common/model/layers.h"
#include "common/model/params.h"
#include "tests/fakes/host_ring_ops.h"

namespace tandem::gpu::fakes {

// One rank's fake; `params` (the CPU engine's flat fp32 buffer) must outlive it.
class HostContextParallelOps final : public ContextParallelRankOps {
public:
    HostContextParallelOps(const model::ModelConfig& config, const model::ParamIndex& index,
                           const float* params, int rank, kernels::fakes::OrderLog* log = nullptr)
        : c_(config),
          w_(index, params),
          rope_(model::make_rope_table<float>(config)),
          ring_(rank, log) {}

    kernels::RingDeviceOps& ring() override { return ring_; }
    kernels::fakes::HostRingOps& host_ring() { return ring_; }

    Status embed(std::span<const int32_t> tokens, float* x) override {
        const int64_t h = c_.hidden_size;
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::memcpy(x + static_cast<int64_t>(i) * h,
                        w_.embed + static_cast<int64_t>(tokens[i]) * h, sizeof(float) * h);
        }
        return Status();
    }
    Status qkv(int layer, std::span<const int32_t> pos, const float* x, void* q, void* k,
               void* v) override {
        const int64_t n = static_cast<int64_t>(pos.size()), h = c_.hidden_size;
        const auto& L = w_.layers[static_cast<size_t>(layer)];
        model::rmsnorm_forward<float>(n, h, x, L.input_norm, c_.rms_norm_eps, sized(a_, n * h),
                                      sized(rstd_, n));
        model::qkv_forward<float>(c_, L, rope_, n, pos.data(), a_.data(), static_cast<float*>(q),
                                  static_cast<float*>(k), static_cast<float*>(v), qk_);
        return Status();
    }
    Status finish_layer(int layer, int64_t n, const float* o, float* x) override {
        const int64_t h = c_.hidden_size, inter = c_.intermediate_size;
        const auto& L = w_.layers[static_cast<size_t>(layer)];
        model::out_proj_forward<float>(c_, L, n, o, x);
        model::rmsnorm_forward<float>(n, h, x, L.post_norm, c_.rms_norm_eps, sized(a_, n * h),
                                      sized(rstd_, n));
        float* g = sized(g_, n * inter);
        model::mlp_forward<float>(c_, L, n, a_.data(), g, sized(u_, n * inter), g, x);
        return Status();
    }
    Status logits(int64_t n, const float* x, float* host_logits) override {
        const int64_t h = c_.hidden_size;
        float* xs = sized(a_, n * h);
        model::rmsnorm_forward<float>(n, h, x, w_.final_norm, c_.rms_norm_eps, xs, sized(rstd_, n));
        model::linear_forward<float>(n, h, c_.vocab_size, xs, w_.lm_head, host_logits);
        ++logits_calls_;
        return Status();
    }
    int logits_calls() const { return logits_calls_; }

private:
    static float* sized(std::vector<float>& v, int64_t n) {
        if (static_cast<int64_t>(v.size()) < std::max<int64_t>(n, 1)) {
            v.resize(static_cast<size_t>(std::max<int64_t>(n, 1)));
        }
        return v.data();
    }

    model::ModelConfig c_;
    model::ParamPtrs<const float> w_;
    model::RopeTable<float> rope_;
    kernels::fakes::HostRingOps ring_;
    std::vector<float> a_, rstd_, g_, u_;
    model::QkNormActs<float> qk_;
    int logits_calls_ = 0;
};

}  // namespace tandem::gpu::fakes
