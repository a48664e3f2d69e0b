// The device attention backward (kernels/cuda/attention_backward.h) against the CPU engine's
// attention gradients in double (common/model/layers.h attention_backward<double>) on fresh random
// inputs: causal whole sequences, a continuation behind its prefix (q_pos0 > 0, tk > tq), GQA and
// MQA, head dims 32 to 128 and one that is not a multiple of 32, bf16 and fp32 inputs, and the
// accumulate mode continuations use. Skips with a reason without a device.
//
// q, k and v are rounded to bf16 first (for bf16 inputs) and o, lse come from the double forward,
// so only the backward's own fp32 error is measured: |err| <= 2e-5 sqrt(tk) + 1e-3 |ref| for dq,
// dk and dv (fp32 dot products of length d and sums over up to tk keys / tq * hq / hkv queries).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/model/layers.h"
#include "kernels/cuda/attention_backward.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels::cuda {
namespace {

using testkit::all_close;
using testkit::describe;
using testkit::random_floats;
using testkit::test_seed;
using testkit::to_double;

class CudaAttentionBackward : public testing::CudaFixture {
protected:
    uint64_t seed(int salt) const { return uint64_t{test_seed()} * 1000003u + salt; }

    // Runs one case; `accumulate` starts the gradients from random values and adds.
    void check(const AttentionParams& p, DType dtype, bool accumulate, int salt) {
        SCOPED_TRACE(describe(p) + (dtype == DType::kBF16 ? " bf16" : " f32") +
                     (accumulate ? " accumulate" : ""));
        const size_t nq = static_cast<size_t>(p.tq * p.hq * p.d);
        const size_t nk = static_cast<size_t>(p.tk * p.hkv * p.d);
        std::vector<float> q = random_floats(nq, seed(salt), -2.0f, 2.0f);
        std::vector<float> k = random_floats(nk, seed(salt + 1), -2.0f, 2.0f);
        std::vector<float> v = random_floats(nk, seed(salt + 2));
        std::vector<float> dout = random_floats(nq, seed(salt + 3));
        const void *dq_in, *dk_in, *dv_in;
        if (dtype == DType::kBF16) {
            dq_in = upload_bf16(q);  // rounds q, k, v in place: the reference sees the same
            dk_in = upload_bf16(k);
            dv_in = upload_bf16(v);
        } else {
            dq_in = upload(q);
            dk_in = upload(k);
            dv_in = upload(v);
        }
        const std::vector<double> qd = to_double(q), kd = to_double(k), vd = to_double(v),
                                  dod = to_double(dout);
        std::vector<double> o(nq), lse(static_cast<size_t>(p.tq * p.hq));
        ASSERT_TRUE(model::attention_forward<double>(p, qd.data(), kd.data(), vd.data(), o.data(),
                                                     lse.data())
                        .ok());
        std::vector<double> gq(nq), gk(nk), gv(nk);
        ASSERT_TRUE(model::attention_backward<double>(p, qd.data(), kd.data(), vd.data(), o.data(),
                                                      lse.data(), dod.data(), gq.data(), gk.data(),
                                                      gv.data())
                        .ok());
        std::vector<float> of(o.begin(), o.end()), lsef(lse.begin(), lse.end());
        std::vector<float> init_q(nq, 0.0f), init_k(nk, 0.0f), init_v(nk, 0.0f);
        if (accumulate) {
            init_q = random_floats(nq, seed(salt + 4));
            init_k = random_floats(nk, seed(salt + 5));
            init_v = random_floats(nk, seed(salt + 6));
            for (size_t i = 0; i < nq; ++i) gq[i] += init_q[i];
            for (size_t i = 0; i < nk; ++i) {
                gk[i] += init_k[i];
                gv[i] += init_v[i];
            }
        } else {
            // Garbage that an overwrite must replace.
            std::fill(init_q.begin(), init_q.end(), 1e3f);
            std::fill(init_k.begin(), init_k.end(), 1e3f);
            std::fill(init_v.begin(), init_v.end(), 1e3f);
        }
        float* dq = upload(init_q);
        float* dk = upload(init_k);
        float* dv = upload(init_v);
        const Status st = attention_backward(s(), p, dtype, dq_in, dk_in, dv_in, upload(of),
                                             upload(lsef), upload(dout), dq, dk, dv, accumulate);
        ASSERT_TRUE(st.ok()) << st.to_string();
        const double atol = 2e-5 * std::sqrt(static_cast<double>(p.tk) + 1.0), rtol = 1e-3;
        EXPECT_TRUE(all_close(download(dq, nq), gq, atol, rtol, "dq"));
        EXPECT_TRUE(all_close(download(dk, nk), gk, atol, rtol, "dk"));
        EXPECT_TRUE(all_close(download(dv, nk), gv, atol, rtol, "dv"));
    }
};

AttentionParams causal(int64_t tq, int64_t first, int hq, int hkv, int d) {
    AttentionParams p;
    p.tq = tq;
    p.tk = first + tq;
    p.q_pos0 = first;
    p.hq = hq;
    p.hkv = hkv;
    p.d = d;
    p.scale = default_softmax_scale(d);
    p.causal = true;
    return p;
}

TEST_F(CudaAttentionBackward, CausalGqaMatchesCpuEngineInDouble) {
    check(causal(37, 0, 4, 2, 64), DType::kBF16, false, 10);
    check(causal(70, 0, 8, 8, 128), DType::kBF16, false, 20);
    check(causal(19, 0, 6, 1, 32), DType::kBF16, false, 30);  // MQA
    check(causal(23, 0, 2, 1, 80), DType::kBF16, false, 40);  // d not a multiple of 32
    check(causal(29, 0, 4, 2, 64), DType::kF32, false, 50);
}

TEST_F(CudaAttentionBackward, ContinuationBehindItsPrefixMatchesCpuEngine) {
    // 21 rows at positions 33.. attending to 33 prefix keys and their own: a GRPO completion.
    check(causal(21, 33, 4, 2, 64), DType::kBF16, false, 60);
    check(causal(1, 40, 4, 1, 64), DType::kBF16, false, 70);
}

TEST_F(CudaAttentionBackward, AccumulateAddsToTheGradientBuffers) {
    check(causal(17, 9, 4, 2, 64), DType::kBF16, true, 80);
}

TEST_F(CudaAttentionBackward, NonCausalAndKeylessRows) {
    AttentionParams p = causal(13, 0, 2, 2, 64);
    p.causal = false;
    p.tk = 31;
    check(p, DType::kBF16, false, 90);
    // Keys at positions 10.. and queries at 0..14: the first ten query rows see no key.
    AttentionParams late = causal(15, 0, 2, 1, 32);
    late.k_pos0 = 10;
    late.tk = 5;
    check(late, DType::kF32, false, 100);
}

TEST_F(CudaAttentionBackward, RejectsBadShapesNamingTheOp) {
    AttentionParams p = causal(4, 0, 3, 2, 64);  // hq % hkv != 0
    float* buf = device<float>(4096);
    Status st =
        attention_backward(s(), p, DType::kF32, buf, buf, buf, buf, buf, buf, buf, buf, buf, false);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("attention_backward"), std::string::npos) << st.to_string();
    p = causal(4, 0, 2, 2, 64);
    st = attention_backward(s(), p, DType::kF32, buf, nullptr, buf, buf, buf, buf, buf, buf, buf,
                            false);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("null device pointer"), std::string::npos) << st.to_string();
}

}  // namespace
}  // namespace tandem::kernels::cuda
