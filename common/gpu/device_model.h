#pragma once

// The decoder's forward and backward passes on one CUDA device, for the architectures common/model
// runs (Llama, Qwen2, Qwen3: q/k/v/o/MLP biases, Qwen3's q/k norm, every RoPE scaling config.h
// accepts). Weights live in device memory in bf16, at the same element offsets as the CPU engine's
// fp32 flat buffer (common/model/params.h), so the CPU buffer uploads as is. Arithmetic follows
// kernels/cuda/ops.h: bf16 GEMM inputs, fp32 accumulation, fp32 residual stream and logits.
// Results match Transformer<float> up to bf16 rounding (tests/gpu/model_cuda_test.cc states the
// tolerance). No CUDA headers needed by callers.

#include <cstdint>
#include <memory>

#include "common/model/config.h"
#include "common/model/params.h"
#include "common/model/transformer.h"
#include "common/status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runtime.h"

namespace tandem::gpu {

// Owns the device weights and RoPE tables; activations come from the allocator per call (cached
// blocks, so steady-state calls do not reach cudaMalloc). Every method enqueues on the stream it
// is given; those that return host results say that they wait for it. Not thread-safe: one per
// actor; the allocator and gemm must outlive it.
class DeviceModel {
public:
    static Result<std::unique_ptr<DeviceModel>> create(const model::ModelConfig& config,
                                                       kernels::cuda::DeviceAllocator& alloc,
                                                       kernels::cuda::Gemm& gemm,
                                                       const kernels::cuda::Stream& stream);

    const model::ModelConfig& config() const { return config_; }
    const model::ParamIndex& index() const { return index_; }

    // Uploads the CPU engine's flat fp32 parameters (index().elements values) as bf16. The host
    // buffer may be reused once this returns.
    Status load(const kernels::cuda::Stream& s, const float* params);

    // Raw logits of every position, out [num_tokens, vocab] on the host (row i predicts token
    // i + 1), as Transformer::logits. Waits for the stream.
    Status logits(const kernels::cuda::Stream& s, const model::PackedBatch& batch, float* out);

    // logp[i] / entropy[i] (entropy may be null) of the scored positions under softmax(logits /
    // temperature), 0 elsewhere, indexed like batch.tokens: as Transformer::forward. Waits for
    // the stream.
    Status logprobs(const kernels::cuda::Stream& s, const model::PackedBatch& batch,
                    double temperature, float* logp, float* entropy);

    // Training (common/gpu/device_backward.cc). train_forward is logprobs() that also keeps the
    // activations backward() needs in device memory (until the next train_forward or
    // release_activations()). Waits for the stream.
    Status train_forward(const kernels::cuda::Stream& s, const model::PackedBatch& batch,
                         double temperature, float* logp, float* entropy);
    // grads (device fp32 [index().elements], the CPU engine's offsets) += d/dparams of
    // sum_i weight[i] * logp[i] for the last train_forward, as Transformer::backward; weight is
    // on the host, indexed like batch.tokens (unscored positions are ignored). Activation
    // gradients are fp32; they enter the GEMMs rounded to bf16. Enqueues only.
    Status backward(const kernels::cuda::Stream& s, const float* weight, float* grads);
    void release_activations();
    // The bf16 compute copy of the weights (index().elements values), which an optimizer on the
    // device rewrites after each update.
    kernels::cuda::Bf16* weights_bf16() { return weights_.as<kernels::cuda::Bf16>(); }
    // Marks the weights as loaded once an optimizer has written weights_bf16() itself.
    void set_loaded() { loaded_ = true; }

    ~DeviceModel();

private:
    struct Rows;
    struct Saved;
    DeviceModel(const model::ModelConfig& c, kernels::cuda::DeviceAllocator& alloc,
                kernels::cuda::Gemm& gemm);
    // Checks the batch and uploads tokens and positions.
    Status prepare(const kernels::cuda::Stream& s, const model::PackedBatch& batch, Rows& rows);
    // The decoder layers and the final norm: rows.f [n, hidden] bf16. With `saved`, every
    // layer's activations are kept there (training).
    Status run_layers(const kernels::cuda::Stream& s, const model::PackedBatch& batch, Rows& rows,
                      Saved* saved);
    // logprobs() and train_forward(): with `keep`, the activations go to saved_.
    Status scored_forward(const kernels::cuda::Stream& s, const model::PackedBatch& batch,
                          double temperature, float* logp, float* entropy, bool keep);

    model::ModelConfig config_;
    kernels::cuda::DeviceAllocator& alloc_;
    kernels::cuda::Gemm& gemm_;
    model::ParamIndex index_;
    kernels::cuda::DeviceBuffer weights_;    // bf16 [index_.elements]
    kernels::cuda::DeviceBuffer cos_, sin_;  // fp32 [max_seq_len, head_dim / 2]
    bool loaded_ = false;
    std::unique_ptr<Saved> saved_;  // the last train_forward's activations
};

// One attention input of a layer for n rows: proj = a [n, hidden] x weight (fp32, into the scratch
// `proj`), then kernels::cuda::head_prepare into out: the bias, Qwen3's q/k norm (norm not null;
// its pre-norm rows and rstd kept in raw/rstd when those are not null) and RoPE at `pos` with the
// tables cos/sin (pos null: no rotation, as for V). Enqueues on s only.
struct HeadProjection {
    const kernels::cuda::Bf16* weight = nullptr;
    const kernels::cuda::Bf16* bias = nullptr;
    const kernels::cuda::Bf16* norm = nullptr;
    int heads = 0;
};
Status project_heads(const kernels::cuda::Stream& s, kernels::cuda::Gemm& gemm,
                     const model::ModelConfig& c, int64_t n, const kernels::cuda::Bf16* a,
                     const HeadProjection& w, const float* cos, const float* sin,
                     const int32_t* pos, float* proj, kernels::cuda::Bf16* out,
                     float* raw = nullptr, float* rstd = nullptr);

}  // namespace tandem::gpu
