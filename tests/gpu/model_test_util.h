#pragma once

// Small random models for the device-model tests (tandem_gpu_model, tandem_gpu_train): four
// architectures (Llama 3 with llama3 RoPE scaling and tied embeddings; Llama with every bias and
// linear scaling; Qwen2 with q/k/v biases and one KV head; Qwen3 with q/k norm and head_dim 64 !=
// hidden / heads), bf16-rounded random weights and a batch with a plain sequence, a prompt shared
// by two continuations and a prompt + completion. Test-only code.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/gpu/device_model.h"
#include "common/model/config.h"
#include "common/model/generate.h"
#include "common/model/grpo_batch.h"
#include "common/model/model_weights.h"
#include "common/model/params.h"
#include "common/model/trajectory.h"
#include "common/model/transformer.h"
#include "kernels/half.h"
#include "tests/gpu/cuda_test_util.h"

namespace tandem::gpu::testing {

struct Case {
    const char* name;
    model::ModelConfig config;
};

inline model::ModelConfig base_config() {
    model::ModelConfig c;
    c.vocab_size = 256;
    c.hidden_size = 128;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 352;
    c.max_seq_len = 64;
    c.rms_norm_eps = 1e-6;
    return c;
}

inline std::vector<Case> cases() {
    std::vector<Case> out;
    {
        model::ModelConfig c = base_config();  // Llama 3 style: tied, llama3 RoPE scaling
        c.rope_theta = 500000.0;
        c.rope_scaling.type = model::RopeScaling::Type::kLlama3;
        c.rope_scaling.factor = 8.0;
        c.rope_scaling.original_max_position_embeddings = 16;
        out.push_back({"llama3", c});
    }
    {
        model::ModelConfig c = base_config();  // Llama with attention_bias and mlp_bias
        c.architecture = model::Architecture::kLlama;
        c.qkv_bias = c.o_bias = c.mlp_bias = true;
        c.tie_embeddings = false;
        c.rope_scaling.type = model::RopeScaling::Type::kLinear;
        c.rope_scaling.factor = 2.0;
        out.push_back({"llama_biases", c});
    }
    {
        model::ModelConfig c = base_config();  // Qwen2: q/k/v biases, untied, MQA-ish GQA
        c.architecture = model::Architecture::kQwen2;
        c.qkv_bias = true;
        c.tie_embeddings = false;
        c.num_kv_heads = 1;
        c.rope_theta = 1000000.0;
        out.push_back({"qwen2", c});
    }
    {
        model::ModelConfig c = base_config();  // Qwen3: q/k norm, head_dim != hidden / heads
        c.architecture = model::Architecture::kQwen3;
        c.qk_norm = true;
        c.explicit_head_dim = 64;
        c.rope_theta = 1000000.0;
        out.push_back({"qwen3", c});
    }
    return out;
}

// Random weights (normal, std 0.08; biases std 0.5; norms 1 + N(0, 0.1)) rounded to bf16.
inline std::vector<float> random_params(const model::ParamIndex& index, const model::ModelConfig& c,
                                        uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, 0.08f);
    std::vector<float> p(index.elements);
    for (auto& v : p) v = dist(rng);
    auto norm = [&](uint64_t off, int64_t len) {
        if (off == model::ParamIndex::kAbsent) return;
        for (int64_t i = 0; i < len; ++i) p[off + i] = 1.0f + dist(rng);
    };
    // Biases large enough that leaving one out moves the logits far beyond the tolerance.
    std::normal_distribution<float> big(0.0f, 0.5f);
    auto bias = [&](uint64_t off, int64_t len) {
        if (off == model::ParamIndex::kAbsent) return;
        for (int64_t i = 0; i < len; ++i) p[off + i] = big(rng);
    };
    for (const auto& l : index.layers) {
        bias(l.bq, c.q_dim());
        bias(l.bk, c.kv_dim());
        bias(l.bv, c.kv_dim());
        bias(l.bo, c.hidden_size);
        bias(l.bg, c.intermediate_size);
        bias(l.bu, c.intermediate_size);
        bias(l.bd, c.hidden_size);
        norm(l.input_norm, c.hidden_size);
        norm(l.post_norm, c.hidden_size);
        norm(l.q_norm, c.head_dim());
        norm(l.k_norm, c.head_dim());
    }
    norm(index.final_norm, c.hidden_size);
    kernels::round_to_16bit(p, true);
    return p;
}

inline std::vector<int32_t> random_tokens(int n, int vocab, std::mt19937_64& rng) {
    std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (auto& t : out) t = dist(rng);
    return out;
}

inline model::PackedBatch make_batch(int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    model::PackedBatch b;
    b.add_sequence(random_tokens(20, vocab, rng), 5);
    const int64_t prompt = b.add_prefix(random_tokens(9, vocab, rng));
    b.add_continuation(prompt, random_tokens(7, vocab, rng));
    b.add_continuation(prompt, random_tokens(12, vocab, rng));
    b.add(random_tokens(3, vocab, rng), random_tokens(10, vocab, rng));
    return b;
}

// A device model of `c` with random_params(seed) loaded; `params` receives the same values for the
// CPU reference. Null, with a test failure, when creating or loading fails.
inline std::unique_ptr<DeviceModel> random_device_model(kernels::cuda::testing::CudaFixture& f,
                                                        const model::ModelConfig& c, uint64_t seed,
                                                        std::vector<float>& params) {
    auto dm = DeviceModel::create(c, *f.alloc_, *f.gemm_, f.s());
    EXPECT_TRUE(dm.ok()) << dm.status().to_string();
    if (!dm.ok()) return nullptr;
    params = random_params((*dm)->index(), c, seed);
    const Status st = (*dm)->load(f.s(), params.data());
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) return nullptr;
    return std::move(*dm);
}

// Two groups of three trajectories with shared prompts; behaviour log-probs are the CPU policy's
// own plus noise, so ratios spread around 1 and some tokens clip.
inline std::vector<model::Trajectory> make_trajectories(const model::ModelConfig& c,
                                                        const model::ModelWeights& w,
                                                        uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<model::Trajectory> out;
    const int prompt_len[2] = {6, 9};
    for (int g = 0; g < 2; ++g) {
        const std::vector<int32_t> prompt = random_tokens(prompt_len[g], c.vocab_size, rng);
        for (int i = 0; i < 3; ++i) {
            model::Trajectory t;
            t.prompt = prompt;
            t.completion = random_tokens(4 + 3 * i + g, c.vocab_size, rng);
            t.reward = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
            t.group = static_cast<uint64_t>(g);
            out.push_back(std::move(t));
        }
    }
    model::PackedBatch packed;
    std::vector<int64_t> begin;
    model::pack_trajectories(out, 0, out.size(), true, packed, begin);
    auto tf = model::Transformer<float>::create(c);
    std::vector<float> lp(static_cast<size_t>(packed.num_tokens()));
    if (!tf.ok() || !tf->forward(w.data(), packed, 0.9, lp.data(), nullptr).ok()) return {};
    std::normal_distribution<float> noise(0.0f, 0.15f);
    for (size_t i = 0; i < out.size(); ++i) {
        for (size_t j = 0; j < out[i].completion.size(); ++j) {
            out[i].behaviour_logprobs.push_back(lp[begin[i] + static_cast<int64_t>(j)] +
                                                noise(rng));
        }
    }
    return out;
}

struct GreedyComparison {
    double worst_logprob_error = 0;  // largest log-prob |err| on the common prefixes
    int diverged = 0;                // samples whose tokens part at a near tie
};

// Greedy completions `got` against `want` (the CPU engine's, or the device's by another path),
// slot by slot: equal tokens with log-probs within lp_abs + 1e-2 |ref|, or a first divergence
// where the CPU reference's logits after the common prefix hold a near tie: |gap| between the two
// tokens <= tie_rms x the row's rms (printed, "<what> prompt P sample S: first divergence ...").
inline GreedyComparison expect_same_greedy(const std::string& what, const model::ModelConfig& c,
                                           const std::vector<float>& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const std::vector<model::Completion>& got,
                                           const std::vector<model::Completion>& want,
                                           double lp_abs, double tie_rms = 0.16) {
    GreedyComparison out;
    EXPECT_EQ(got.size(), want.size()) << what;
    auto ref = model::Transformer<float>::create(c);
    EXPECT_TRUE(ref.ok());
    for (size_t i = 0; i < std::min(got.size(), want.size()) && ref.ok(); ++i) {
        const auto& g = got[i];
        const auto& w = want[i];
        size_t k = 0;
        while (k < g.tokens.size() && k < w.tokens.size() && g.tokens[k] == w.tokens[k]) {
            const double e = std::abs(g.logprobs[k] - w.logprobs[k]);
            out.worst_logprob_error = std::max(out.worst_logprob_error, e);
            EXPECT_LE(e, lp_abs + 1e-2 * std::abs(w.logprobs[k]))
                << what << ": sample " << i << " token " << k;
            ++k;
        }
        if (k == g.tokens.size() && k == w.tokens.size()) continue;
        if (k == g.tokens.size() || k == w.tokens.size()) {
            ADD_FAILURE() << what << ": sample " << i << " has " << g.tokens.size()
                          << " tokens, want " << w.tokens.size();
            continue;
        }
        ++out.diverged;
        std::vector<int32_t> seq = prompts[static_cast<size_t>(w.prompt)];
        seq.insert(seq.end(), w.tokens.begin(), w.tokens.begin() + static_cast<long>(k));
        model::PackedBatch b;
        b.add_sequence(seq, 0);
        std::vector<float> lg(seq.size() * static_cast<size_t>(c.vocab_size));
        EXPECT_TRUE(ref->logits(params.data(), b, lg.data()).ok());
        const float* row = lg.data() + (seq.size() - 1) * c.vocab_size;
        double ss = 0;
        for (int j = 0; j < c.vocab_size; ++j) ss += double{row[j]} * row[j];
        const double rms = std::sqrt(ss / c.vocab_size);
        const double gap = std::abs(row[w.tokens[k]] - row[g.tokens[k]]);
        std::printf(
            "%s prompt %d sample %d: first divergence at token %zu, CPU logit gap %.4g (rms "
            "%.3g)\n",
            what.c_str(), w.prompt, w.sample, k, gap, rms);
        EXPECT_LE(gap, tie_rms * rms)
            << what << ": sample " << i << " diverges at token " << k << " without a near tie";
    }
    return out;
}

}  // namespace tandem::gpu::testing
