// CPU attention forward against the double reference, on every instruction set this CPU runs.
//
// Tolerances (fp32 kernel vs double reference, inputs uniform in [-1, 1]):
//   o:   |err| <= 2e-6 + 1e-5 |ref|       lse: |err| <= 5e-6 + 2e-6 |ref|
// Observed maxima (d 16..128, 200x300 rows): o 1.3e-7, lse 8e-7.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
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
using testkit::reference_forward;
using testkit::test_seed;

constexpr double kOAtol = 2e-6, kORtol = 1e-5, kLseAtol = 5e-6, kLseRtol = 2e-6;
using testkit::kNegInf;

std::vector<CpuIsa> supported_isas() {
    std::vector<CpuIsa> out;
    for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
        if (cpu::cpu_isa_supported(isa)) out.push_back(isa);
    }
    return out;
}

struct Output {
    std::vector<float> o, lse;
};

Output run_cpu(CpuIsa isa, const testkit::AttentionInputs& in) {
    Output out;
    out.o.assign(static_cast<size_t>(in.p.tq * in.p.hq * in.p.d), 7.0f);  // poison
    out.lse.assign(static_cast<size_t>(in.p.hq * in.p.tq), 7.0f);
    const Status s = cpu::attention_forward_cpu_isa(isa, in.p, in.q.data(), in.k.data(),
                                                    in.v.data(), out.o.data(), out.lse.data());
    EXPECT_TRUE(s.ok()) << s.to_string();
    return out;
}

void expect_matches_reference(const AttentionParams& p, uint64_t seed) {
    const auto in = make_inputs(p, seed);
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(std::string(cpu::cpu_isa_name(isa)) + " " + describe(p));
        const Output out = run_cpu(isa, in);
        EXPECT_TRUE(all_close(out.o, ref.o, kOAtol, kORtol, "o"));
        EXPECT_TRUE(all_close(out.lse, ref.lse, kLseAtol, kLseRtol, "lse"));
    }
}

TEST(AttentionCpu, MatchesReferenceAcrossShapes) {
    const uint64_t seed = test_seed();
    // MHA, GQA, MQA; head dims that are and are not multiples of the vector width; lengths that
    // are and are not multiples of the 64-row blocks.
    expect_matches_reference(attention_params(1, 1, 1, 1, 1), seed);
    expect_matches_reference(attention_params(5, 7, 3, 3, 17), seed + 1);
    expect_matches_reference(attention_params(64, 64, 4, 2, 64), seed + 2);
    expect_matches_reference(attention_params(100, 130, 6, 2, 128), seed + 3);
    expect_matches_reference(attention_params(33, 200, 4, 1, 96), seed + 4);
    expect_matches_reference(attention_params(65, 129, 2, 2, 256), seed + 5);
    expect_matches_reference(attention_params(3, 70, 5, 1, 3), seed + 6);
}

TEST(AttentionCpu, CausalWithGlobalOffsetsMatchesReference) {
    const uint64_t seed = test_seed() + 100;
    expect_matches_reference(attention_params(130, 130, 4, 2, 64, true), seed);
    // Queries at the end of a longer context (decode / chunked prefill).
    expect_matches_reference(attention_params(8, 200, 3, 1, 32, true, 192, 0), seed + 1);
    // Keys that start after some queries (those rows see nothing).
    expect_matches_reference(attention_params(90, 77, 2, 1, 40, true, 0, 30), seed + 2);
    // A key chunk entirely in the past of every query.
    expect_matches_reference(attention_params(70, 70, 2, 2, 16, true, 500, 100), seed + 3);
}

TEST(AttentionCpu, TwoRunsOfPositionsMatchReference) {
    // Zigzag-shaped shards: queries at 10..49 then 150..189, keys at 0..29 then 170..219.
    AttentionParams p = attention_params(80, 80, 4, 2, 32, true, 10, 0);
    p.q_split = 40;
    p.q_pos1 = 150;
    p.k_split = 30;
    p.k_pos1 = 170;
    expect_matches_reference(p, test_seed() + 200);
    p.k_split = 80;  // split at the end: a single run
    expect_matches_reference(p, test_seed() + 201);
    p.k_split = 0;  // split at the start: every key at k_pos1 + j
    expect_matches_reference(p, test_seed() + 202);
}

TEST(AttentionCpu, RejectsDecreasingPositions) {
    float buf[64] = {};
    AttentionParams p = attention_params(4, 4, 1, 1, 4, true, 10, 0);
    p.q_split = 2;
    p.q_pos1 = 5;  // 10, 11, then 5: decreasing
    EXPECT_EQ(attention_forward_cpu(p, buf, buf, buf, buf, buf).code(),
              StatusCode::kInvalidArgument);
}

TEST(AttentionCpu, RowsThatSeeNoKeyGiveZeroAndMinusInfinity) {
    AttentionParams p = attention_params(20, 30, 2, 1, 8, true, 0, 10);  // rows 0..9 see nothing
    const auto in = make_inputs(p, test_seed());
    for (CpuIsa isa : supported_isas()) {
        const Output out = run_cpu(isa, in);
        for (int h = 0; h < p.hq; ++h) {
            for (int64_t i = 0; i < p.tq; ++i) {
                const float l = out.lse[h * p.tq + i];
                if (i < 10) {
                    EXPECT_EQ(l, kNegInf) << "row " << i;
                    for (int x = 0; x < p.d; ++x) EXPECT_EQ(out.o[(i * p.hq + h) * p.d + x], 0.0f);
                } else {
                    EXPECT_TRUE(std::isfinite(l)) << "row " << i;
                }
            }
        }
    }
    // No keys at all.
    AttentionParams empty = attention_params(4, 0, 2, 2, 8);
    const auto in0 = make_inputs(empty, 1);
    const Output out0 = run_cpu(cpu::best_cpu_isa(), in0);
    for (float l : out0.lse) EXPECT_EQ(l, kNegInf);
    for (float x : out0.o) EXPECT_EQ(x, 0.0f);
}

TEST(AttentionCpu, AccumulateOverKeyChunksEqualsOneCall) {
    const AttentionParams full = attention_params(50, 150, 4, 2, 32, true, 100, 0);
    const auto in = make_inputs(full, test_seed());
    const auto ref = reference_forward(full, in.qd, in.kd, in.vd);
    for (CpuIsa isa : supported_isas()) {
        std::vector<float> o(in.q.size(), 123.0f), lse(static_cast<size_t>(full.hq * full.tq));
        // Chunks in an arbitrary order; each call merges into the running result.
        const int64_t bounds[][2] = {{70, 150}, {0, 0}, {0, 45}, {45, 70}};
        bool first = true;
        for (const auto& b : bounds) {
            AttentionParams p = full;
            p.tk = b[1] - b[0];
            p.k_pos0 = b[0];
            p.accumulate = !first;
            const size_t off = static_cast<size_t>(b[0] * full.hkv * full.d);
            ASSERT_TRUE(cpu::attention_forward_cpu_isa(isa, p, in.q.data(), in.k.data() + off,
                                                       in.v.data() + off, o.data(), lse.data())
                            .ok());
            first = false;
        }
        SCOPED_TRACE(cpu::cpu_isa_name(isa));
        EXPECT_TRUE(all_close(o, ref.o, 4 * kOAtol, 4 * kORtol, "o"));
        EXPECT_TRUE(all_close(lse, ref.lse, 4 * kLseAtol, 4 * kLseRtol, "lse"));
    }
}

TEST(AttentionCpu, LseStrideWritesIntoAWiderArray) {
    AttentionParams p = attention_params(10, 20, 2, 1, 8);
    p.lse_stride = 16;
    const auto in = make_inputs(p, test_seed());
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    std::vector<float> o(in.q.size()), lse(2 * 16, 99.0f);
    ASSERT_TRUE(
        attention_forward_cpu(p, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data()).ok());
    for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 10; ++i) EXPECT_NEAR(lse[h * 16 + i], ref.lse[h * 10 + i], 1e-5);
        for (int i = 10; i < 16; ++i) EXPECT_EQ(lse[h * 16 + i], 99.0f);
    }
}

TEST(AttentionCpu, ExtremeLogitsStayFiniteAndAccurate) {
    // Scores of magnitude up to ~1e4: the online softmax must never overflow.
    AttentionParams p = attention_params(40, 90, 2, 1, 16, true, 50, 0);
    p.scale = 2500.0f;
    const auto in = make_inputs(p, test_seed());
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(cpu::cpu_isa_name(isa));
        const Output out = run_cpu(isa, in);
        // Scores carry fp32 rounding of ~1e4 * 1e-7 * sqrt(d); with near one-hot rows that only
        // matters when two keys tie to within it.
        EXPECT_TRUE(all_close(out.lse, ref.lse, 1e-2, 1e-5, "lse"));
        EXPECT_TRUE(all_close(out.o, ref.o, 2e-2, 0, "o"));
    }
}

TEST(AttentionCpu, TwoRunsAreBitwiseIdentical) {
    const AttentionParams p = attention_params(130, 150, 4, 2, 72, true, 20, 0);
    const auto in = make_inputs(p, test_seed());
    for (CpuIsa isa : supported_isas()) {
        const Output a = run_cpu(isa, in);
        const Output b = run_cpu(isa, in);
        EXPECT_EQ(0, std::memcmp(a.o.data(), b.o.data(), a.o.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)));
    }
}

TEST(AttentionCpu, RejectsBadShapes) {
    float buf[16] = {};
    AttentionParams p = attention_params(1, 1, 3, 2, 4);
    EXPECT_EQ(attention_forward_cpu(p, buf, buf, buf, buf, buf).code(),
              StatusCode::kInvalidArgument);
    p = attention_params(1, 1, 2, 2, 300);
    EXPECT_EQ(attention_forward_cpu(p, buf, buf, buf, buf, buf).code(),
              StatusCode::kInvalidArgument);
    p = attention_params(1, 1, 2, 2, 4);
    p.scale = std::numeric_limits<float>::quiet_NaN();
    EXPECT_EQ(attention_forward_cpu(p, buf, buf, buf, buf, buf).code(),
              StatusCode::kInvalidArgument);
    p = attention_params(1, 1, 1, 1, 4);
    EXPECT_EQ(attention_forward_cpu(p, nullptr, buf, buf, buf, buf).code(),
              StatusCode::kInvalidArgument);
}

TEST(AttentionCpu, FlopCountCountsCausalMaskExactly) {
    AttentionParams p = attention_params(4, 4, 1, 1, 2, true);
    EXPECT_EQ(attended_entries(p), 1 + 2 + 3 + 4);
    EXPECT_DOUBLE_EQ(attention_forward_flops(p), 4.0 * 2 * 10);
    p.causal = false;
    EXPECT_EQ(attended_entries(p), 16);
}

}  // namespace
}  // namespace tandem::kernels
