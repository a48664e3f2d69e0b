#pragma once

// Helpers for the Hugging Face model tests: small configurations of each supported architecture,
// random weights at a scale where every part matters, and an independent float64 forward pass
// written from the transformers modeling code (not from Tandem's engine).

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "common/model/config.h"
#include "common/model/model_weights.h"

namespace tandem::model::testing {

// A directory under the test temp dir, removed at the end of the test.
class HfTempDir {
public:
    HfTempDir() {
        path_ = ::testing::TempDir() + "/tandem_hf_" + std::to_string(::getpid()) + "_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~HfTempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// Llama with every optional part: GQA, explicit head_dim (q_dim != hidden), untied head, llama3
// RoPE scaling, attention and MLP biases.
inline ModelConfig llama_full_config() {
    ModelConfig c;
    c.architecture = Architecture::kLlama;
    c.vocab_size = 37;
    c.hidden_size = 24;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.explicit_head_dim = 8;
    c.intermediate_size = 20;
    c.max_seq_len = 64;
    c.rope_theta = 500000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = false;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.rope_scaling = {RopeScaling::Type::kLlama3, 8.0, 1.0, 4.0, 16};
    return c;
}

inline ModelConfig qwen2_config() {
    ModelConfig c;
    c.architecture = Architecture::kQwen2;
    c.vocab_size = 41;
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 24;
    c.max_seq_len = 64;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = true;
    c.qkv_bias = true;
    return c;
}

inline ModelConfig qwen3_config() {
    ModelConfig c;
    c.architecture = Architecture::kQwen3;
    c.vocab_size = 43;
    c.hidden_size = 16;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 1;
    c.explicit_head_dim = 6;
    c.intermediate_size = 20;
    c.max_seq_len = 64;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = false;
    c.qk_norm = true;
    c.rope_scaling = {RopeScaling::Type::kLinear, 2.0, 1.0, 4.0, 8192};
    return c;
}

// Norm weights 1 + 0.2 N(0,1), biases 0.2 N(0,1), embeddings N(0,1), matrices N(0, 1/in).
inline ModelWeights hf_random_weights(const ModelConfig& c, uint64_t seed) {
    auto w = ModelWeights::zeros(c);
    EXPECT_TRUE(w.ok()) << w.status().to_string();
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n01(0.0, 1.0);
    for (const auto& t : w->layout().tensors()) {
        float* p = w->data() + t.offset / 4;
        const bool norm = t.name.find("norm.weight") != std::string::npos;
        const bool bias = t.name.ends_with(".bias");
        const bool embed = t.name == "model.embed_tokens.weight";
        const double in = static_cast<double>(t.shape.back());
        for (uint64_t i = 0; i < t.elements(); ++i) {
            const double r = n01(rng);
            p[i] = static_cast<float>(norm    ? 1.0 + 0.2 * r
                                      : bias  ? 0.2 * r
                                      : embed ? r
                                              : r / std::sqrt(in));
        }
    }
    return std::move(w).value();
}

// transformers' inverse frequencies, written from modeling_rope_utils.py in float64.
inline std::vector<double> reference_inv_freq(const ModelConfig& c) {
    const int d = c.head_dim();
    std::vector<double> inv;
    for (int i = 0; i < d; i += 2) inv.push_back(1.0 / std::pow(c.rope_theta, double(i) / d));
    const RopeScaling& r = c.rope_scaling;
    if (r.type == RopeScaling::Type::kLinear) {
        for (double& f : inv) f = f / r.factor;
    } else if (r.type == RopeScaling::Type::kLlama3) {
        const double old_len = r.original_max_position_embeddings;
        const double low_freq_wavelen = old_len / r.low_freq_factor;
        const double high_freq_wavelen = old_len / r.high_freq_factor;
        for (double& f : inv) {
            const double wavelen = 2 * M_PI / f;
            double llama = wavelen > low_freq_wavelen ? f / r.factor : f;
            const double smooth_factor =
                (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
            const double smoothed = (1 - smooth_factor) * llama / r.factor + smooth_factor * llama;
            const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            f = medium ? smoothed : llama;
        }
    }
    return inv;
}

// Logits [T, vocab] of one sequence, float64 throughout, from the weights by tensor name.
inline std::vector<double> reference_logits(const ModelWeights& weights,
                                            const std::vector<int32_t>& tokens) {
    const ModelConfig& c = weights.config();
    auto W = [&](const std::string& name) -> std::vector<double> {
        const auto* t = weights.layout().find(name);
        if (!t) return {};
        const float* p = weights.data() + t->offset / 4;
        return std::vector<double>(p, p + t->elements());
    };
    const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden_size, d = c.head_dim(),
                  hq = c.num_heads, hkv = c.num_kv_heads, I = c.intermediate_size, V = c.vocab_size;
    auto rmsnorm = [&](const std::vector<double>& x, int64_t rows, int64_t w,
                       const std::vector<double>& g) {
        std::vector<double> y(x.size());
        for (int64_t r = 0; r < rows; ++r) {
            double ss = 0;
            for (int64_t j = 0; j < w; ++j) ss += x[r * w + j] * x[r * w + j];
            const double s = 1.0 / std::sqrt(ss / w + c.rms_norm_eps);
            for (int64_t j = 0; j < w; ++j) y[r * w + j] = x[r * w + j] * s * g[j];
        }
        return y;
    };
    auto linear = [&](const std::vector<double>& x, int64_t in, const std::string& name,
                      int64_t out) {
        const auto w = W(name + ".weight");
        const auto b = W(name + ".bias");
        std::vector<double> y(static_cast<size_t>(T * out));
        for (int64_t r = 0; r < T; ++r)
            for (int64_t o = 0; o < out; ++o) {
                double s = b.empty() ? 0.0 : b[o];
                for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
                y[r * out + o] = s;
            }
        return y;
    };
    const auto inv = reference_inv_freq(c);
    auto rope = [&](std::vector<double>& x, int64_t heads) {
        for (int64_t r = 0; r < T; ++r)
            for (int64_t h = 0; h < heads; ++h)
                for (int64_t i = 0; i < d / 2; ++i) {
                    double* v = &x[(r * heads + h) * d];
                    const double a = r * inv[i], x1 = v[i], x2 = v[i + d / 2];
                    v[i] = x1 * std::cos(a) - x2 * std::sin(a);
                    v[i + d / 2] = x2 * std::cos(a) + x1 * std::sin(a);
                }
    };
    const auto embed = W("model.embed_tokens.weight");
    std::vector<double> x(static_cast<size_t>(T * H));
    for (int64_t r = 0; r < T; ++r)
        for (int64_t j = 0; j < H; ++j) x[r * H + j] = embed[tokens[r] * H + j];
    for (int l = 0; l < c.num_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        const auto a = rmsnorm(x, T, H, W(p + "input_layernorm.weight"));
        auto q = linear(a, H, p + "self_attn.q_proj", hq * d);
        auto k = linear(a, H, p + "self_attn.k_proj", hkv * d);
        const auto v = linear(a, H, p + "self_attn.v_proj", hkv * d);
        if (c.qk_norm) {
            q = rmsnorm(q, T * hq, d, W(p + "self_attn.q_norm.weight"));
            k = rmsnorm(k, T * hkv, d, W(p + "self_attn.k_norm.weight"));
        }
        rope(q, hq);
        rope(k, hkv);
        std::vector<double> o(static_cast<size_t>(T * hq * d), 0.0);
        for (int64_t h = 0; h < hq; ++h) {
            const int64_t kh = h / (hq / hkv);
            for (int64_t i = 0; i < T; ++i) {
                std::vector<double> s(static_cast<size_t>(i + 1));
                double m = -1e300;
                for (int64_t j = 0; j <= i; ++j) {
                    double dot = 0;
                    for (int64_t e = 0; e < d; ++e)
                        dot += q[(i * hq + h) * d + e] * k[(j * hkv + kh) * d + e];
                    s[j] = dot / std::sqrt(double(d));
                    m = std::max(m, s[j]);
                }
                double z = 0;
                for (auto& e : s) z += (e = std::exp(e - m));
                for (int64_t j = 0; j <= i; ++j)
                    for (int64_t e = 0; e < d; ++e)
                        o[(i * hq + h) * d + e] += s[j] / z * v[(j * hkv + kh) * d + e];
            }
        }
        const auto ao = linear(o, hq * d, p + "self_attn.o_proj", H);
        for (size_t i = 0; i < x.size(); ++i) x[i] += ao[i];
        const auto b = rmsnorm(x, T, H, W(p + "post_attention_layernorm.weight"));
        const auto g = linear(b, H, p + "mlp.gate_proj", I);
        const auto u = linear(b, H, p + "mlp.up_proj", I);
        std::vector<double> s(g.size());
        for (size_t i = 0; i < g.size(); ++i) s[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
        const auto mo = linear(s, I, p + "mlp.down_proj", H);
        for (size_t i = 0; i < x.size(); ++i) x[i] += mo[i];
    }
    const auto f = rmsnorm(x, T, H, W("model.norm.weight"));
    const auto head = c.tie_embeddings ? embed : W("lm_head.weight");
    std::vector<double> logits(static_cast<size_t>(T * V));
    for (int64_t r = 0; r < T; ++r)
        for (int64_t o = 0; o < V; ++o) {
            double s = 0;
            for (int64_t j = 0; j < H; ++j) s += f[r * H + j] * head[o * H + j];
            logits[r * V + o] = s;
        }
    return logits;
}

}  // namespace tandem::model::testing
