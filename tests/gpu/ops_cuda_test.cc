// The decoder's device ops (kernels/cuda/ops.h, gemm.h) against the CPU engine's functions in
// double (common/model/layers.h, optimizer.h) on fresh random inputs; the device allocator's
// accounting. Skips with a reason without a device.
//
// Inputs stored in bf16 on the device are rounded first, so each reference sees the exact inputs
// and only the op's own error is measured. Tolerances, |err| <= atol + rtol |ref|:
//   fp32 outputs (fp32 math):          atol 1e-5..1e-4, rtol 1e-5..1e-4 (per test, by reduction
//   length) bf16 outputs (one final rounding): rtol 2^-8 (half a bf16 ulp is 2^-9), atol 1e-6 GEMM,
//   fp32 out:                    atol 1e-4 sqrt(k), rtol 1e-4; bf16 out adds rtol 2^-8 AdamW after
//   3 steps (fp32):        atol 1e-6, rtol 1e-5
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/model/config.h"
#include "common/model/decoder_layer.h"
#include "common/model/layers.h"
#include "common/model/optimizer.h"
#include "common/model/params.h"
#include "kernels/cuda/ops.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels::cuda {
namespace {

using testkit::all_close;
using testkit::random_floats;
using testkit::test_seed;
using testkit::to_double;

constexpr double kBf16Rtol = 1.0 / 256;

class CudaOps : public testing::CudaFixture {
protected:
    uint64_t seed(int salt) const { return uint64_t{test_seed()} * 1000003u + salt; }
};

std::vector<int32_t> random_ints(size_t n, int32_t hi, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> dist(0, hi - 1);
    std::vector<int32_t> out(n);
    for (auto& v : out) v = dist(rng);
    return out;
}

TEST_F(CudaOps, AllocatorReportsInUsePeakAndReusesFreedBlocks) {
    DeviceAllocator& a = *alloc_;
    a.reset_peak();
    const size_t base = a.bytes_in_use(), reserved0 = a.reserved_bytes();
    {
        auto b1 = a.allocate(1 << 20, "one");
        auto b2 = a.allocate(3000, "two");
        ASSERT_TRUE(b1.ok() && b2.ok());
        EXPECT_EQ(b1->bytes(), size_t{1} << 20);
        EXPECT_EQ(a.bytes_in_use(), base + (1 << 20) + 3072);  // 512-byte blocks
        EXPECT_EQ(a.peak_bytes(), a.bytes_in_use());
    }
    EXPECT_EQ(a.bytes_in_use(), base);
    EXPECT_EQ(a.peak_bytes(), base + (1 << 20) + 3072);
    const size_t reserved = a.reserved_bytes();
    EXPECT_GE(reserved, reserved0 + (1 << 20));
    auto again = a.allocate(900000, "reused");  // fits the freed 1 MiB block (< 2x)
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(a.reserved_bytes(), reserved);
    a.reset_peak();
    EXPECT_EQ(a.peak_bytes(), a.bytes_in_use());
    auto huge = a.allocate(size_t{1} << 52, "an impossible buffer");
    ASSERT_FALSE(huge.ok());
    EXPECT_NE(huge.status().message().find("an impossible buffer"), std::string::npos)
        << huge.status().to_string();
}

struct GemmCase {
    bool ta, tb;
    int64_t m, n, k;
};

void check_gemm(testing::CudaFixture& f, Gemm& gemm, const GemmCase& gc, bool bf16_out,
                uint64_t seed) {
    GemmShape g{gc.ta, gc.tb, gc.m, gc.n, gc.k, gc.ta ? gc.m : gc.k, gc.tb ? gc.k : gc.n, gc.n};
    std::vector<float> a = random_floats(static_cast<size_t>(gc.m * gc.k), seed);
    std::vector<float> b = random_floats(static_cast<size_t>(gc.k * gc.n), seed + 1);
    std::vector<float> c = random_floats(static_cast<size_t>(gc.m * gc.n), seed + 2);
    Bf16* da = f.upload_bf16(a);
    Bf16* db = f.upload_bf16(b);
    const float alpha = 0.75f, beta = 0.5f;
    std::vector<double> want(c.size());
    std::vector<float> got;
    if (bf16_out) {
        Bf16* dc = f.upload_bf16(c);
        ASSERT_TRUE(gemm.matmul(f.s(), g, alpha, da, db, beta, dc).ok());
        got = f.download_bf16(dc, c.size());
    } else {
        float* dc = f.upload(c);
        ASSERT_TRUE(gemm.matmul(f.s(), g, alpha, da, db, beta, dc).ok());
        got = f.download(dc, c.size());
    }
    std::vector<double> ad = to_double(a), bd = to_double(b);
    for (size_t i = 0; i < c.size(); ++i) want[i] = c[i];
    model::gemm<double>(gc.ta, gc.tb, gc.m, gc.n, gc.k, alpha, ad.data(), g.lda, bd.data(), g.ldb,
                        beta, want.data(), g.ldc);
    const double atol = 1e-4 * std::sqrt(static_cast<double>(gc.k)) + (bf16_out ? 1e-6 : 0.0);
    const double rtol = 1e-4 + (bf16_out ? kBf16Rtol : 0.0);
    EXPECT_TRUE(all_close(got, want, atol, rtol,
                          "gemm m=" + std::to_string(gc.m) + " n=" + std::to_string(gc.n) +
                              " k=" + std::to_string(gc.k) + " ta=" + std::to_string(gc.ta) +
                              " tb=" + std::to_string(gc.tb) + (bf16_out ? " bf16" : " f32")));
}

const GemmCase kGemmCases[] = {{false, true, 37, 96, 64},    {false, false, 64, 40, 72},
                               {true, false, 48, 64, 33},    {true, true, 5, 7, 3},
                               {false, true, 256, 512, 384}, {false, true, 1, 160, 24}};

TEST_F(CudaOps, GemmMatchesDoubleReferenceForEveryTransposeAndOutputType) {
    int salt = 0;
    for (const GemmCase& gc : kGemmCases) {
        check_gemm(*this, *gemm_, gc, false, seed(++salt));
        check_gemm(*this, *gemm_, gc, true, seed(++salt));
    }
    std::printf("gemm: %s, %lld calls took the fallback kernel\n", gemm_->description().c_str(),
                static_cast<long long>(gemm_->fallback_calls()));
}

TEST_F(CudaOps, FallbackGemmMatchesDoubleReference) {
    auto fb = Gemm::create(*alloc_, /*force_fallback=*/true);
    ASSERT_TRUE(fb.ok());
    EXPECT_EQ((*fb)->backend(), Gemm::Backend::kFallback);
    int salt = 100;
    for (const GemmCase& gc : kGemmCases) {
        check_gemm(*this, **fb, gc, false, seed(++salt));
        check_gemm(*this, **fb, gc, true, seed(++salt));
    }
}

TEST_F(CudaOps, EmbeddingGathersRowsExactly) {
    const int64_t n = 19, h = 72, V = 50;
    std::vector<float> table = random_floats(V * h, seed(1));
    Bf16* dt = upload_bf16(table);
    const std::vector<int32_t> tok = random_ints(n, V, seed(2));
    float* x = device<float>(n * h);
    ASSERT_TRUE(embedding_forward(s(), n, h, V, upload(tok), dt, x).ok());
    const std::vector<float> got = download(x, n * h);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < h; ++j) ASSERT_EQ(got[r * h + j], table[tok[r] * h + j]);
}

TEST_F(CudaOps, RmsNormForwardAndBackwardMatchTheCpuEngine) {
    for (const int64_t h : {64, 200, 1536}) {
        const int64_t n = 13;
        std::vector<float> x = random_floats(n * h, seed(h), -2.0f, 2.0f);
        std::vector<float> w = random_floats(h, seed(h + 1), 0.5f, 1.5f);
        std::vector<float> dy = random_floats(n * h, seed(h + 2));
        Bf16* dw_bf = upload_bf16(w);
        float* dx_in = upload(x);
        Bf16* y = device<Bf16>(n * h);
        float* rstd = device<float>(n);
        ASSERT_TRUE(rmsnorm_forward(s(), n, h, dx_in, dw_bf, 1e-5f, y, rstd).ok());
        std::vector<double> xd = to_double(x), wd = to_double(w), dyd = to_double(dy);
        std::vector<double> want_y(n * h), want_r(n);
        model::rmsnorm_forward<double>(n, h, xd.data(), wd.data(), 1e-5, want_y.data(),
                                       want_r.data());
        EXPECT_TRUE(all_close(download_bf16(y, n * h), want_y, 1e-6, kBf16Rtol, "rmsnorm y"));
        EXPECT_TRUE(all_close(download(rstd, n), want_r, 1e-6, 1e-5, "rmsnorm rstd"));

        // Backward, accumulating into dx and dw.
        std::vector<float> dx0 = random_floats(n * h, seed(h + 3));
        std::vector<float> dw0 = random_floats(h, seed(h + 4));
        float* ddx = upload(dx0);
        float* ddw = upload(dw0);
        ASSERT_TRUE(
            rmsnorm_backward(s(), n, h, dx_in, dw_bf, rstd, upload(dy), ddx, true, ddw).ok());
        std::vector<double> want_dx = to_double(dx0), want_dw = to_double(dw0);
        model::rmsnorm_backward<double>(n, h, xd.data(), wd.data(), want_r.data(), dyd.data(),
                                        want_dx.data(), true, want_dw.data());
        EXPECT_TRUE(all_close(download(ddx, n * h), want_dx, 1e-5, 1e-4, "rmsnorm dx"));
        EXPECT_TRUE(all_close(download(ddw, h), want_dw, 1e-4, 1e-4, "rmsnorm dw"));
    }
}

// Bias, Qwen3's q/k norm and RoPE with llama3 scaling, against the CPU engine's steps in double.
TEST_F(CudaOps, HeadPrepareMatchesBiasNormAndRopeOfTheCpuEngine) {
    model::RopeScaling llama3;
    llama3.type = model::RopeScaling::Type::kLlama3;
    llama3.factor = 8.0;
    llama3.original_max_position_embeddings = 32;
    for (const int d : {16, 64, 128, 256}) {
        for (const bool norm : {false, true}) {
            const int64_t n = 11;
            const int heads = 3, max_pos = 64;
            const std::vector<double> inv = model::rope_inv_freq(d, 500000.0, llama3);
            const model::RopeTable<float> tf(max_pos, d, inv);
            const model::RopeTable<double> td(max_pos, d, inv);
            std::vector<float> x = random_floats(n * heads * d, seed(d));
            std::vector<float> bias = random_floats(heads * d, seed(d + 1), -0.5f, 0.5f);
            std::vector<float> nw = random_floats(d, seed(d + 2), 0.5f, 1.5f);
            const std::vector<int32_t> pos = random_ints(n, max_pos, seed(d + 3));
            HeadPrepare p;
            p.n = n;
            p.heads = heads;
            p.d = d;
            p.bias = upload_bf16(bias);
            p.norm_w = norm ? upload_bf16(nw) : nullptr;
            p.eps = 1e-6f;
            const std::vector<float> cosv(tf.cos(0), tf.cos(0) + max_pos * (d / 2));
            const std::vector<float> sinv(tf.sin(0), tf.sin(0) + max_pos * (d / 2));
            p.cos = upload(cosv);
            p.sin = upload(sinv);
            p.pos = upload(pos);
            p.raw = norm ? device<float>(n * heads * d) : nullptr;
            p.rstd = norm ? device<float>(n * heads) : nullptr;
            Bf16* out = device<Bf16>(n * heads * d);
            ASSERT_TRUE(head_prepare(s(), p, upload(x), out).ok());
            std::vector<double> want = to_double(x), rstd(n * heads);
            for (int64_t r = 0; r < n; ++r)
                for (int64_t j = 0; j < heads * d; ++j) want[r * heads * d + j] += bias[j];
            const std::vector<double> raw = want;
            if (norm) {
                const std::vector<double> nwd = to_double(nw);
                model::rmsnorm_forward<double>(n * heads, d, raw.data(), nwd.data(), 1e-6,
                                               want.data(), rstd.data());
            }
            model::rope_apply<double>(n, heads, pos.data(), td, want.data(), false);
            const std::string what =
                "head_prepare d=" + std::to_string(d) + " norm=" + std::to_string(norm);
            EXPECT_TRUE(all_close(download_bf16(out, n * heads * d), want, 1e-2, kBf16Rtol, what));
            if (norm) {
                EXPECT_TRUE(
                    all_close(download(p.raw, n * heads * d), raw, 1e-6, 1e-6, what + " raw"));
                EXPECT_TRUE(
                    all_close(download(p.rstd, n * heads), rstd, 1e-6, 1e-5, what + " rstd"));
            }
        }
    }
}

TEST_F(CudaOps, RopeForwardAndInverseMatchTheCpuEngine) {
    const int64_t n = 17;
    const int heads = 4, d = 64, max_pos = 40;
    const std::vector<double> inv = model::rope_inv_freq(d, 10000.0, model::RopeScaling{});
    const model::RopeTable<float> tf(max_pos, d, inv);
    const model::RopeTable<double> td(max_pos, d, inv);
    const std::vector<float> cosv(tf.cos(0), tf.cos(0) + max_pos * (d / 2));
    const std::vector<float> sinv(tf.sin(0), tf.sin(0) + max_pos * (d / 2));
    const std::vector<int32_t> pos = random_ints(n, max_pos, seed(1));
    for (const bool inverse : {false, true}) {
        std::vector<float> x = random_floats(n * heads * d, seed(2 + inverse));
        float* dx = upload(x);
        ASSERT_TRUE(
            rope_apply(s(), n, heads, d, upload(cosv), upload(sinv), upload(pos), dx, inverse)
                .ok());
        std::vector<double> want = to_double(x);
        model::rope_apply<double>(n, heads, pos.data(), td, want.data(), inverse);
        EXPECT_TRUE(all_close(download(dx, n * heads * d), want, 1e-6, 1e-5, "rope"));
    }
}

TEST_F(CudaOps, BiasSwigluAndTheirBackwardMatchTheCpuEngine) {
    const int64_t n = 21, width = 300, count = n * width;
    std::vector<float> y = random_floats(count, seed(1));
    std::vector<float> bias = random_floats(width, seed(2));
    float* dy = upload(y);
    ASSERT_TRUE(bias_add(s(), n, width, upload_bf16(bias), dy).ok());
    std::vector<double> want = to_double(y);
    for (int64_t i = 0; i < count; ++i) want[i] += bias[i % width];
    EXPECT_TRUE(all_close(download(dy, count), want, 1e-6, 1e-6, "bias_add"));

    std::vector<float> db0 = random_floats(width, seed(3));
    float* ddb = upload(db0);
    ASSERT_TRUE(bias_backward(s(), n, width, upload(y), ddb).ok());
    std::vector<double> want_db = to_double(db0);
    std::vector<double> yd = to_double(y);
    model::bias_backward<double>(n, width, yd.data(), want_db.data());
    EXPECT_TRUE(all_close(download(ddb, width), want_db, 1e-5, 1e-5, "bias_backward"));

    std::vector<float> g = random_floats(count, seed(4), -6.0f, 6.0f);
    std::vector<float> u = random_floats(count, seed(5), -3.0f, 3.0f);
    std::vector<float> ds = random_floats(count, seed(6));
    float* dg_in = upload(g);
    float* du_in = upload(u);
    Bf16* out = device<Bf16>(count);
    ASSERT_TRUE(swiglu_forward(s(), count, dg_in, du_in, out).ok());
    std::vector<double> gd = to_double(g), ud = to_double(u), dsd = to_double(ds);
    std::vector<double> want_s(count), want_dg(count), want_du(count);
    model::swiglu_forward<double>(count, gd.data(), ud.data(), want_s.data());
    EXPECT_TRUE(all_close(download_bf16(out, count), want_s, 1e-6, kBf16Rtol, "swiglu"));
    float* dg = device<float>(count);
    float* du = device<float>(count);
    ASSERT_TRUE(swiglu_backward(s(), count, dg_in, du_in, upload(ds), dg, du).ok());
    model::swiglu_backward<double>(count, gd.data(), ud.data(), dsd.data(), want_dg.data(),
                                   want_du.data());
    EXPECT_TRUE(all_close(download(dg, count), want_dg, 1e-6, 1e-5, "swiglu dg"));
    EXPECT_TRUE(all_close(download(du, count), want_du, 1e-6, 1e-5, "swiglu du"));
}

TEST_F(CudaOps, LogProbEntropyLogSoftmaxAndBackwardMatchTheCpuEngine) {
    for (const int64_t V : {97, 1000, 32000}) {
        const int64_t n = 9;
        const double temp = 0.7;
        std::vector<float> logits = random_floats(n * V, seed(V), -8.0f, 8.0f);
        const std::vector<int32_t> target = random_ints(n, static_cast<int32_t>(V), seed(V + 1));
        std::vector<float> weight = random_floats(n, seed(V + 2));
        float* dl = upload(logits);
        int32_t* dt = upload(target);
        float* lp = device<float>(n);
        float* ent = device<float>(n);
        const float it = static_cast<float>(1.0 / temp);
        ASSERT_TRUE(logprob_forward(s(), n, V, dl, dt, it, lp, ent).ok());
        std::vector<double> ld = to_double(logits), want_lp(n), want_ent(n);
        model::token_logprob_forward<double>(n, V, ld.data(), target.data(), 1.0 / temp,
                                             want_lp.data(), want_ent.data());
        const std::string what = "vocab " + std::to_string(V);
        EXPECT_TRUE(all_close(download(lp, n), want_lp, 2e-5, 1e-5, "logp " + what));
        EXPECT_TRUE(all_close(download(ent, n), want_ent, 2e-5, 1e-5, "entropy " + what));

        float* ls = device<float>(n * V);
        ASSERT_TRUE(log_softmax(s(), n, V, dl, it, ls).ok());
        const std::vector<float> got_ls = download(ls, n * V);
        for (int64_t r = 0; r < n; ++r) {
            EXPECT_NEAR(got_ls[r * V + target[r]], want_lp[r], 2e-5) << what << " row " << r;
        }

        float* dz = device<float>(n * V);
        ASSERT_TRUE(logprob_backward(s(), n, V, dl, dt, it, upload(weight), dz).ok());
        std::vector<double> wd = to_double(weight), want_dz(n * V);
        model::token_logprob_backward<double>(n, V, ld.data(), target.data(), 1.0 / temp, wd.data(),
                                              want_dz.data());
        EXPECT_TRUE(all_close(download(dz, n * V), want_dz, 1e-6, 1e-4, "dlogits " + what));
    }
}

TEST_F(CudaOps, EmbeddingBackwardScattersRepeatedTokens) {
    const int64_t n = 40, h = 48, V = 6;  // few tokens: many repeats
    const std::vector<int32_t> tok = random_ints(n, V, seed(1));
    std::vector<float> dx = random_floats(n * h, seed(2));
    std::vector<float> table0 = random_floats(V * h, seed(3));
    float* dt = upload(table0);
    ASSERT_TRUE(embedding_backward(s(), n, h, V, upload(tok), upload(dx), dt).ok());
    std::vector<double> want = to_double(table0);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < h; ++j) want[tok[r] * h + j] += dx[r * h + j];
    EXPECT_TRUE(all_close(download(dt, V * h), want, 1e-5, 1e-5, "embedding_backward"));
}

// Three AdamW steps with global-norm clipping engaged and decay on the 2-D weights, against the
// CPU engine's AdamW (common/model/optimizer.cc) on the same flat buffer.
TEST_F(CudaOps, AdamWWithClippingMatchesTheCpuOptimizer) {
    model::ModelConfig cfg;
    cfg.vocab_size = 37;
    auto layout = model::make_param_layout(cfg);
    ASSERT_TRUE(layout.ok());
    auto index = model::ParamIndex::create(cfg, *layout);
    ASSERT_TRUE(index.ok());
    config::OptimizerSpec spec;
    spec.lr = 1e-2;
    spec.weight_decay = 0.1;
    spec.grad_clip = 0.5;  // gradients below are far larger: clipping engages
    spec.warmup_steps = 1;
    const int64_t count = static_cast<int64_t>(index->elements);
    std::vector<float> params = random_floats(count, seed(1));
    model::AdamW cpu(spec, *index, 10);
    std::vector<float> cpu_params = params;

    float* p = upload(params);
    float* m = device<float>(count);
    float* v = device<float>(count);
    float* grads = device<float>(count);
    double* sum_sq = device<double>(1);
    Bf16* p_bf16 = device<Bf16>(count);
    ASSERT_TRUE(fill_zero(s(), m, count * 4).ok());
    ASSERT_TRUE(fill_zero(s(), v, count * 4).ok());
    // [begin, end, decay] ranges covering the buffer.
    std::vector<std::tuple<int64_t, int64_t, bool>> ranges;
    int64_t at = 0;
    for (const auto& [b, e] : index->matrices) {
        if (static_cast<int64_t>(b) > at) ranges.emplace_back(at, b, false);
        ranges.emplace_back(b, e, true);
        at = static_cast<int64_t>(e);
    }
    if (at < count) ranges.emplace_back(at, count, false);
    for (int step = 0; step < 3; ++step) {
        std::vector<float> g = random_floats(count, seed(10 + step));
        ASSERT_TRUE(copy_to_device(s(), grads, g.data(), count * 4).ok());
        const auto r = cpu.step(cpu_params.data(), g.data());
        ASSERT_TRUE(fill_zero(s(), sum_sq, sizeof(double)).ok());
        ASSERT_TRUE(sum_squares(s(), count, grads, sum_sq).ok());
        AdamWStep st;
        st.lr = static_cast<float>(r.lr);
        st.beta1 = static_cast<float>(spec.beta1);
        st.beta2 = static_cast<float>(spec.beta2);
        st.eps = static_cast<float>(spec.eps);
        st.bias_correction1 = static_cast<float>(1.0 / (1.0 - std::pow(spec.beta1, step + 1)));
        st.bias_correction2 = static_cast<float>(1.0 / (1.0 - std::pow(spec.beta2, step + 1)));
        st.weight_decay = static_cast<float>(spec.weight_decay);
        st.max_grad_norm = spec.grad_clip;
        for (const auto& [b, e, decay] : ranges) {
            ASSERT_TRUE(adamw_update(s(), e - b, p + b, grads + b, m + b, v + b, st, decay, sum_sq,
                                     p_bf16 + b)
                            .ok());
        }
        const std::vector<double> norm = download(sum_sq, 1);
        EXPECT_NEAR(std::sqrt(norm[0]), r.grad_norm, 1e-9 * r.grad_norm) << "step " << step;
    }
    const std::vector<float> got = download(p, count);
    EXPECT_TRUE(all_close(got, to_double(cpu_params), 1e-6, 1e-5, "adamw params"));
    const std::vector<float> got_bf16 = download_bf16(p_bf16, count);
    EXPECT_TRUE(all_close(got_bf16, to_double(cpu_params), 1e-6, kBf16Rtol, "adamw bf16 copy"));
}

}  // namespace
}  // namespace tandem::kernels::cuda
