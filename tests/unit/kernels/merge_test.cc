// Log-sum-exp merge of attention partials against the double reference over all keys.
//
// Partials are exact (double reference on each key chunk, rounded to fp32), so the tolerance
// covers only the merge's own fp32 rounding: o |err| <= 1e-5 + 1e-5 |ref|, lse <= 1e-5 |ref| +
// 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/merge.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::attention_params;
using testkit::make_inputs;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_float;

using testkit::kNegInf;

struct Partials {
    AttentionParams full;
    testkit::ReferenceForward ref;  // over all keys
    std::vector<std::vector<float>> o, lse;
};

// Splits the keys of `full` at `cuts` (sorted, may repeat: empty chunks) and computes each
// chunk's exact partial.
Partials make_partials(const AttentionParams& full, const std::vector<int64_t>& cuts,
                       uint64_t seed) {
    Partials out;
    out.full = full;
    const auto in = make_inputs(full, seed);
    out.ref = reference_forward(full, in.qd, in.kd, in.vd);
    std::vector<int64_t> b = {0};
    b.insert(b.end(), cuts.begin(), cuts.end());
    b.push_back(full.tk);
    const size_t row = static_cast<size_t>(full.hkv * full.d);
    for (size_t c = 0; c + 1 < b.size(); ++c) {
        AttentionParams p = full;
        p.tk = b[c + 1] - b[c];
        p.k_pos0 = full.k_pos0 + b[c];
        std::vector<double> k(in.kd.begin() + b[c] * row, in.kd.begin() + b[c + 1] * row);
        std::vector<double> v(in.vd.begin() + b[c] * row, in.vd.begin() + b[c + 1] * row);
        const auto part = reference_forward(p, in.qd, k, v);
        out.o.push_back(to_float(part.o));
        out.lse.push_back(to_float(part.lse));
    }
    return out;
}

std::vector<int64_t> random_cuts(int64_t tk, int n, std::mt19937_64& rng) {
    std::uniform_int_distribution<int64_t> dist(0, tk);
    std::vector<int64_t> cuts(static_cast<size_t>(n));
    for (auto& c : cuts) c = dist(rng);
    std::sort(cuts.begin(), cuts.end());
    return cuts;
}

::testing::AssertionResult close_to_ref(const Partials& parts, const std::vector<float>& o,
                                        const std::vector<float>& lse) {
    auto r = all_close(o, parts.ref.o, 1e-5, 1e-5, "o");
    if (!r) return r;
    return all_close(lse, parts.ref.lse, 1e-5, 1e-5, "lse");
}

// Merges parts in `order` sequentially with merge_attention_into.
void merge_sequential(const Partials& parts, const std::vector<size_t>& order,
                      std::vector<float>& o, std::vector<float>& lse) {
    const auto& p = parts.full;
    o.assign(parts.o[0].size(), 0.0f);
    lse.assign(parts.lse[0].size(), kNegInf);
    for (size_t i : order) {
        merge_attention_into(p.tq, p.hq, p.d, o.data(), lse.data(), parts.o[i].data(),
                             parts.lse[i].data());
    }
}

TEST(AttentionMerge, RandomSplitsInEveryOrderMatchTheFullResult) {
    std::mt19937_64 rng(test_seed());
    for (int trial = 0; trial < 6; ++trial) {
        const AttentionParams p = attention_params(9, 60, 3, 1, 12, trial % 2 == 1, 40);
        const Partials parts = make_partials(p, random_cuts(p.tk, 3, rng), test_seed() + trial);
        std::vector<size_t> order(parts.o.size());
        std::iota(order.begin(), order.end(), 0);
        do {
            std::vector<float> o, lse;
            merge_sequential(parts, order, o, lse);
            ASSERT_TRUE(close_to_ref(parts, o, lse)) << "trial " << trial;
            // One-pass merge of the same permutation.
            std::vector<AttentionPartial> views;
            for (size_t i : order) views.push_back({parts.o[i].data(), parts.lse[i].data()});
            ASSERT_TRUE(merge_attention(views, p.tq, p.hq, p.d, o.data(), lse.data()).ok());
            ASSERT_TRUE(close_to_ref(parts, o, lse)) << "trial " << trial;
        } while (std::next_permutation(order.begin(), order.end()));
    }
}

TEST(AttentionMerge, TreeAndChainOrdersAgree) {
    const AttentionParams p = attention_params(7, 80, 2, 2, 10);
    const Partials parts = make_partials(p, {10, 30, 55}, test_seed());
    std::vector<float> o01 = parts.o[0], l01 = parts.lse[0];
    merge_attention_into(p.tq, p.hq, p.d, o01.data(), l01.data(), parts.o[1].data(),
                         parts.lse[1].data());
    std::vector<float> o23 = parts.o[2], l23 = parts.lse[2];
    merge_attention_into(p.tq, p.hq, p.d, o23.data(), l23.data(), parts.o[3].data(),
                         parts.lse[3].data());
    merge_attention_into(p.tq, p.hq, p.d, o01.data(), l01.data(), o23.data(), l23.data());
    EXPECT_TRUE(close_to_ref(parts, o01, l01));
}

TEST(AttentionMerge, EmptyChunksAreTheIdentity) {
    const AttentionParams p = attention_params(5, 40, 2, 1, 8);
    const Partials parts = make_partials(p, {0, 0, 20, 20, 40}, test_seed());  // 3 empty chunks
    ASSERT_EQ(parts.o.size(), 6u);
    std::vector<size_t> order = {5, 0, 1, 3, 2, 4};
    std::vector<float> o, lse;
    merge_sequential(parts, order, o, lse);
    EXPECT_TRUE(close_to_ref(parts, o, lse));
    // An empty partial whose o holds garbage (even NaN) must not leak into the result.
    std::vector<float> garbage(parts.o[0].size(), std::numeric_limits<float>::quiet_NaN());
    std::vector<float> empty_lse(parts.lse[0].size(), kNegInf);
    merge_attention_into(p.tq, p.hq, p.d, o.data(), lse.data(), garbage.data(), empty_lse.data());
    EXPECT_TRUE(close_to_ref(parts, o, lse));
    std::vector<AttentionPartial> views = {{garbage.data(), empty_lse.data()},
                                           {parts.o[2].data(), parts.lse[2].data()},
                                           {parts.o[4].data(), parts.lse[4].data()}};
    ASSERT_TRUE(merge_attention(views, p.tq, p.hq, p.d, o.data(), lse.data()).ok());
    EXPECT_TRUE(close_to_ref(parts, o, lse));
}

TEST(AttentionMerge, ExtremeLogitsMergeWithoutOverflow) {
    // Scores scaled to about +-1e4: lse values near 1e4, weights exp(-1e4) underflow to 0.
    AttentionParams p = attention_params(6, 64, 2, 1, 16);
    p.scale = 2500.0f;
    std::mt19937_64 rng(test_seed());
    const Partials parts = make_partials(p, random_cuts(p.tk, 3, rng), test_seed());
    std::vector<size_t> order = {3, 1, 0, 2};
    std::vector<float> o, lse;
    merge_sequential(parts, order, o, lse);
    EXPECT_TRUE(all_close(o, parts.ref.o, 1e-5, 1e-5, "o"));
    EXPECT_TRUE(all_close(lse, parts.ref.lse, 1e-5, 1e-6, "lse"));
    // Negative extreme: every lse near -1e4.
    for (auto& l : parts.lse) {
        for (float x : l) EXPECT_TRUE(std::isfinite(x) || x == kNegInf);
    }
}

TEST(AttentionMerge, FullyMaskedRowsStayMinusInfinityWithZeroOutput) {
    // Causal with queries before every key: every chunk is empty for every row.
    AttentionParams p = attention_params(4, 30, 2, 2, 8, true, 0);
    p.k_pos0 = 10;
    const Partials parts = make_partials(p, {10, 20}, test_seed());
    std::vector<float> o, lse;
    merge_sequential(parts, {2, 0, 1}, o, lse);
    for (float x : lse) EXPECT_EQ(x, kNegInf);
    for (float x : o) EXPECT_EQ(x, 0.0f);
    std::vector<AttentionPartial> views;
    for (size_t i = 0; i < parts.o.size(); ++i)
        views.push_back({parts.o[i].data(), parts.lse[i].data()});
    ASSERT_TRUE(merge_attention(views, p.tq, p.hq, p.d, o.data(), lse.data()).ok());
    for (float x : lse) EXPECT_EQ(x, kNegInf);
    for (float x : o) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace tandem::kernels
