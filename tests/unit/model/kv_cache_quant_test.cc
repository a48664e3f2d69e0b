// The engine's KV cache with quantized blocks: teacher-forced logits drift per dtype against the
// f32 cache (bounded), the residual window and bytes in the engine, group-shared attention over
// sealed blocks, admission by budget (completions unchanged), job-file options.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "common/config/loader.h"
#include "common/model/generate.h"
#include "common/model/inference.h"
#include "common/model/kv_admission.h"
#include "common/model/kv_cache.h"
#include "common/model/model_weights.h"
#include "tests/unit/model/kv_test_util.h"

namespace tandem::model {
namespace {

using kernels::KvDType;

ModelConfig kv_config() { return testing::kv_test_config(96); }

ModelWeights weights(const ModelConfig& cfg) {
    auto w = ModelWeights::random(cfg, 91, 0.1);
    EXPECT_TRUE(w.ok());
    return std::move(w).value();
}

KvCacheOptions options(KvDType dt, int64_t residual, int group = 4) {
    KvCacheOptions o;
    o.dtype = dt;
    o.block_tokens = group;
    o.value_group = 8;
    o.residual_tokens = residual;
    return o;
}

std::vector<int32_t> tokens(int n, uint32_t seed) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u) % 15);
    return t;
}

// Teacher-forced next-token log-probs of `seq` (prefill 6, then one token at a time).
std::vector<std::vector<double>> logprobs(const ModelConfig& cfg, const ModelWeights& w,
                                          PagedKvCache& cache, const std::vector<int32_t>& seq) {
    auto engine = InferenceEngine::create(cfg);
    EXPECT_TRUE(engine.ok());
    const int V = cfg.vocab_size;
    std::vector<float> logits(static_cast<size_t>(V));
    std::vector<std::vector<double>> out;
    const auto s = cache.create();
    auto record = [&] {
        double mx = -1e300, sum = 0;
        for (int j = 0; j < V; ++j) mx = std::max<double>(mx, logits[j]);
        for (int j = 0; j < V; ++j) sum += std::exp(logits[j] - mx);
        std::vector<double> lp(static_cast<size_t>(V));
        for (int j = 0; j < V; ++j) lp[j] = logits[j] - mx - std::log(sum);
        out.push_back(std::move(lp));
    };
    ForwardItem first[] = {{s, std::span(seq).subspan(0, 6)}};
    EXPECT_TRUE(engine->forward(w.data(), cache, first, logits.data()).ok());
    record();
    for (size_t p = 6; p < seq.size(); ++p) {
        ForwardItem it[] = {{s, std::span(seq).subspan(p, 1)}};
        const Status st = engine->forward(w.data(), cache, it, logits.data());
        EXPECT_TRUE(st.ok()) << st.to_string();
        record();
    }
    return out;
}

// Drift of next-token distributions against the f32 cache over 81 positions (group 4, R 8),
// random weights at scale 0.1. Observed (max |dlogprob|, mean KL): bf16 0.004, 8e-7; int8 0.025,
// 2e-5; int4 0.16, 1.4e-3; int4/kivi 0.13, 5e-4; int2/kivi 0.60, 0.014. Bounds have 3-8x margin.
TEST(QuantizedKvCache, TeacherForcedDriftAgainstTheF32CacheIsBoundedPerDtype) {
    const ModelConfig cfg = kv_config();
    const ModelWeights w = weights(cfg);
    const auto seq = tokens(86, 5);
    PagedKvCache ref_cache(cfg, 4);
    const auto ref = logprobs(cfg, w, ref_cache, seq);
    struct Case {
        KvDType dt;
        bool kivi;
        double max_dlogp, mean_kl;
    };
    for (const Case cs :
         {Case{KvDType::kBF16, false, 0.02, 1e-5}, Case{KvDType::kInt8, false, 0.1, 2e-4},
          Case{KvDType::kInt4, false, 0.6, 0.01}, Case{KvDType::kInt4, true, 0.5, 0.005},
          Case{KvDType::kInt2, true, 2.0, 0.1}}) {
        SCOPED_TRACE(std::string(kernels::kv_dtype_name(cs.dt)) + (cs.kivi ? "/kivi" : ""));
        auto o = options(cs.dt, 8);
        o.kivi = cs.kivi;
        auto cache = PagedKvCache::create(cfg, o);
        ASSERT_TRUE(cache.ok()) << cache.status().to_string();
        const auto got = logprobs(cfg, w, *cache, seq);
        ASSERT_EQ(got.size(), ref.size());
        double worst = 0, kl = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            for (size_t j = 0; j < ref[i].size(); ++j) {
                ASSERT_TRUE(std::isfinite(got[i][j]));
                worst = std::max(worst, std::fabs(got[i][j] - ref[i][j]));
                kl += std::exp(ref[i][j]) * (ref[i][j] - got[i][j]);
            }
        }
        kl /= static_cast<double>(ref.size());
        RecordProperty("max_dlogprob", std::to_string(worst));
        RecordProperty("mean_kl", std::to_string(kl));
        std::printf("%s%s max|dlogp| %.4g mean KL %.4g\n", kernels::kv_dtype_name(cs.dt),
                    cs.kivi ? "/kivi" : "", worst, kl);
        EXPECT_LE(worst, cs.max_dlogp);
        EXPECT_LE(kl, cs.mean_kl);
        EXPECT_GT(worst, 0.0);  // the cache really was quantized
        // Memory: sealed blocks counted once, f32 ones only for the window and the open block.
        const KvCacheStats st = cache->stats();
        EXPECT_EQ(st.tokens, 86);
        EXPECT_LT(st.bytes, ref_cache.stats().bytes);
        const int64_t sealed = st.sealed_blocks[static_cast<int>(cs.dt)];
        const bool window = cs.kivi || cs.dt == KvDType::kInt2;
        // Sealing happens at the next append: the 85 tokens before the last one are sealed by
        // the rule of kernels/kv_sequence.h (window 8 for KIVI, none per token).
        EXPECT_EQ(sealed, (85 - (window ? 8 : 0)) / 4);
    }
}

TEST(QuantizedKvCache, GroupSharedAttentionOverSealedBlocksMatchesPerSequence) {
    const ModelConfig cfg = kv_config();
    const ModelWeights w = weights(cfg);
    const auto prompt = tokens(30, 9);
    std::vector<std::vector<float>> results;
    for (bool shared : {true, false}) {
        auto engine = InferenceEngine::create(cfg);
        ASSERT_TRUE(engine.ok());
        engine->set_group_shared_attention(shared);
        auto cache = PagedKvCache::create(cfg, options(KvDType::kInt2, 4));
        ASSERT_TRUE(cache.ok());
        const auto parent = cache->create();
        std::vector<float> logits(static_cast<size_t>(4 * cfg.vocab_size));
        ForwardItem pre[] = {{parent, prompt}};
        ASSERT_TRUE(engine->forward(w.data(), *cache, pre, logits.data()).ok());
        std::vector<PagedKvCache::SeqId> kids;
        for (int g = 0; g < 4; ++g) kids.push_back(cache->fork(parent).value());
        cache->release(parent);
        std::vector<float> all;
        for (int step = 0; step < 10; ++step) {
            std::vector<int32_t> next(4);
            std::vector<ForwardItem> items;
            for (int g = 0; g < 4; ++g) {
                next[g] = (step * 3 + g) % 15;
                items.push_back({kids[g], std::span(next).subspan(g, 1)});
            }
            ASSERT_TRUE(engine->forward(w.data(), *cache, items, logits.data()).ok());
            all.insert(all.end(), logits.begin(), logits.end());
        }
        EXPECT_GT(cache->stats().sealed_blocks[static_cast<int>(KvDType::kInt2)], 6);
        results.push_back(std::move(all));
    }
    for (size_t i = 0; i < results[0].size(); ++i) {
        ASSERT_NEAR(results[0][i], results[1][i], 1e-4) << i;
    }
}

std::vector<std::vector<int32_t>> gen_prompts() {
    return {tokens(10, 1), tokens(5, 2), tokens(13, 3), tokens(7, 4), tokens(9, 5)};
}

TEST(QuantizedKvCache, BudgetAdmitsPromptsInWavesWithoutChangingCompletions) {
    const ModelConfig cfg = kv_config();
    const ModelWeights w = weights(cfg);
    SamplingOptions so;
    so.max_new_tokens = 12;
    so.seed = 77;
    const auto ps = gen_prompts();
    GeneratorOptions unlimited;
    unlimited.block_tokens = 4;
    auto a = GroupGenerator::create(cfg, unlimited);
    ASSERT_TRUE(a.ok());
    GenerateStats sa, sb;
    auto ra = a->generate(w.data(), ps, 4, so, &sa);
    ASSERT_TRUE(ra.ok());
    // A budget that fits two prompts at a time.
    PagedKvCache probe(cfg, 4);
    const int64_t one = worst_case_kv_bytes(probe, 13, 4, 12);
    GeneratorOptions limited = unlimited;
    limited.kv_budget_bytes = 2 * one;
    auto b = GroupGenerator::create(cfg, limited);
    ASSERT_TRUE(b.ok());
    auto rb = b->generate(w.data(), ps, 4, so, &sb);
    ASSERT_TRUE(rb.ok()) << rb.status().to_string();
    EXPECT_EQ(sa.kv_waves, 1);
    EXPECT_GE(sb.kv_waves, 3);
    EXPECT_EQ(sa.kv_admission_waits, 0);
    EXPECT_GE(sb.kv_admission_waits, 3);  // at most 2 of the 5 prompts in the first wave
    EXPECT_LE(sb.kv_peak_bytes, limited.kv_budget_bytes);
    EXPECT_LT(sb.kv_peak_bytes, sa.kv_peak_bytes);
    ASSERT_EQ(ra->size(), rb->size());
    for (size_t i = 0; i < ra->size(); ++i) {
        EXPECT_EQ((*ra)[i].prompt, (*rb)[i].prompt);
        EXPECT_EQ((*ra)[i].tokens, (*rb)[i].tokens) << i;
        ASSERT_EQ((*ra)[i].logprobs.size(), (*rb)[i].logprobs.size());
        for (size_t j = 0; j < (*ra)[i].logprobs.size(); ++j) {  // batching changes sgemm rounding
            EXPECT_NEAR((*ra)[i].logprobs[j], (*rb)[i].logprobs[j], 1e-5) << i;
        }
    }
    // A prompt that alone needs more than the budget is refused with the sizes.
    limited.kv_budget_bytes = one / 2;
    auto c = GroupGenerator::create(cfg, limited);
    ASSERT_TRUE(c.ok());
    auto rc = c->generate(w.data(), ps, 4, so);
    ASSERT_FALSE(rc.ok());
    EXPECT_NE(rc.status().message().find("budget_bytes"), std::string::npos);
}

TEST(QuantizedKvCache, QuantizedGenerationReportsMemoryByPrecision) {
    const ModelConfig cfg = kv_config();
    const ModelWeights w = weights(cfg);
    SamplingOptions so;
    so.max_new_tokens = 40;
    so.seed = 3;
    const auto ps = gen_prompts();
    GenerateStats f32s, q;
    GeneratorOptions o;
    o.block_tokens = 4;
    auto a = GroupGenerator::create(cfg, o);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(a->generate(w.data(), ps, 4, so, &f32s).ok());
    o.kv = options(KvDType::kInt2, 8);
    auto b = GroupGenerator::create(cfg, o);
    ASSERT_TRUE(b.ok());
    auto r = b->generate(w.data(), ps, 4, so, &q);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    for (const auto& c : *r) {
        for (float lp : c.logprobs) ASSERT_TRUE(std::isfinite(lp) && lp <= 0.0f);
    }
    EXPECT_GT(q.kv_sealed_blocks[static_cast<int>(KvDType::kInt2)], 0);
    EXPECT_GT(q.kv_f32_blocks, 0);
    EXPECT_GT(f32s.kv_bytes_per_token, 0.0);
    EXPECT_LT(q.kv_bytes_per_token, f32s.kv_bytes_per_token);
    // The compression ratio (job metric kv/compression): bytes per position against f32's.
    const double f32_per_token = 2.0 * cfg.num_layers * cfg.kv_dim() * sizeof(float);
    EXPECT_NEAR(q.kv_compression, q.kv_bytes_per_token / f32_per_token, 1e-12);
    EXPECT_GE(f32s.kv_compression, 1.0);  // f32, partly filled blocks included
    EXPECT_LT(q.kv_compression, f32s.kv_compression);
}

TEST(QuantizedKvCache, JobFileOptionsReachTheGenerator) {
    auto job = config::parse_job_text(R"(name: kv
kind: grpo
rollout:
  kv_cache:
    dtype: int2
    residual_tokens: 64
    group: 16
    budget_bytes: 1000000
    compress_after_tokens: 256
model:
  hidden_size: 64
  num_layers: 2
  num_heads: 4
  num_kv_heads: 2
)",
                                      "kv.yaml");
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    const auto o = GeneratorOptions::from_job(*job);
    EXPECT_EQ(o.kv.dtype, KvDType::kInt2);
    EXPECT_EQ(o.kv.residual_tokens, 64);
    EXPECT_EQ(o.kv.block_tokens, 16);
    EXPECT_EQ(o.kv.compress_after_tokens, 256);
    EXPECT_EQ(o.kv_budget_bytes, 1000000);
    auto bad =
        config::parse_job_text("name: kv\nrollout:\n  kv_cache:\n    dtype: int3\n", "x.yaml");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("kv_cache.dtype"), std::string::npos)
        << bad.status().message();
    auto kivi8 = config::parse_job_text(
        "name: kv\nrollout:\n  kv_cache:\n    dtype: int8\n    kivi: true\n", "x.yaml");
    EXPECT_FALSE(kivi8.ok());
}

}  // namespace
}  // namespace tandem::model
