// CUDA attention forward against the double reference (inputs rounded to the kernel's dtype
// first, so only the kernel's own error is measured). Skips with a reason without a device.
//
// Tolerances (|err| <= atol + rtol |ref|, inputs uniform in [-1, 1]):
//   fp32:  o 2e-5 + 2e-5     lse 2e-5 + 1e-5
//   fp16:  o 3e-3 + 3e-3     lse 2e-4 + 1e-5   (P is rounded to fp16 for the tensor-core P V)
//   bf16:  o 2e-2 + 2e-2     lse 2e-4 + 1e-5   (P is rounded to bf16)
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/device.h"
#include "kernels/half.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::attention_params;
using testkit::describe;
using testkit::make_inputs;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_double;

// Device buffer owned for the duration of a test.
class DeviceBuffer {
public:
    explicit DeviceBuffer(size_t bytes) {
        if (cudaMalloc(&ptr_, bytes > 0 ? bytes : 16) != cudaSuccess) ptr_ = nullptr;
    }
    ~DeviceBuffer() { cudaFree(ptr_); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    template <typename T = void>
    T* get() const {
        return static_cast<T*>(ptr_);
    }

private:
    void* ptr_ = nullptr;
};

class AttentionCuda : public ::testing::Test {
protected:
    void SetUp() override {
        std::string why;
        if (cuda_devices(&why).empty()) GTEST_SKIP() << why;
    }
};

struct Tol {
    double o_atol, o_rtol, lse_atol, lse_rtol;
};

Tol tolerance(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return {2e-5, 2e-5, 2e-5, 1e-5};
        case DType::kF16:
            return {3e-3, 3e-3, 2e-4, 1e-5};
        case DType::kBF16:
            return {2e-2, 2e-2, 2e-4, 1e-5};
    }
    return {};
}

struct GpuOut {
    std::vector<float> o, lse;
};

// Uploads `in` (already rounded to dtype), runs the kernel, downloads o and lse. `offset`
// elements shift every input pointer (an unaligned offset exercises the CUDA-core path).
GpuOut run_cuda(const testkit::AttentionInputs& in, DType dtype, size_t offset = 0,
                const GpuOut* accumulate_from = nullptr) {
    const AttentionParams& p = in.p;
    const size_t esize = dtype_bytes(dtype);
    auto pack = [&](const std::vector<float>& x) {
        std::vector<unsigned char> bytes((x.size() + offset) * esize, 0);
        for (size_t i = 0; i < x.size(); ++i) {
            if (dtype == DType::kF32) {
                std::memcpy(&bytes[(i + offset) * 4], &x[i], 4);
            } else {
                const uint16_t b =
                    dtype == DType::kBF16 ? float_to_bf16_bits(x[i]) : float_to_half_bits(x[i]);
                std::memcpy(&bytes[(i + offset) * 2], &b, 2);
            }
        }
        return bytes;
    };
    const auto hq = pack(in.q), hk = pack(in.k), hv = pack(in.v);
    DeviceBuffer dq(hq.size()), dk(hk.size()), dv(hv.size());
    DeviceBuffer o(in.q.size() * 4), lse(static_cast<size_t>(p.hq * p.tq) * 4);
    GpuOut out{std::vector<float>(in.q.size()),
               std::vector<float>(static_cast<size_t>(p.hq * p.tq))};
    EXPECT_EQ(cudaMemcpy(dq.get(), hq.data(), hq.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(dk.get(), hk.data(), hk.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(dv.get(), hv.data(), hv.size(), cudaMemcpyHostToDevice), cudaSuccess);
    if (accumulate_from) {
        cudaMemcpy(o.get(), accumulate_from->o.data(), out.o.size() * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(lse.get(), accumulate_from->lse.data(), out.lse.size() * 4,
                   cudaMemcpyHostToDevice);
    }
    const Status s = attention_forward_cuda(p, dtype, dq.get<unsigned char>() + offset * esize,
                                            dk.get<unsigned char>() + offset * esize,
                                            dv.get<unsigned char>() + offset * esize,
                                            o.get<float>(), lse.get<float>(), nullptr);
    EXPECT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.o.data(), o.get(), out.o.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.lse.data(), lse.get(), out.lse.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    return out;
}

// Inputs rounded to dtype, so the reference sees exactly what the kernel reads.
testkit::AttentionInputs rounded_inputs(const AttentionParams& p, DType dtype, uint64_t seed) {
    auto in = make_inputs(p, seed);
    if (dtype != DType::kF32) {
        for (auto* x : {&in.q, &in.k, &in.v}) round_to_16bit(*x, dtype == DType::kBF16);
        in.qd = to_double(in.q);
        in.kd = to_double(in.k);
        in.vd = to_double(in.v);
    }
    return in;
}

void expect_matches(const AttentionParams& p, DType dtype, uint64_t seed, size_t offset = 0) {
    SCOPED_TRACE(std::string(dtype_name(dtype)) + " offset " + std::to_string(offset) + " " +
                 describe(p));
    const auto in = rounded_inputs(p, dtype, seed);
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    const GpuOut out = run_cuda(in, dtype, offset);
    const Tol t = tolerance(dtype);
    EXPECT_TRUE(all_close(out.o, ref.o, t.o_atol, t.o_rtol, "o"));
    EXPECT_TRUE(all_close(out.lse, ref.lse, t.lse_atol, t.lse_rtol, "lse"));
}

const DType kDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};

TEST_F(AttentionCuda, MatchesReferenceForEveryDtypeAndShape) {
    uint64_t seed = test_seed();
    for (DType dtype : kDtypes) {
        // d 64 and 128 take the tensor-core kernel for 16-bit inputs; the others the CUDA-core one.
        expect_matches(attention_params(1, 1, 1, 1, 64), dtype, ++seed);
        expect_matches(attention_params(100, 130, 4, 2, 64), dtype, ++seed);
        expect_matches(attention_params(129, 257, 6, 2, 128), dtype, ++seed);
        expect_matches(attention_params(70, 90, 3, 1, 40), dtype, ++seed);
        expect_matches(attention_params(65, 80, 2, 2, 256), dtype, ++seed);
        expect_matches(attention_params(33, 200, 8, 1, 128), dtype, ++seed);
    }
}

TEST_F(AttentionCuda, CausalWithGlobalOffsetsMatchesReference) {
    uint64_t seed = test_seed() + 100;
    for (DType dtype : kDtypes) {
        expect_matches(attention_params(200, 200, 4, 2, 128, true), dtype, ++seed);
        expect_matches(attention_params(8, 300, 4, 1, 64, true, 292, 0), dtype, ++seed);
        expect_matches(attention_params(90, 77, 2, 1, 64, true, 0, 30), dtype, ++seed);
        expect_matches(attention_params(50, 60, 2, 2, 48, true, 10, 0), dtype, ++seed);
    }
}

TEST_F(AttentionCuda, UnalignedPointersFallBackToTheCudaCoreKernel) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
        expect_matches(attention_params(70, 70, 2, 1, 64, true), dtype, test_seed() + 7, 1);
    }
}

TEST_F(AttentionCuda, RowsThatSeeNoKeyGiveZeroAndMinusInfinity) {
    for (DType dtype : kDtypes) {
        const AttentionParams p = attention_params(20, 30, 2, 1, 64, true, 0, 10);
        const auto in = rounded_inputs(p, dtype, test_seed());
        const GpuOut out = run_cuda(in, dtype);
        for (int h = 0; h < p.hq; ++h) {
            for (int64_t i = 0; i < 10; ++i) {
                EXPECT_EQ(out.lse[h * p.tq + i], -std::numeric_limits<float>::infinity());
                for (int x = 0; x < p.d; ++x) EXPECT_EQ(out.o[(i * p.hq + h) * p.d + x], 0.0f);
            }
        }
    }
}

TEST_F(AttentionCuda, AccumulateMergesAKeyChunkIntoAnEarlierResult) {
    for (DType dtype : kDtypes) {
        const AttentionParams full = attention_params(64, 160, 4, 2, 64, true, 96, 0);
        const auto in = rounded_inputs(full, dtype, test_seed() + 3);
        const auto ref = reference_forward(full, in.qd, in.kd, in.vd);
        // First keys [0, 100), then [100, 160) merged in.
        auto first = in, second = in;
        first.p.tk = 100;
        first.k.resize(100 * 2 * 64);
        first.v.resize(100 * 2 * 64);
        second.p.tk = 60;
        second.p.k_pos0 = 100;
        second.p.accumulate = true;
        second.k.erase(second.k.begin(), second.k.begin() + 100 * 2 * 64);
        second.v.erase(second.v.begin(), second.v.begin() + 100 * 2 * 64);
        const GpuOut a = run_cuda(first, dtype);
        const GpuOut b = run_cuda(second, dtype, 0, &a);
        const Tol t = tolerance(dtype);
        SCOPED_TRACE(dtype_name(dtype));
        EXPECT_TRUE(all_close(b.o, ref.o, 2 * t.o_atol, 2 * t.o_rtol, "o"));
        EXPECT_TRUE(all_close(b.lse, ref.lse, 2 * t.lse_atol, 2 * t.lse_rtol, "lse"));
    }
}

TEST_F(AttentionCuda, TwoRunsAreBitwiseIdentical) {
    for (DType dtype : kDtypes) {
        const AttentionParams p = attention_params(150, 170, 4, 2, 128, true);
        const auto in = rounded_inputs(p, dtype, test_seed());
        const GpuOut a = run_cuda(in, dtype), b = run_cuda(in, dtype);
        EXPECT_EQ(0, std::memcmp(a.o.data(), b.o.data(), a.o.size() * 4)) << dtype_name(dtype);
        EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4));
    }
}

}  // namespace
}  // namespace tandem::kernels
