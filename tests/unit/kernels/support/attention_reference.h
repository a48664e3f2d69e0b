#pragma once

// Test support for kernels: the double-precision attention reference (forward and backward),
// seeded random inputs and tolerance checks that treat NaN as failure. Test-only code.

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "kernels/attention.h"

namespace tandem::kernels::testkit {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One attention problem's shape with the default softmax scale of head dim d.
AttentionParams attention_params(int64_t tq, int64_t tk, int hq, int hkv, int d,
                                 bool causal = false, int64_t q_pos0 = 0, int64_t k_pos0 = 0);

struct ReferenceForward {
    std::vector<double> o;    // [tq, hq, d]
    std::vector<double> lse;  // [hq, tq], natural log, -inf for rows without a visible key
};

// Exact attention in double. Ignores p.accumulate and p.lse_stride (dense outputs).
ReferenceForward reference_forward(const AttentionParams& p, std::span<const double> q,
                                   std::span<const double> k, std::span<const double> v);

struct ReferenceGrads {
    std::vector<double> dq;  // [tq, hq, d]
    std::vector<double> dk;  // [tk, hkv, d]
    std::vector<double> dv;  // [tk, hkv, d]
};

// Exact gradients of L = sum(o * dout) in double.
ReferenceGrads reference_backward(const AttentionParams& p, std::span<const double> q,
                                  std::span<const double> k, std::span<const double> v,
                                  std::span<const double> dout);

// The seed of this test process: --gtest_random_seed when given, otherwise fresh per run.
uint32_t test_seed();

// n values uniform in [lo, hi) from `seed`.
std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
std::vector<double> to_double(std::span<const float> x);
std::vector<float> to_float(std::span<const double> x);

// Passes when every element is finite-or-equal-infinite and |got - want| <= atol + rtol |want|.
// An infinite `want` requires the identical infinity. NaN anywhere fails.
::testing::AssertionResult all_close(std::span<const float> got, std::span<const double> want,
                                     double atol, double rtol, const std::string& what);

// Largest |got - want|, ignoring equal infinities (for reporting observed errors).
double max_abs_error(std::span<const float> got, std::span<const double> want);

// Inputs of one attention problem in fp32 and their double copies.
struct AttentionInputs {
    AttentionParams p;
    std::vector<float> q, k, v;
    std::vector<double> qd, kd, vd;
};
AttentionInputs make_inputs(const AttentionParams& p, uint64_t seed);

std::string describe(const AttentionParams& p);

}  // namespace tandem::kernels::testkit
