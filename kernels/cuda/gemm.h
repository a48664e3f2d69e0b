#pragma once

// Matrix products on the device: bf16 inputs, fp32 accumulation, fp32 or bf16 output, through
// cuBLASLt when the process can load it (dlopen of libcublasLt.so.13, then .12: the library is
// not linked, so binaries run where it is absent) and through a plain tiled CUDA kernel
// otherwise, or when cuBLASLt offers no algorithm for a shape.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

struct GemmShape {
    bool trans_a = false, trans_b = false;
    int64_t m = 0, n = 0, k = 0;
    int64_t lda = 0, ldb = 0, ldc = 0;
};

// One cuBLASLt handle, its workspace and a cache of chosen algorithms, bound to one stream's
// work: every call takes that stream. Not thread-safe: one per actor.
class Gemm {
public:
    enum class Backend { kCublasLt, kFallback };
    // force_fallback: never use cuBLASLt (tests compare the two).
    static Result<std::unique_ptr<Gemm>> create(DeviceAllocator& alloc,
                                                bool force_fallback = false);
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // "cuBLASLt 130001 (libcublasLt.so.13)" or "fallback kernel (<why cuBLASLt is not used>)".
    const std::string& description() const { return description_; }
    Backend backend() const { return lt_ ? Backend::kCublasLt : Backend::kFallback; }
    // Calls that took the fallback kernel although cuBLASLt was loaded (no algorithm for the
    // shape).
    int64_t fallback_calls() const { return fallback_calls_; }

    // Row-major, like common/model/layers.h's gemm: C[m, n] = alpha op(A) op(B) + beta C, with
    // op(A) [m, k] (A stored [k, m] when trans_a), op(B) [k, n] (B stored [n, k] when trans_b).
    // C is read only when beta != 0. Enqueued on `s`.
    Status matmul(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                  float beta, float* c);
    Status matmul(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                  float beta, Bf16* c);

    // y[n, out] (+)= x[n, in] W^T with W [out, in]: the model's linear layer.
    Status linear(const Stream& s, int64_t n, int64_t in, int64_t out, const Bf16* x, const Bf16* w,
                  float* y, bool accumulate);

private:
    struct Lt;
    explicit Gemm(DeviceBuffer workspace);
    Status run(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
               float beta, void* c, bool c_bf16);

    DeviceBuffer workspace_;
    std::unique_ptr<Lt> lt_;
    std::string description_;
    int64_t fallback_calls_ = 0;
};

// The fallback kernel alone (also used by Gemm): same contract as Gemm::matmul.
Status gemm_fallback(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                     float beta, void* c, bool c_bf16);

}  // namespace tandem::kernels::cuda
