// System-prompt KV cache: prefilled once per weight version and reused by every group,
// invalidated by a new version, shifted reuse by RoPE re-rotation measured against a full
// recompute.
#include "common/model/kv_prefix_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "common/model/generate.h"
#include "common/model/kv_admission.h"
#include "common/model/model_weights.h"
#include "tests/unit/model/kv_test_util.h"

namespace tandem::model {
namespace {

using kernels::KvDType;

std::vector<int32_t> seq(int n, uint32_t seed) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u) % 14);
    return t;
}

std::vector<std::vector<int32_t>> prompts_with(const std::vector<int32_t>& system) {
    std::vector<std::vector<int32_t>> ps;
    for (uint32_t s = 1; s <= 4; ++s) {
        auto p = system;
        const auto tail = seq(3 + static_cast<int>(s), 100 + s);
        p.insert(p.end(), tail.begin(), tail.end());
        ps.push_back(std::move(p));
    }
    return ps;
}

ModelWeights weights(const ModelConfig& c, uint64_t seed) {
    auto w = ModelWeights::random(c, seed, 0.1);
    EXPECT_TRUE(w.ok());
    return std::move(w).value();
}

void expect_same_tokens(const std::vector<Completion>& a, const std::vector<Completion>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].tokens, b[i].tokens) << i;
        for (size_t j = 0; j < a[i].logprobs.size() && j < b[i].logprobs.size(); ++j) {
            EXPECT_NEAR(a[i].logprobs[j], b[i].logprobs[j], 1e-4) << i;
        }
    }
}

TEST(SystemPromptCache, PrefilledOncePerVersionReusedAndInvalidatedOnANewVersion) {
    const ModelConfig c = testing::kv_test_config(96);
    const auto system = seq(40, 7);
    const auto ps = prompts_with(system);
    SamplingOptions so;
    so.max_new_tokens = 8;
    so.seed = 11;
    GeneratorOptions plain;
    plain.block_tokens = 8;
    GeneratorOptions cached = plain;
    cached.prefix.auto_tokens = 40;
    cached.prefix.dtype = KvDType::kF32;  // exact reuse: same tokens as recomputing
    auto ref = GroupGenerator::create(c, plain);
    auto gen = GroupGenerator::create(c, cached);
    ASSERT_TRUE(ref.ok() && gen.ok());
    const ModelWeights w1 = weights(c, 1), w2 = weights(c, 2);

    gen->set_weights_version(1);
    GenerateStats s_ref, s_gen;
    auto a = ref->generate(w1.data(), ps, 4, so, &s_ref);
    auto b = gen->generate(w1.data(), ps, 4, so, &s_gen);
    ASSERT_TRUE(a.ok() && b.ok()) << b.status().to_string();
    expect_same_tokens(*a, *b);
    auto b2 = gen->generate(w1.data(), ps, 4, so);  // same version: reused
    ASSERT_TRUE(b2.ok());
    expect_same_tokens(*a, *b2);
    const PrefixCacheStats* st = gen->prefix_stats();
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->prefills, 1);
    EXPECT_EQ(st->hits, 8);
    EXPECT_EQ(st->evictions, 0);
    EXPECT_GT(st->bytes, 0);
    // Prompt tokens prefilled per batch: only the suffixes.
    EXPECT_EQ(s_gen.prompt_tokens, s_ref.prompt_tokens - 4 * 40);
    // The job metrics kv/prefix_hits and kv/prefix_bytes.
    EXPECT_EQ(s_gen.kv_prefix_hits, 4);
    EXPECT_EQ(s_gen.kv_prefix_bytes, st->bytes);
    EXPECT_EQ(s_ref.kv_prefix_bytes, 0);
    EXPECT_EQ(s_ref.kv_prefix_hits, 0);

    // A new version: the cached KV of version 1 must not be used with version 2's weights.
    gen->set_weights_version(2);
    GenerateStats s3;
    auto c2 = gen->generate(w2.data(), ps, 4, so, &s3);
    auto r2 = ref->generate(w2.data(), ps, 4, so);
    ASSERT_TRUE(c2.ok() && r2.ok());
    expect_same_tokens(*r2, *c2);
    EXPECT_EQ(st->prefills, 2);
    EXPECT_EQ(st->evictions, 1);
    EXPECT_EQ(s3.kv_evictions, 1);
}

TEST(SystemPromptCache, HeavierPrefixFormatStaysCloseAndCostsLess) {
    const ModelConfig c = testing::kv_test_config(96);
    const auto system = seq(40, 9);
    const auto ps = prompts_with(system);
    SamplingOptions so;
    so.max_new_tokens = 4;
    so.seed = 5;
    GeneratorOptions f32o, int8o;
    f32o.block_tokens = int8o.block_tokens = 8;
    f32o.prefix.auto_tokens = int8o.prefix.auto_tokens = 40;
    f32o.prefix.dtype = KvDType::kF32;
    int8o.prefix.dtype = KvDType::kInt8;
    auto a = GroupGenerator::create(c, f32o);
    auto b = GroupGenerator::create(c, int8o);
    ASSERT_TRUE(a.ok() && b.ok());
    const ModelWeights w = weights(c, 3);
    ASSERT_TRUE(a->generate(w.data(), ps, 2, so).ok());
    ASSERT_TRUE(b->generate(w.data(), ps, 2, so).ok());
    EXPECT_LT(b->prefix_stats()->bytes * 3, a->prefix_stats()->bytes);
}

// Reuse under a shifted position: `head` tokens inserted before the system prompt. The cached
// prefix (computed at offset 0) is appended with its keys re-rotated by the shift; the next-token
// distribution is compared with a full recompute of the same prompt.
TEST(SystemPromptCache, ShiftedReuseByRotationIsCloseToAFullRecompute) {
    const ModelConfig c = testing::kv_test_config(96);
    const ModelWeights w = weights(c, 4);
    const auto system = seq(40, 13);
    auto engine = InferenceEngine::create(c);
    ASSERT_TRUE(engine.ok());
    const int V = c.vocab_size;
    auto logprobs = [&](const std::vector<float>& lg) {
        double mx = -1e300, sum = 0;
        for (float x : lg) mx = std::max<double>(mx, x);
        for (float x : lg) sum += std::exp(x - mx);
        std::vector<double> out;
        for (float x : lg) out.push_back(x - mx - std::log(sum));
        return out;
    };
    for (int shift : {1, 5, 17}) {
        SCOPED_TRACE("shift " + std::to_string(shift));
        auto prompt = seq(shift, 50 + shift);
        prompt.insert(prompt.end(), system.begin(), system.end());
        const auto tail = seq(6, 77);
        prompt.insert(prompt.end(), tail.begin(), tail.end());
        // Full recompute.
        PagedKvCache full(c, 8);
        const auto fs = full.create();
        std::vector<float> ref(static_cast<size_t>(V)), got(ref.size());
        const ForwardItem fi{fs, prompt};
        ASSERT_TRUE(engine->forward(w.data(), full, std::span(&fi, 1), ref.data()).ok());
        // Rotated reuse.
        PagedKvCache cache(c, 8);
        PrefixCacheOptions po;
        po.auto_tokens = 40;
        po.dtype = KvDType::kF32;
        SystemPromptCache pc(po);
        pc.set(system, 1, cache);
        ASSERT_TRUE(pc.ensure(*engine, w.data(), cache).ok());
        const auto off = pc.find(prompt);
        ASSERT_TRUE(off.has_value());
        EXPECT_EQ(*off, shift);
        auto s = pc.start(*engine, w.data(), cache, prompt, *off);
        ASSERT_TRUE(s.ok()) << s.status().to_string();
        EXPECT_EQ(cache.length(*s), shift + 40);
        const ForwardItem ri{*s, std::span(prompt).subspan(static_cast<size_t>(shift + 40))};
        ASSERT_TRUE(engine->forward(w.data(), cache, std::span(&ri, 1), got.data()).ok());
        const auto lr = logprobs(ref), lg = logprobs(got);
        double worst = 0, kl = 0;
        for (int j = 0; j < V; ++j) {
            worst = std::max(worst, std::fabs(lr[j] - lg[j]));
            kl += std::exp(lr[j]) * (lr[j] - lg[j]);
        }
        std::printf("shift %d: max |dlogprob| %.4g, KL %.4g (rotated reuse vs recompute)\n", shift,
                    worst, kl);
        RecordProperty("shift_" + std::to_string(shift) + "_max_dlogprob", std::to_string(worst));
        EXPECT_LE(worst, 0.5);
        EXPECT_GE(kl, -1e-9);
        EXPECT_EQ(pc.stats().shifted_hits, 1);
    }
}

// rollout.kv_cache.budget_bytes covers the pinned prefix: a budget that holds every prompt's
// sequences but not them plus the prefix queues prompts into more waves (same tokens), and one
// that holds a prompt alone but not with the prefix refuses the batch, naming the prefix.
TEST(SystemPromptCache, BudgetCountsThePinnedPrefix) {
    const ModelConfig c = testing::kv_test_config(96);
    const auto system = seq(40, 21);
    const auto ps = prompts_with(system);
    SamplingOptions so;
    so.max_new_tokens = 8;
    so.seed = 19;
    constexpr int kGroup = 4;
    GeneratorOptions o;
    o.block_tokens = 8;
    o.prefix.auto_tokens = 40;
    o.prefix.dtype = KvDType::kF32;
    const ModelWeights w = weights(c, 6);
    auto unlimited = GroupGenerator::create(c, o);
    ASSERT_TRUE(unlimited.ok());
    GenerateStats s_free;
    auto ref = unlimited->generate(w.data(), ps, kGroup, so, &s_free);
    ASSERT_TRUE(ref.ok()) << ref.status().to_string();
    const int64_t prefix = unlimited->prefix_stats()->bytes;
    ASSERT_GT(prefix, 0);
    EXPECT_EQ(s_free.kv_prefix_bytes, prefix);
    // What the prompts' own sequences need (each forks the 40 prefix tokens).
    PagedKvCache probe(c, 8);
    int64_t all = 0, largest = 0;
    for (const auto& p : ps) {
        const int64_t need = worst_case_kv_bytes(probe, std::ssize(p) - 40, kGroup, 8);
        all += need;
        largest = std::max(largest, need);
    }

    auto run = [&](int64_t budget, GenerateStats* st) {
        GeneratorOptions b = o;
        b.kv_budget_bytes = budget;
        auto g = GroupGenerator::create(c, b);
        EXPECT_TRUE(g.ok());
        return g->generate(w.data(), ps, kGroup, so, st);
    };
    GenerateStats fits, tight;
    auto a = run(all + prefix, &fits);  // sequences and prefix: one wave
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ(fits.kv_waves, 1);
    EXPECT_LE(fits.kv_peak_bytes, all + prefix);
    auto b = run(all + prefix / 2, &tight);  // the sequences fit, not with the prefix: queued
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    EXPECT_GE(tight.kv_waves, 2);
    EXPECT_GE(tight.kv_admission_waits, 1);
    EXPECT_LE(tight.kv_peak_bytes, all + prefix / 2);
    ASSERT_EQ(b->size(), ref->size());
    for (size_t i = 0; i < b->size(); ++i) EXPECT_EQ((*b)[i].tokens, (*ref)[i].tokens) << i;
    EXPECT_EQ(unlimited->prefix_stats()->prefills, 1);
    // The largest prompt fits the budget alone, not with the prefix: refused, naming it.
    auto refused = run(largest + prefix / 2, nullptr);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(refused.status().message().find("pinned system-prompt prefix"), std::string::npos)
        << refused.status().message();
    EXPECT_NE(refused.status().message().find(std::to_string(prefix)), std::string::npos);
}

TEST(SystemPromptCache, RecomputeModeDoesNotReuseAShiftedPrefix) {
    PrefixCacheOptions po;
    po.auto_tokens = 4;
    po.rotate = false;
    SystemPromptCache pc(po);
    const ModelConfig c = testing::kv_test_config(32);
    PagedKvCache cache(c, 4);
    pc.set({1, 2, 3, 4}, 1, cache);
    const std::vector<int32_t> at0{1, 2, 3, 4, 9}, shifted{7, 1, 2, 3, 4, 9}, only{1, 2, 3, 4};
    EXPECT_EQ(pc.find(at0), std::optional<int64_t>(0));
    EXPECT_FALSE(pc.find(shifted).has_value());
    EXPECT_FALSE(pc.find(only).has_value());  // nothing after the prefix to prefill
}

}  // namespace
}  // namespace tandem::model
