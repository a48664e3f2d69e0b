// The device attention backward (kernels/cuda/attention_backward.h) against the CPU engine's
// attention gradients in double (common/model/layers.h attention_backward<double>) on fresh random
// inputs: causal whole sequences, a continuation behind its prefix (q_pos0 > 0, tk > tq), GQA and
// MQA, head dims 32 to 128 and one that is not a multiple of 32, bf16 and fp32 inputs, and the
// accumulate mode continuations use. Skips with a reason without a device.
//
// q, k and v are rounded to bf16 first (for bf16 inputs) and o, lse come from the double forward,
// so only the backward's own error is measured. The simple kernel (fp32 throughout): |err| <=
// 2e-5 sqrt(tk) + 1e-3 |ref| for dq, dk and dv (fp32 dot products of length d and sums over up to
// tk keys / tq * hq / hkv queries). The tiled tensor-core kernel rounds dO, P and dS to bf16
// (relative 2^-9 each) before its MMAs: |err| <= 6e-2 rms(ref) + 2e-2 |ref| per tensor, against the
// double reference and against the simple kernel (about twice the 3.2e-2 rms(ref) its host
// emulation, attention_backward_emulated_test.cc, shows); the observed max |err| / rms(ref) is
// printed.
// The tiled cases use lengths that are not multiples of its 64-row tiles, the head shapes of
// Qwen2.5-0.5B (14 / 2 heads) and Llama-3.2-1B (32 / 8), d = 128, continuations, two position
// runs (a zigzag ring shard), keyless rows and accumulate; misaligned pointers fall back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
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
using testkit::max_abs_error;
using testkit::random_floats;
using testkit::test_seed;
using testkit::to_double;

class CudaAttentionBackward : public testing::CudaFixture {
protected:
    uint64_t seed(int salt) const { return uint64_t{test_seed()} * 1000003u + salt; }

    // Runs one case; `accumulate` starts the gradients from random values and adds. `kernel`
    // is the one asked for; with kTiled the simple kernel also runs and the two are compared.
    // `q_offset` shifts q by that many elements in its buffer (misalignment).
    void check(const AttentionParams& p, DType dtype, bool accumulate, int salt,
               AttentionBackwardKernel kernel = AttentionBackwardKernel::kSimple,
               AttentionBackwardKernel expect_used = AttentionBackwardKernel::kSimple,
               size_t q_offset = 0) {
        SCOPED_TRACE(describe(p) + (dtype == DType::kBF16 ? " bf16" : " f32") +
                     (accumulate ? " accumulate" : "") + " kernel " +
                     attention_backward_kernel_name(kernel));
        const size_t nq = static_cast<size_t>(p.tq * p.hq * p.d);
        const size_t nk = static_cast<size_t>(p.tk * p.hkv * p.d);
        std::vector<float> q = random_floats(nq, seed(salt), -2.0f, 2.0f);
        std::vector<float> k = random_floats(nk, seed(salt + 1), -2.0f, 2.0f);
        std::vector<float> v = random_floats(nk, seed(salt + 2));
        std::vector<float> dout = random_floats(nq, seed(salt + 3));
        const void *dq_in, *dk_in, *dv_in;
        if (q_offset > 0) {
            // Rounds in place for bf16, as below.
            auto up = [&](std::vector<float>& x) -> const void* {
                if (dtype == DType::kBF16) return upload_bf16(x);
                return upload(x);
            };
            std::vector<float> shifted(q_offset, 0.0f);
            shifted.insert(shifted.end(), q.begin(), q.end());
            dq_in = static_cast<const char*>(up(shifted)) + q_offset * dtype_bytes(dtype);
            std::copy(shifted.begin() + static_cast<ptrdiff_t>(q_offset), shifted.end(), q.begin());
            dk_in = up(k);
            dv_in = up(v);
        } else if (dtype == DType::kBF16) {
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
        std::vector<double> gq(nq), gk(nk), gv(nk);
        if (p.q_split != kNoSplit || p.k_split != kNoSplit) {
            // Two position runs: the kernels' test reference (the CPU engine's takes one run).
            testkit::ReferenceForward f = testkit::reference_forward(p, qd, kd, vd);
            testkit::ReferenceGrads g = testkit::reference_backward(p, qd, kd, vd, dod);
            o = std::move(f.o);
            lse = std::move(f.lse);
            gq = std::move(g.dq);
            gk = std::move(g.dk);
            gv = std::move(g.dv);
        } else {
            ASSERT_TRUE(model::attention_forward<double>(p, qd.data(), kd.data(), vd.data(),
                                                         o.data(), lse.data())
                            .ok());
            ASSERT_TRUE(model::attention_backward<double>(p, qd.data(), kd.data(), vd.data(),
                                                          o.data(), lse.data(), dod.data(),
                                                          gq.data(), gk.data(), gv.data())
                            .ok());
        }
        std::vector<float> of(o.begin(), o.end()), lsef(lse.begin(), lse.end());
        const double rms_q = rms(gq), rms_k = rms(gk), rms_v = rms(gv);
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
        const float *o_dev = upload(of), *lse_dev = upload(lsef), *dout_dev = upload(dout);
        AttentionBackwardKernel used = AttentionBackwardKernel::kAuto;
        const Status st = attention_backward(s(), p, dtype, dq_in, dk_in, dv_in, o_dev, lse_dev,
                                             dout_dev, dq, dk, dv, accumulate, kernel, &used);
        ASSERT_TRUE(st.ok()) << st.to_string();
        EXPECT_EQ(used, expect_used) << attention_backward_kernel_name(used);
        const std::vector<float> got_q = download(dq, nq), got_k = download(dk, nk),
                                 got_v = download(dv, nk);
        if (used == AttentionBackwardKernel::kSimple) {
            const double atol = 2e-5 * std::sqrt(static_cast<double>(p.tk) + 1.0), rtol = 1e-3;
            EXPECT_TRUE(all_close(got_q, gq, atol, rtol, "dq"));
            EXPECT_TRUE(all_close(got_k, gk, atol, rtol, "dk"));
            EXPECT_TRUE(all_close(got_v, gv, atol, rtol, "dv"));
            return;
        }
        const double rtol = 2e-2;
        std::printf("tiled %s: max|err|/rms(ref) dq %.3g dk %.3g dv %.3g\n", describe(p).c_str(),
                    max_abs_error(got_q, gq) / rms_q, max_abs_error(got_k, gk) / rms_k,
                    max_abs_error(got_v, gv) / rms_v);
        EXPECT_TRUE(all_close(got_q, gq, 6e-2 * rms_q + 1e-6, rtol, "dq vs double"));
        EXPECT_TRUE(all_close(got_k, gk, 6e-2 * rms_k + 1e-6, rtol, "dk vs double"));
        EXPECT_TRUE(all_close(got_v, gv, 6e-2 * rms_v + 1e-6, rtol, "dv vs double"));
        // The simple kernel on the same device inputs.
        float* sq = upload(init_q);
        float* sk = upload(init_k);
        float* sv = upload(init_v);
        ASSERT_TRUE(attention_backward(s(), p, dtype, dq_in, dk_in, dv_in, o_dev, lse_dev, dout_dev,
                                       sq, sk, sv, accumulate, AttentionBackwardKernel::kSimple,
                                       nullptr)
                        .ok());
        const std::vector<double> simple_q = to_double(download(sq, nq)),
                                  simple_k = to_double(download(sk, nk)),
                                  simple_v = to_double(download(sv, nk));
        EXPECT_TRUE(all_close(got_q, simple_q, 6e-2 * rms_q + 1e-6, rtol, "dq vs simple"));
        EXPECT_TRUE(all_close(got_k, simple_k, 6e-2 * rms_k + 1e-6, rtol, "dk vs simple"));
        EXPECT_TRUE(all_close(got_v, simple_v, 6e-2 * rms_v + 1e-6, rtol, "dv vs simple"));
    }

    // Tiled kernel, asked for explicitly.
    void tiled(const AttentionParams& p, bool accumulate, int salt) {
        check(p, DType::kBF16, accumulate, salt, AttentionBackwardKernel::kTiled,
              AttentionBackwardKernel::kTiled);
    }

    static double rms(const std::vector<double>& x) {
        double s = 0.0;
        for (double v : x) s += v * v;
        return x.empty() ? 0.0 : std::sqrt(s / static_cast<double>(x.size()));
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

TEST_F(CudaAttentionBackward, TiledCausalGqaRaggedLengthsMatchDoubleAndSimple) {
    tiled(causal(100, 0, 14, 2, 64), false, 200);  // Qwen2.5-0.5B heads, 100 = 64 + 36
    tiled(causal(130, 0, 32, 8, 64), false, 210);  // Llama-3.2-1B heads, three tiles
    tiled(causal(77, 0, 8, 2, 128), false, 220);   // d = 128
    tiled(causal(9, 0, 4, 1, 64), false, 230);     // MQA, less than one tile
    tiled(causal(64, 0, 2, 2, 128), false, 240);   // exactly one tile
}

TEST_F(CudaAttentionBackward, TiledContinuationsZigzagKeylessAndAccumulate) {
    tiled(causal(45, 70, 4, 2, 64), false, 250);   // 45 rows behind a 70-key prefix
    tiled(causal(21, 150, 4, 2, 128), true, 260);  // accumulate, as continuations call it
    // A zigzag ring shard: rows 0..47 at positions 0.., rows 48..95 at 200.. (queries and keys).
    AttentionParams z = causal(96, 0, 4, 2, 64);
    z.tk = 96;
    z.q_split = z.k_split = 48;
    z.q_pos1 = z.k_pos1 = 200;
    tiled(z, false, 270);
    AttentionParams nc = causal(70, 0, 4, 2, 64);  // not causal, tk != tq
    nc.causal = false;
    nc.tk = 83;
    tiled(nc, false, 280);
    AttentionParams late = causal(75, 0, 4, 2, 64);  // rows 0..9 see no key
    late.k_pos0 = 10;
    late.tk = 65;
    tiled(late, false, 290);
}

TEST_F(CudaAttentionBackward, AutoPicksTiledAndFallsBackToSimple) {
    // bf16 and d = 64: tiled. d = 80, fp32 inputs, a misaligned q: simple (exact tolerances).
    check(causal(40, 0, 4, 2, 64), DType::kBF16, false, 300, AttentionBackwardKernel::kAuto,
          AttentionBackwardKernel::kTiled);
    check(causal(40, 0, 2, 1, 80), DType::kBF16, false, 310, AttentionBackwardKernel::kAuto,
          AttentionBackwardKernel::kSimple);
    check(causal(40, 0, 4, 2, 64), DType::kF32, false, 320, AttentionBackwardKernel::kAuto,
          AttentionBackwardKernel::kSimple);
    check(causal(40, 0, 4, 2, 64), DType::kBF16, false, 330, AttentionBackwardKernel::kAuto,
          AttentionBackwardKernel::kSimple, /*q_offset=*/1);
    // Asking for the tiled kernel where it cannot run is an error naming why.
    AttentionParams p = causal(4, 0, 2, 1, 80);
    float* buf = device<float>(4096);
    const Status st = attention_backward(s(), p, DType::kBF16, buf, buf, buf, buf, buf, buf, buf,
                                         buf, buf, false, AttentionBackwardKernel::kTiled, nullptr);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("head dim 80"), std::string::npos) << st.to_string();
}

// Host logic only: runs without a device.
TEST(AttentionBackwardDispatch, TiledKernelConditionsNameTheReason) {
    AttentionParams p = causal(8, 0, 4, 2, 64);
    alignas(16) static float buf[64];
    EXPECT_EQ(attention_backward_tiled_unsupported(p, DType::kBF16, {buf, buf + 4}), "");
    EXPECT_NE(attention_backward_tiled_unsupported(p, DType::kF32, {buf}).find("bf16"),
              std::string::npos);
    p.d = 128;
    EXPECT_EQ(attention_backward_tiled_unsupported(p, DType::kBF16, {buf}), "");
    p.d = 96;
    EXPECT_NE(attention_backward_tiled_unsupported(p, DType::kBF16, {buf}).find("head dim 96"),
              std::string::npos);
    p.d = 64;
    const std::string why = attention_backward_tiled_unsupported(p, DType::kBF16, {buf, buf + 1});
    EXPECT_NE(why.find("pointer 1 is not 16-byte aligned"), std::string::npos) << why;
    EXPECT_STREQ(attention_backward_kernel_name(AttentionBackwardKernel::kTiled), "tiled");
    EXPECT_STREQ(attention_backward_kernel_name(AttentionBackwardKernel::kSimple), "simple");
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
