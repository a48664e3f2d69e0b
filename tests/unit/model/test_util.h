#pragma once

// Shared helpers for the model tests: tiny configurations, random fills and a finite-difference
// gradient checker.

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "common/model/config.h"

namespace tandem::model::testing {

// A model small enough for finite differences over every parameter, with GQA (4 query heads on
// 2 key/value heads) and an odd intermediate size.
inline ModelConfig tiny_config(bool tied = true) {
    ModelConfig c;
    c.vocab_size = 7;
    c.hidden_size = 8;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 12;
    c.max_seq_len = 16;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = tied;
    return c;
}

template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed, double scale = 1.0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> dist(0.0, scale);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(dist(rng));
    return v;
}

// Central differences of f at every x[i] (x is restored), compared with analytic[i]:
// |analytic - numeric| <= atol + rtol * |numeric|. Returns the largest absolute error.
inline double check_gradient(std::vector<double>& x, const std::vector<double>& analytic,
                             const std::function<double()>& f, double atol = 1e-7,
                             double rtol = 1e-6, double eps = 1e-5, const char* what = "") {
    double worst = 0;
    int failures = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double keep = x[i];
        x[i] = keep + eps;
        const double fp = f();
        x[i] = keep - eps;
        const double fm = f();
        x[i] = keep;
        const double numeric = (fp - fm) / (2 * eps);
        const double err = std::abs(analytic[i] - numeric);
        worst = std::max(worst, err);
        if (!(err <= atol + rtol * std::abs(numeric)) && failures++ < 5) {
            ADD_FAILURE() << what << " element " << i << ": analytic " << analytic[i] << " numeric "
                          << numeric;
        }
    }
    return worst;
}

// The context-parallel tests' model: 2 layers, GQA (4 query heads on 2 key/value heads), a
// 15-token vocabulary, 96 positions.
inline ModelConfig context_parallel_config() {
    ModelConfig c;
    c.vocab_size = 15;
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 48;
    c.max_seq_len = 96;
    return c;
}

// One prompt per length: token 1, then a fixed pattern over tokens 3..12, then 14 (when the
// length is above 1).
inline std::vector<std::vector<int32_t>> context_parallel_prompts(
    std::initializer_list<int> lengths) {
    std::vector<std::vector<int32_t>> ps;
    for (const int len : lengths) {
        std::vector<int32_t> p{1};
        for (int i = 1; i < len - 1; ++i) p.push_back(3 + (i * 7 + len) % 10);
        if (len > 1) p.push_back(14);
        ps.push_back(p);
    }
    return ps;
}

}  // namespace tandem::model::testing
