// RoPE variants (default, linear, llama3) against a float64 reference written from transformers'
// modeling_rope_utils.py, and the engine's rotation tables against a direct float64 rotation.
#include <cmath>

#include <gtest/gtest.h>

#include "common/model/decoder_layer.h"
#include "tests/unit/model/hf_test_util.h"
#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

ModelConfig rope_config(RopeScaling scaling, int head_dim, double theta, int max_pos) {
    ModelConfig c;
    c.vocab_size = 8;
    c.hidden_size = head_dim * 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.max_seq_len = max_pos;
    c.rope_theta = theta;
    c.rope_scaling = scaling;
    return c;
}

struct Case {
    const char* name;
    ModelConfig config;
};

std::vector<Case> cases() {
    using T = RopeScaling::Type;
    return {
        {"default_llama2", rope_config({}, 128, 10000.0, 4096)},
        {"default_qwen3", rope_config({}, 128, 1000000.0, 40960)},
        {"linear_x4", rope_config({T::kLinear, 4.0}, 64, 10000.0, 8192)},
        {"llama3_1_8b", rope_config({T::kLlama3, 8.0, 1.0, 4.0, 8192}, 128, 500000.0, 131072)},
        {"llama3_2_1b", rope_config({T::kLlama3, 32.0, 1.0, 4.0, 8192}, 64, 500000.0, 131072)},
    };
}

TEST(Rope, InverseFrequenciesMatchTheFloat64Reference) {
    for (const Case& k : cases()) {
        const ModelConfig& c = k.config;
        const auto got = rope_inv_freq(c.head_dim(), c.rope_theta, c.rope_scaling);
        const auto want = testing::reference_inv_freq(c);
        ASSERT_EQ(got.size(), want.size()) << k.name;
        for (size_t i = 0; i < got.size(); ++i) {
            EXPECT_NEAR(got[i], want[i], 1e-14 * want[i]) << k.name << " " << i;
        }
    }
}

TEST(Rope, Llama3ScalingCoversAllThreeBands) {
    // Kept (short wavelengths), divided by the factor (long) and interpolated (between): the
    // reference comparison above exercises each band.
    const ModelConfig c = cases()[3].config;
    const auto base = rope_inv_freq(c.head_dim(), c.rope_theta, RopeScaling{});
    const auto scaled = rope_inv_freq(c.head_dim(), c.rope_theta, c.rope_scaling);
    int kept = 0, divided = 0, between = 0;
    for (size_t i = 0; i < base.size(); ++i) {
        const double r = scaled[i] / base[i];
        if (std::abs(r - 1.0) < 1e-15) {
            ++kept;
        } else if (std::abs(r - 1.0 / c.rope_scaling.factor) < 1e-15) {
            ++divided;
        } else {
            EXPECT_GT(r, 1.0 / c.rope_scaling.factor);
            EXPECT_LT(r, 1.0);
            ++between;
        }
    }
    EXPECT_GT(kept, 0);
    EXPECT_GT(divided, 0);
    EXPECT_GT(between, 0);
}

template <typename T>
void check_rotation(const Case& k, double tolerance) {
    const ModelConfig& c = k.config;
    const RopeTable<T> table = make_rope_table<T>(c);
    const auto inv = testing::reference_inv_freq(c);
    const int d = c.head_dim(), heads = 3;
    const std::vector<int32_t> pos = {0, 1, 7, 100, 4095, c.max_seq_len - 1};
    const int64_t n = static_cast<int64_t>(pos.size());
    const auto x0 = testing::random_vector<double>(static_cast<size_t>(n * heads * d), 5);
    std::vector<T> x(x0.begin(), x0.end());
    rope_apply<T>(n, heads, pos.data(), table, x.data(), false);
    for (int64_t r = 0; r < n; ++r) {
        for (int h = 0; h < heads; ++h) {
            const double* v = &x0[(r * heads + h) * d];
            for (int i = 0; i < d / 2; ++i) {
                const double a = pos[r] * inv[i];
                const double want1 = v[i] * std::cos(a) - v[i + d / 2] * std::sin(a);
                const double want2 = v[i + d / 2] * std::cos(a) + v[i] * std::sin(a);
                const size_t at = static_cast<size_t>((r * heads + h) * d + i);
                ASSERT_NEAR(x[at], want1, tolerance) << k.name << " pos " << pos[r] << " i " << i;
                ASSERT_NEAR(x[at + d / 2], want2, tolerance)
                    << k.name << " pos " << pos[r] << " i " << i;
            }
        }
    }
    // The inverse rotation (the backward) undoes it.
    rope_apply<T>(n, heads, pos.data(), table, x.data(), true);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], x0[i], 4 * tolerance) << k.name;
}

TEST(Rope, DoubleTablesRotateAsTheReference) {
    for (const Case& k : cases()) check_rotation<double>(k, 1e-10);  // angles up to 1.3e5 rad
}

TEST(Rope, FloatTablesRotateWithinFloatRounding) {
    for (const Case& k : cases()) check_rotation<float>(k, 2e-6);
}

}  // namespace
}  // namespace tandem::model
