// CPU attention backward against the double reference; the reference itself against central
// finite differences in double.
//
// Tolerances (fp32 kernel vs double reference, inputs and dout uniform in [-1, 1]):
//   dq, dk, dv: |err| <= 1e-5 + 1e-5 |ref|   (observed maxima: dq 6e-8, dk 9e-8, dv 3.2e-7)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/cpu_isa.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using cpu::CpuIsa;
using testkit::all_close;
using testkit::attention_params;
using testkit::describe;
using testkit::make_inputs;
using testkit::random_floats;
using testkit::reference_backward;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_double;

constexpr double kAtol = 1e-5, kRtol = 1e-5;

struct Grads {
    std::vector<float> dq, dk, dv;
};

Grads run_backward(CpuIsa isa, const testkit::AttentionInputs& in, const std::vector<float>& dout,
                   const std::vector<float>& o, const std::vector<float>& lse) {
    Grads g{std::vector<float>(in.q.size()), std::vector<float>(in.k.size()),
            std::vector<float>(in.v.size())};
    const Status s = cpu::attention_backward_cpu_isa(isa, in.p, in.q.data(), in.k.data(),
                                                     in.v.data(), o.data(), lse.data(), dout.data(),
                                                     g.dq.data(), g.dk.data(), g.dv.data(), false);
    EXPECT_TRUE(s.ok()) << s.to_string();
    return g;
}

void expect_backward_matches(const AttentionParams& p, uint64_t seed) {
    const auto in = make_inputs(p, seed);
    const auto dout = random_floats(in.q.size(), seed + 77);
    const auto ref = reference_backward(p, in.qd, in.kd, in.vd, to_double(dout));
    std::vector<float> o(in.q.size()), lse(static_cast<size_t>(p.hq * p.tq));
    ASSERT_TRUE(
        attention_forward_cpu(p, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data()).ok());
    for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
        if (!cpu::cpu_isa_supported(isa)) continue;
        SCOPED_TRACE(std::string(cpu::cpu_isa_name(isa)) + " " + describe(p));
        const Grads g = run_backward(isa, in, dout, o, lse);
        EXPECT_TRUE(all_close(g.dq, ref.dq, kAtol, kRtol, "dq"));
        EXPECT_TRUE(all_close(g.dk, ref.dk, kAtol, kRtol, "dk"));
        EXPECT_TRUE(all_close(g.dv, ref.dv, kAtol, kRtol, "dv"));
    }
}

TEST(AttentionBackwardCpu, MatchesReferenceAcrossShapes) {
    const uint64_t seed = test_seed();
    expect_backward_matches(attention_params(1, 1, 1, 1, 1), seed);
    expect_backward_matches(attention_params(7, 9, 3, 3, 5), seed + 1);
    expect_backward_matches(attention_params(70, 130, 4, 2, 64), seed + 2);
    expect_backward_matches(attention_params(100, 100, 4, 1, 128, true), seed + 3);
    expect_backward_matches(attention_params(20, 150, 3, 1, 24, true, 130, 0), seed + 4);
    expect_backward_matches(attention_params(66, 50, 2, 2, 40, true, 0, 30), seed + 5);
    // Two runs of positions (a zigzag shard against another rank's block).
    AttentionParams two = attention_params(80, 90, 4, 2, 16, true, 10, 0);
    two.q_split = 40;
    two.q_pos1 = 150;
    two.k_split = 30;
    two.k_pos1 = 140;
    expect_backward_matches(two, seed + 6);
}

// L(q, k, v) = sum(o * g) in double, for finite differences.
double loss(const AttentionParams& p, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, const std::vector<double>& g) {
    const auto f = reference_forward(p, q, k, v);
    double s = 0.0;
    for (size_t i = 0; i < g.size(); ++i) s += f.o[i] * g[i];
    return s;
}

TEST(AttentionBackwardCpu, ReferenceGradientsMatchFiniteDifferences) {
    AttentionParams p = attention_params(3, 4, 2, 1, 3, true, 1, 0);
    p.scale = 0.7f;
    const auto in = make_inputs(p, test_seed());
    const auto g = to_double(random_floats(in.q.size(), test_seed() + 5));
    const auto ref = reference_backward(p, in.qd, in.kd, in.vd, g);
    const double eps = 1e-6;
    auto check = [&](std::vector<double> x, const std::vector<double>& grad, int which) {
        for (size_t i = 0; i < x.size(); ++i) {
            const double keep = x[i];
            auto eval = [&](double val) {
                x[i] = val;
                const auto& qq = which == 0 ? x : in.qd;
                const auto& kk = which == 1 ? x : in.kd;
                const auto& vv = which == 2 ? x : in.vd;
                return loss(p, qq, kk, vv, g);
            };
            const double fd = (eval(keep + eps) - eval(keep - eps)) / (2 * eps);
            x[i] = keep;
            EXPECT_NEAR(grad[i], fd, 1e-7 + 1e-6 * std::fabs(fd))
                << "tensor " << which << " i " << i;
        }
    };
    check(in.qd, ref.dq, 0);
    check(in.kd, ref.dk, 1);
    check(in.vd, ref.dv, 2);
    // And the fp32 kernel on the same tiny case.
    expect_backward_matches(p, test_seed());
}

TEST(AttentionBackwardCpu, AccumulateGradsAddsToExistingValues) {
    const AttentionParams p = attention_params(30, 40, 2, 1, 16, true, 10, 0);
    const auto in = make_inputs(p, test_seed());
    const auto dout = random_floats(in.q.size(), test_seed() + 3);
    std::vector<float> o(in.q.size()), lse(static_cast<size_t>(p.hq * p.tq));
    ASSERT_TRUE(
        attention_forward_cpu(p, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data()).ok());
    Grads fresh = run_backward(cpu::best_cpu_isa(), in, dout, o, lse);
    Grads acc{std::vector<float>(in.q.size(), 1.0f), std::vector<float>(in.k.size(), 2.0f),
              std::vector<float>(in.v.size(), 3.0f)};
    ASSERT_TRUE(attention_backward_cpu(p, in.q.data(), in.k.data(), in.v.data(), o.data(),
                                       lse.data(), dout.data(), acc.dq.data(), acc.dk.data(),
                                       acc.dv.data(), true)
                    .ok());
    for (size_t i = 0; i < acc.dq.size(); ++i) EXPECT_FLOAT_EQ(acc.dq[i], fresh.dq[i] + 1.0f);
    for (size_t i = 0; i < acc.dk.size(); ++i) EXPECT_FLOAT_EQ(acc.dk[i], fresh.dk[i] + 2.0f);
    for (size_t i = 0; i < acc.dv.size(); ++i) EXPECT_FLOAT_EQ(acc.dv[i], fresh.dv[i] + 3.0f);
}

TEST(AttentionBackwardCpu, RowsWithoutKeysGetZeroGradientAndNoNan) {
    const AttentionParams p =
        attention_params(12, 10, 2, 2, 8, true, 0, 6);  // rows 0..5 see nothing
    const auto in = make_inputs(p, test_seed());
    const auto dout = random_floats(in.q.size(), test_seed() + 9);
    std::vector<float> o(in.q.size()), lse(static_cast<size_t>(p.hq * p.tq));
    ASSERT_TRUE(
        attention_forward_cpu(p, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data()).ok());
    const Grads g = run_backward(cpu::best_cpu_isa(), in, dout, o, lse);
    for (float x : g.dq) ASSERT_FALSE(std::isnan(x));
    for (float x : g.dk) ASSERT_FALSE(std::isnan(x));
    for (int64_t i = 0; i < 6; ++i) {
        for (int x = 0; x < p.hq * p.d; ++x) EXPECT_EQ(g.dq[i * p.hq * p.d + x], 0.0f);
    }
}

TEST(AttentionBackwardCpu, TwoRunsAreBitwiseIdentical) {
    const AttentionParams p = attention_params(90, 100, 4, 2, 48, true);
    const auto in = make_inputs(p, test_seed());
    const auto dout = random_floats(in.q.size(), test_seed() + 1);
    std::vector<float> o(in.q.size()), lse(static_cast<size_t>(p.hq * p.tq));
    ASSERT_TRUE(
        attention_forward_cpu(p, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data()).ok());
    const Grads a = run_backward(cpu::best_cpu_isa(), in, dout, o, lse);
    const Grads b = run_backward(cpu::best_cpu_isa(), in, dout, o, lse);
    EXPECT_EQ(0, std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.dk.data(), b.dk.data(), a.dk.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.dv.data(), b.dv.data(), a.dv.size() * 4));
}

}  // namespace
}  // namespace tandem::kernels
