#pragma once

// Attention backward on the device: the gradients of the attention forward of kernels/attention.h
// (attention_forward_cuda) from its saved o and lse, with the same shapes and conventions (q
// [tq, hq, d], k and v [tk, hkv, d], lse [hq, tq] natural log with lse_stride, causal masking by
// global positions, GQA: query head h reads key/value head h / (hq / hkv)). The CPU twin is
// common/model/layers.h's attention_backward (kernels' attention_backward_cpu in fp32, a direct
// reference in double), which tests/gpu/attention_backward_cuda_test.cc compares it with.
//
// Arithmetic: inputs q, k, v in `dtype` (kBF16, as the device model stores them, or kF32; kF16
// is refused), o, lse, dout and the gradients fp32, fp32 accumulation. Probabilities are
// recomputed from lse (no [tq, tk] matrix is stored). Deterministic: every gradient element is
// summed by one warp in a fixed order (no atomics). One warp per query row and head for dq, one
// per key row and key/value head for dk and dv, so the cost is about three times the forward's
// dot products on CUDA cores: made for correctness first. It stays as the reference and the
// fallback of the tiled kernel below.
//
// The tiled kernel (attention_backward_tiled.cu), FlashAttention-2 style: bf16 q, k, v with head
// dim 64 or 128 only. Tiles of Q, K, V and dO (rounded to bf16) in shared memory, bf16
// tensor-core MMA (mma.sync m16n8k16, fp32 accumulate), probabilities recomputed from lse,
// delta = rowsum(dO * O) in fp32 (from the bf16 dO the MMAs use). Two passes, deterministic
// (no atomics): one block per (key tile, key/value head) accumulates dK and dV in registers over
// the query heads of its group and the query tiles that see it; one block per (query tile, query
// head) accumulates dQ over the visible key tiles. P and dS are rounded to bf16 for the MMAs, so
// it is less exact than the simple kernel (tests/gpu/attention_backward_cuda_test.cc states the
// tolerances).

#include <initializer_list>
#include <string>

#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

// dq [tq, hq, d], dk and dv [tk, hkv, d] (fp32 device memory): the gradients of sum(o * dout)
// for o = attention(q, k, v). With accumulate_grads they are added to what the buffers hold
// (continuations add their prefix's key gradients), else overwritten. Rows without a visible key
// (lse = -inf) get zero gradients. p.accumulate must be false. Enqueued on `s`; shapes are
// checked at once (kernels::validate), errors name attention_backward.
Status attention_backward(const Stream& s, const AttentionParams& p, DType dtype, const void* q,
                          const void* k, const void* v, const float* o, const float* lse,
                          const float* dout, float* dq, float* dk, float* dv,
                          bool accumulate_grads);

// Which backward kernel runs: kAuto takes the tiled one where it can (see
// attention_backward_tiled_unsupported), else the simple one. The environment variable
// TANDEM_ATTENTION_BACKWARD=simple|tiled|auto (read once) overrides kAuto, e.g. to run the device
// model on the simple kernel when the tiled one is in doubt.
enum class AttentionBackwardKernel { kAuto, kSimple, kTiled };
const char* attention_backward_kernel_name(AttentionBackwardKernel kernel);

// Why the tiled kernel cannot take these inputs ("" when it can): dtype other than bf16, head dim
// other than 64 or 128, or a pointer (of q, k, v, o, dout, dq, dk, dv) not 16-byte aligned. Host
// logic only: callable without a device.
std::string attention_backward_tiled_unsupported(const AttentionParams& p, DType dtype,
                                                 std::initializer_list<const void*> pointers);

// The same with the kernel chosen by `kernel`; `used` (optional) receives the one that ran (kSimple
// or kTiled). kTiled on inputs it cannot take is an error naming the reason.
Status attention_backward(const Stream& s, const AttentionParams& p, DType dtype, const void* q,
                          const void* k, const void* v, const float* o, const float* lse,
                          const float* dout, float* dq, float* dk, float* dv, bool accumulate_grads,
                          AttentionBackwardKernel kernel, AttentionBackwardKernel* used);

}  // namespace tandem::kernels::cuda
