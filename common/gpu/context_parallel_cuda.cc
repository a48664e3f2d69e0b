#include "common/gpu/context_parallel_cuda.h"

#include <algorithm>

#include "common/model/decoder_layer.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ring_ops.h"

namespace tandem::gpu {

namespace {

namespace ops = kernels::cuda;
using ops::Bf16;
using ops::DeviceBuffer;

// One rank's layer ops; owned by the rank's thread. Scratch comes from the allocator per call
// (cached blocks; reuse is ordered by the one stream, as in DeviceModel).
class CudaRankOps final : public ContextParallelRankOps {
public:
    CudaRankOps(DeviceModel& model, ops::DeviceAllocator& alloc, ops::Gemm& gemm,
                const ops::Stream& stream)
        : c_(model.config()),
          model_(model),
          alloc_(alloc),
          gemm_(gemm),
          s_(stream),
          ring_(ops::make_cuda_ring_ops(stream, alloc, kernels::DType::kBF16)) {}

    Status init() {
        const model::RopeTable<float> rope = model::make_rope_table<float>(c_);
        const size_t table = static_cast<size_t>(c_.max_seq_len) * (c_.head_dim() / 2);
        TANDEM_ASSIGN_OR_RETURN(cos_, alloc_.allocate(table * 4, "context parallel: RoPE cos"));
        TANDEM_ASSIGN_OR_RETURN(sin_, alloc_.allocate(table * 4, "context parallel: RoPE sin"));
        TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s_, cos_.as(), rope.cos(0), table * 4));
        return ops::copy_to_device(s_, sin_.as(), rope.sin(0), table * 4);
    }

    kernels::RingDeviceOps& ring() override { return *ring_; }

    Status embed(std::span<const int32_t> tokens, float* x) override {
        const int64_t n = static_cast<int64_t>(tokens.size());
        if (n == 0) return Status();
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer t, upload(tokens, "context parallel: tokens"));
        return ops::embedding_forward(s_, n, c_.hidden_size, c_.vocab_size, t.as<const int32_t>(),
                                      weights().embed, x);
    }

    Status qkv(int layer, std::span<const int32_t> pos, const float* x, void* q, void* k,
               void* v) override {
        const int64_t n = static_cast<int64_t>(pos.size()), h = c_.hidden_size;
        if (n == 0) return Status();
        const auto w = weights();
        const auto& L = w.layers[static_cast<size_t>(layer)];
        const float eps = static_cast<float>(c_.rms_norm_eps);
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer p, upload(pos, "context parallel: positions"));
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer a,
                                alloc_.allocate(n * h * sizeof(Bf16), "context parallel: normed"));
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer proj, alloc_.allocate(n * c_.q_dim() * sizeof(float),
                                                                   "context parallel: projection"));
        TANDEM_RETURN_IF_ERROR(
            ops::rmsnorm_forward(s_, n, h, x, L.input_norm, eps, a.as<Bf16>(), nullptr));
        const float* cos_table = cos_.as<const float>();
        const float* sin_table = sin_.as<const float>();
        const int32_t* at = p.as<const int32_t>();
        float* scratch = proj.as<float>();
        TANDEM_RETURN_IF_ERROR(project_heads(s_, gemm_, c_, n, a.as<Bf16>(),
                                             {L.wq, L.bq, L.q_norm, c_.num_heads}, cos_table,
                                             sin_table, at, scratch, static_cast<Bf16*>(q)));
        TANDEM_RETURN_IF_ERROR(project_heads(s_, gemm_, c_, n, a.as<Bf16>(),
                                             {L.wk, L.bk, L.k_norm, c_.num_kv_heads}, cos_table,
                                             sin_table, at, scratch, static_cast<Bf16*>(k)));
        return project_heads(s_, gemm_, c_, n, a.as<Bf16>(), {L.wv, L.bv, nullptr, c_.num_kv_heads},
                             nullptr, nullptr, nullptr, scratch, static_cast<Bf16*>(v));
    }

    Status finish_layer(int layer, int64_t n, const float* o, float* x) override {
        if (n == 0) return Status();
        const int64_t h = c_.hidden_size, qd = c_.q_dim(), inter = c_.intermediate_size;
        const auto w = weights();
        const auto& L = w.layers[static_cast<size_t>(layer)];
        const float eps = static_cast<float>(c_.rms_norm_eps);
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer a, alloc_.allocate(n * std::max(h, qd) * sizeof(Bf16),
                                                                "context parallel: o / normed"));
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer g,
                                alloc_.allocate(n * inter * 4, "context parallel: gate"));
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer u,
                                alloc_.allocate(n * inter * 4, "context parallel: up"));
        TANDEM_ASSIGN_OR_RETURN(
            DeviceBuffer sw, alloc_.allocate(n * inter * sizeof(Bf16), "context parallel: swiglu"));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s_, n * qd, o, a.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s_, n, qd, h, a.as<Bf16>(), L.wo, x, true));
        if (L.bo) TANDEM_RETURN_IF_ERROR(ops::bias_add(s_, n, h, L.bo, x));
        TANDEM_RETURN_IF_ERROR(
            ops::rmsnorm_forward(s_, n, h, x, L.post_norm, eps, a.as<Bf16>(), nullptr));
        TANDEM_RETURN_IF_ERROR(
            gemm_.linear(s_, n, h, inter, a.as<Bf16>(), L.wg, g.as<float>(), false));
        TANDEM_RETURN_IF_ERROR(
            gemm_.linear(s_, n, h, inter, a.as<Bf16>(), L.wu, u.as<float>(), false));
        if (L.bg) TANDEM_RETURN_IF_ERROR(ops::bias_add(s_, n, inter, L.bg, g.as<float>()));
        if (L.bu) TANDEM_RETURN_IF_ERROR(ops::bias_add(s_, n, inter, L.bu, u.as<float>()));
        TANDEM_RETURN_IF_ERROR(
            ops::swiglu_forward(s_, n * inter, g.as<float>(), u.as<float>(), sw.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s_, n, inter, h, sw.as<Bf16>(), L.wd, x, true));
        if (L.bd) TANDEM_RETURN_IF_ERROR(ops::bias_add(s_, n, h, L.bd, x));
        return Status();
    }

    Status logits(int64_t n, const float* x, float* host_logits) override {
        const int64_t h = c_.hidden_size, V = c_.vocab_size;
        const auto w = weights();
        TANDEM_ASSIGN_OR_RETURN(
            DeviceBuffer f, alloc_.allocate(n * h * sizeof(Bf16), "context parallel: final norm"));
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer lg,
                                alloc_.allocate(n * V * sizeof(float), "context parallel: logits"));
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_forward(
            s_, n, h, x, w.final_norm, static_cast<float>(c_.rms_norm_eps), f.as<Bf16>(), nullptr));
        TANDEM_RETURN_IF_ERROR(
            gemm_.linear(s_, n, h, V, f.as<Bf16>(), w.lm_head, lg.as<float>(), false));
        TANDEM_RETURN_IF_ERROR(
            ops::copy_to_host(s_, host_logits, lg.as(), static_cast<size_t>(n * V) * 4));
        // Pageable destination: the copy completes on the host only with the stream.
        return s_.synchronize("context parallel logits");
    }

private:
    model::ParamPtrs<const Bf16> weights() const {
        return model::ParamPtrs<const Bf16>(model_.index(), model_.weights_bf16());
    }
    Result<DeviceBuffer> upload(std::span<const int32_t> host, const char* what) {
        const size_t bytes = host.size() * sizeof(int32_t);
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer b, alloc_.allocate(bytes, what));
        TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s_, b.as(), host.data(), bytes));
        return b;
    }

    model::ModelConfig c_;
    DeviceModel& model_;
    ops::DeviceAllocator& alloc_;
    ops::Gemm& gemm_;
    const ops::Stream& s_;
    std::unique_ptr<kernels::RingDeviceOps> ring_;
    DeviceBuffer cos_, sin_;
};

}  // namespace

Result<std::unique_ptr<ContextParallelRankOps>> make_cuda_context_parallel_ops(
    DeviceModel& model, ops::DeviceAllocator& alloc, ops::Gemm& gemm, const ops::Stream& stream) {
    auto o = std::make_unique<CudaRankOps>(model, alloc, gemm, stream);
    TANDEM_RETURN_IF_ERROR(o->init());
    return std::unique_ptr<ContextParallelRankOps>(std::move(o));
}

}  // namespace tandem::gpu
