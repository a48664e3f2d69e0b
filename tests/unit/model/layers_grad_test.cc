// Finite-difference checks of every layer's backward in double, and of the float attention path
// (kernels/) against the double reference.
#include "common/model/layers.h"

#include <cmath>

#include <gtest/gtest.h>

#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

using testing::check_gradient;
using testing::random_vector;

// sum(c * y) for a fixed random c: a scalar whose gradient w.r.t. y is c.
double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

TEST(ModelLayersGrad, LinearMatchesFiniteDifferences) {
    const int64_t n = 3, in = 5, out = 4;
    auto x = random_vector<double>(n * in, 1);
    auto w = random_vector<double>(out * in, 2);
    const auto c = random_vector<double>(n * out, 3);
    std::vector<double> y(n * out), dx(n * in), dw(out * in, 0.0);
    auto f = [&] {
        linear_forward<double>(n, in, out, x.data(), w.data(), y.data());
        return dot(y, c);
    };
    linear_backward<double>(n, in, out, x.data(), w.data(), c.data(), dx.data(), false, dw.data());
    check_gradient(x, dx, f, 1e-8, 1e-7, 1e-5, "dx");
    check_gradient(w, dw, f, 1e-8, 1e-7, 1e-5, "dw");
}

TEST(ModelLayersGrad, RmsNormMatchesFiniteDifferences) {
    const int64_t n = 3, h = 6;
    auto x = random_vector<double>(n * h, 4);
    auto w = random_vector<double>(h, 5);
    const auto c = random_vector<double>(n * h, 6);
    std::vector<double> y(n * h), rstd(n), dx(n * h), dw(h, 0.0);
    auto f = [&] {
        rmsnorm_forward<double>(n, h, x.data(), w.data(), 1e-5, y.data(), rstd.data());
        return dot(y, c);
    };
    f();
    rmsnorm_backward<double>(n, h, x.data(), w.data(), rstd.data(), c.data(), dx.data(), false,
                             dw.data());
    check_gradient(x, dx, f, 1e-8, 1e-7, 1e-5, "dx");
    check_gradient(w, dw, f, 1e-8, 1e-7, 1e-5, "dw");
}

TEST(ModelLayersGrad, RopeBackwardIsTheTransposedRotation) {
    const int64_t n = 4;
    const int heads = 3, d = 8;
    RopeTable<double> table(16, d, 10000.0);
    const std::vector<int32_t> pos{0, 3, 7, 15};
    auto x = random_vector<double>(n * heads * d, 7);
    const auto c = random_vector<double>(x.size(), 8);
    auto f = [&] {
        std::vector<double> y = x;
        rope_apply<double>(n, heads, pos.data(), table, y.data(), false);
        return dot(y, c);
    };
    std::vector<double> dx = c;
    rope_apply<double>(n, heads, pos.data(), table, dx.data(), true);
    check_gradient(x, dx, f, 1e-9, 1e-8, 1e-5, "dx");
    // Position 0 is the identity; the inverse undoes the forward.
    std::vector<double> y = x;
    rope_apply<double>(n, heads, pos.data(), table, y.data(), false);
    for (int i = 0; i < heads * d; ++i) EXPECT_DOUBLE_EQ(y[i], x[i]);
    rope_apply<double>(n, heads, pos.data(), table, y.data(), true);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-12);
}

TEST(ModelLayersGrad, RopeFollowsTheHuggingFaceRotateHalfConvention) {
    // Head dim 4: pairs (0, 2) at frequency 1 and (1, 3) at theta^(-1/2).
    RopeTable<double> table(8, 4, 100.0);
    const int32_t pos = 3;
    std::vector<double> x{1.0, 2.0, 3.0, 4.0};
    rope_apply<double>(1, 1, &pos, table, x.data(), false);
    const double a0 = 3.0, a1 = 3.0 / 10.0;
    EXPECT_NEAR(x[0], 1.0 * std::cos(a0) - 3.0 * std::sin(a0), 1e-12);
    EXPECT_NEAR(x[2], 3.0 * std::cos(a0) + 1.0 * std::sin(a0), 1e-12);
    EXPECT_NEAR(x[1], 2.0 * std::cos(a1) - 4.0 * std::sin(a1), 1e-12);
    EXPECT_NEAR(x[3], 4.0 * std::cos(a1) + 2.0 * std::sin(a1), 1e-12);
}

TEST(ModelLayersGrad, SwiGluMatchesFiniteDifferences) {
    const int64_t n = 20;
    auto g = random_vector<double>(n, 9, 2.0);
    auto u = random_vector<double>(n, 10);
    const auto c = random_vector<double>(n, 11);
    std::vector<double> s(n), dg(n), du(n);
    auto f = [&] {
        swiglu_forward<double>(n, g.data(), u.data(), s.data());
        return dot(s, c);
    };
    swiglu_backward<double>(n, g.data(), u.data(), c.data(), dg.data(), du.data());
    check_gradient(g, dg, f, 1e-9, 1e-7, 1e-5, "dg");
    check_gradient(u, du, f, 1e-9, 1e-7, 1e-5, "du");
}

TEST(ModelLayersGrad, TokenLogprobMatchesFiniteDifferencesAtTemperature) {
    const int64_t n = 4, vocab = 6;
    const double inv_temp = 1.0 / 0.7;
    auto logits = random_vector<double>(n * vocab, 12, 2.0);
    const std::vector<int32_t> target{0, 5, 2, 2};
    const auto w = random_vector<double>(n, 13);
    std::vector<double> logp(n), ent(n), dl(n * vocab);
    auto f = [&] {
        token_logprob_forward<double>(n, vocab, logits.data(), target.data(), inv_temp, logp.data(),
                                      ent.data());
        return dot(logp, w);
    };
    f();
    for (int64_t i = 0; i < n; ++i) {
        // Direct definitions.
        double m = -1e300, s = 0;
        for (int j = 0; j < vocab; ++j) m = std::max(m, logits[i * vocab + j] * inv_temp);
        for (int j = 0; j < vocab; ++j) s += std::exp(logits[i * vocab + j] * inv_temp - m);
        EXPECT_NEAR(logp[i], logits[i * vocab + target[i]] * inv_temp - m - std::log(s), 1e-12);
        double h = 0;
        for (int j = 0; j < vocab; ++j) {
            const double p = std::exp(logits[i * vocab + j] * inv_temp - m) / s;
            h -= p * std::log(p);
        }
        EXPECT_NEAR(ent[i], h, 1e-12);
    }
    token_logprob_backward<double>(n, vocab, logits.data(), target.data(), inv_temp, w.data(),
                                   dl.data());
    check_gradient(logits, dl, f, 1e-9, 1e-7, 1e-5, "dlogits");
}

kernels::AttentionParams attn_params(int64_t tq, int64_t tk, int hq, int hkv, int d,
                                     int64_t q_pos0) {
    kernels::AttentionParams p;
    p.tq = tq;
    p.tk = tk;
    p.hq = hq;
    p.hkv = hkv;
    p.d = d;
    p.scale = kernels::default_softmax_scale(d);
    p.causal = true;
    p.q_pos0 = q_pos0;
    return p;
}

TEST(ModelLayersGrad, ReferenceAttentionMatchesFiniteDifferences) {
    // GQA, causal, queries offset into the keys (a chunked prefill).
    const auto p = attn_params(3, 5, 4, 2, 4, 2);
    auto q = random_vector<double>(p.tq * p.hq * p.d, 14);
    auto k = random_vector<double>(p.tk * p.hkv * p.d, 15);
    auto v = random_vector<double>(p.tk * p.hkv * p.d, 16);
    const auto c = random_vector<double>(q.size(), 17);
    std::vector<double> o(q.size()), lse(p.hq * p.tq), dq(q.size()), dk(k.size()), dv(v.size());
    auto f = [&] {
        EXPECT_TRUE(
            attention_forward<double>(p, q.data(), k.data(), v.data(), o.data(), lse.data()).ok());
        return dot(o, c);
    };
    f();
    ASSERT_TRUE(attention_backward<double>(p, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                           c.data(), dq.data(), dk.data(), dv.data())
                    .ok());
    check_gradient(q, dq, f, 1e-9, 1e-7, 1e-5, "dq");
    check_gradient(k, dk, f, 1e-9, 1e-7, 1e-5, "dk");
    check_gradient(v, dv, f, 1e-9, 1e-7, 1e-5, "dv");
}

TEST(ModelLayersGrad, KernelAttentionMatchesTheDoubleReference) {
    // The float path goes through kernels/; it must agree with the double reference that the
    // finite-difference checks validate. Tolerance: 2e-5 absolute on unit-scale values.
    for (const auto& p : {attn_params(7, 7, 4, 2, 16, 0), attn_params(1, 9, 4, 1, 8, 8),
                          attn_params(5, 12, 2, 2, 16, 7)}) {
        const auto qd = random_vector<double>(p.tq * p.hq * p.d, 18);
        const auto kd = random_vector<double>(p.tk * p.hkv * p.d, 19);
        const auto vd = random_vector<double>(p.tk * p.hkv * p.d, 20);
        const auto dod = random_vector<double>(qd.size(), 21);
        std::vector<double> o(qd.size()), lse(p.hq * p.tq), dq(qd.size()), dk(kd.size()),
            dv(vd.size());
        ASSERT_TRUE(
            attention_forward<double>(p, qd.data(), kd.data(), vd.data(), o.data(), lse.data())
                .ok());
        ASSERT_TRUE(attention_backward<double>(p, qd.data(), kd.data(), vd.data(), o.data(),
                                               lse.data(), dod.data(), dq.data(), dk.data(),
                                               dv.data())
                        .ok());
        auto to_f = [](const std::vector<double>& x) {
            return std::vector<float>(x.begin(), x.end());
        };
        const auto qf = to_f(qd), kf = to_f(kd), vf = to_f(vd), dof = to_f(dod);
        std::vector<float> of(qf.size()), lf(lse.size()), dqf(qf.size()), dkf(kf.size()),
            dvf(vf.size());
        ASSERT_TRUE(
            attention_forward<float>(p, qf.data(), kf.data(), vf.data(), of.data(), lf.data())
                .ok());
        ASSERT_TRUE(attention_backward<float>(p, qf.data(), kf.data(), vf.data(), of.data(),
                                              lf.data(), dof.data(), dqf.data(), dkf.data(),
                                              dvf.data())
                        .ok());
        auto close = [](const std::vector<double>& a, const std::vector<float>& b,
                        const char* what) {
            for (size_t i = 0; i < a.size(); ++i) {
                ASSERT_FALSE(std::isnan(b[i])) << what << " " << i;
                ASSERT_NEAR(a[i], b[i], 2e-5) << what << " " << i;
            }
        };
        close(o, of, "o");
        close(lse, lf, "lse");
        close(dq, dqf, "dq");
        close(dk, dkf, "dk");
        close(dv, dvf, "dv");
    }
}

}  // namespace
}  // namespace tandem::model
