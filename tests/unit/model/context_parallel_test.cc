// Context-parallel generation: ring prefill plus sharded decode give the same completions as
// single-device generation with the same seed; the shard plan; the errors that name the job's
// fields.
#include "common/model/context_parallel.h"

#include <cmath>
#include <cstdio>
#include <ostream>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "common/model/generate.h"
#include "common/model/job_setup.h"
#include "common/model/model_weights.h"
#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

// Lengths that split unevenly over 2 and 4 ranks (and over 2P zigzag chunks), plus a short one.
std::vector<std::vector<int32_t>> cp_prompts() {
    return testing::context_parallel_prompts({23, 37, 5, 30});
}

ModelWeights cp_weights(const ModelConfig& cfg) {
    auto w = ModelWeights::random(cfg, 91, 0.3);
    EXPECT_TRUE(w.ok());
    return std::move(w).value();
}

void expect_same(const std::vector<Completion>& a, const std::vector<Completion>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].prompt, b[i].prompt);
        EXPECT_EQ(a[i].sample, b[i].sample);
        EXPECT_EQ(a[i].finished, b[i].finished) << "completion " << i;
        ASSERT_EQ(a[i].tokens, b[i].tokens) << "completion " << i;
        ASSERT_EQ(a[i].logprobs.size(), b[i].logprobs.size());
        for (size_t j = 0; j < a[i].logprobs.size(); ++j) {
            ASSERT_FALSE(std::isnan(b[i].logprobs[j]));
            EXPECT_NEAR(a[i].logprobs[j], b[i].logprobs[j], 1e-5) << i << "/" << j;
        }
    }
}

struct CpCase {
    int ranks;
    int64_t max_tokens_per_device;
    bool share_prefix;
};

void PrintTo(const CpCase& c, std::ostream* os) {
    *os << "{ranks " << c.ranks << ", max_tokens_per_device " << c.max_tokens_per_device
        << (c.share_prefix ? ", shared prefix}" : ", own prefix}");
}

class ContextParallelGeneration : public ::testing::TestWithParam<CpCase> {};

TEST_P(ContextParallelGeneration, SameTokensAsSingleDeviceWithTheSameSeed) {
    const CpCase k = GetParam();
    const ModelConfig cfg = testing::context_parallel_config();
    const ModelWeights w = cp_weights(cfg);
    const auto ps = cp_prompts();
    constexpr int kGroup = 4;
    SamplingOptions so;
    so.max_new_tokens = 20;
    so.seed = 4242;
    GeneratorOptions single_opts;
    single_opts.block_tokens = 4;
    auto single = GroupGenerator::create(cfg, single_opts);
    GeneratorOptions cp_opts;
    cp_opts.share_prefix = k.share_prefix;
    cp_opts.context_parallel = k.ranks;
    cp_opts.max_tokens_per_device = k.max_tokens_per_device;
    cp_opts.job = "cp-test";
    auto sharded = GroupGenerator::create(cfg, cp_opts);
    ASSERT_TRUE(single.ok() && sharded.ok()) << sharded.status().to_string();
    GenerateStats s1, s2;
    auto a = single->generate(w.data(), ps, kGroup, so, &s1);
    auto b = sharded->generate(w.data(), ps, kGroup, so, &s2);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    expect_same(*a, *b);
    // Which prompts were sharded: context = prompt + 20 > max_tokens_per_device.
    int64_t expect_sharded = 0;
    for (const auto& p : ps) {
        if (static_cast<int64_t>(p.size()) + so.max_new_tokens > k.max_tokens_per_device)
            expect_sharded += kGroup;
    }
    EXPECT_GT(expect_sharded, 0);
    EXPECT_EQ(s2.sharded_sequences, expect_sharded);
    EXPECT_EQ(s1.sharded_sequences, 0);
    // No rank held more than its share of any sequence.
    EXPECT_GT(s2.peak_tokens_per_rank, 0);
    EXPECT_LE(s2.peak_tokens_per_rank, k.max_tokens_per_device);
    EXPECT_EQ(s1.generated_tokens, s2.generated_tokens);
    // The samples of a group really differ, and some stop early, so the check has teeth.
    std::set<std::vector<int32_t>> distinct;
    int finished = 0;
    for (const auto& c : *b) {
        distinct.insert(c.tokens);
        finished += c.finished ? 1 : 0;
    }
    EXPECT_GT(distinct.size(), ps.size() * 2);
    EXPECT_GT(finished, 0);
}

INSTANTIATE_TEST_SUITE_P(RanksAndSharing, ContextParallelGeneration,
                         ::testing::Values(CpCase{2, 30, true}, CpCase{2, 30, false},
                                           CpCase{4, 15, true}, CpCase{4, 15, false},
                                           CpCase{3, 24, true}),
                         [](const auto& info) {
                             return "P" + std::to_string(info.param.ranks) + "_M" +
                                    std::to_string(info.param.max_tokens_per_device) +
                                    (info.param.share_prefix ? "_shared" : "_unshared");
                         });

TEST(ContextParallelGeneration, GreedyMatchesSingleDeviceAndRepeatsAcrossCalls) {
    const ModelConfig cfg = testing::context_parallel_config();
    const ModelWeights w = cp_weights(cfg);
    const auto ps = cp_prompts();
    SamplingOptions so;
    so.temperature = 0.0;
    so.max_new_tokens = 24;
    auto single = GroupGenerator::create(cfg);
    GeneratorOptions o;
    o.context_parallel = 4;
    o.max_tokens_per_device = 16;
    auto sharded = GroupGenerator::create(cfg, o);
    ASSERT_TRUE(single.ok() && sharded.ok());
    auto a = single->generate(w.data(), ps, 2, so);
    auto b = sharded->generate(w.data(), ps, 2, so);
    auto c = sharded->generate(w.data(), ps, 2, so);  // the generator is reusable
    ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << b.status().to_string();
    expect_same(*a, *b);
    expect_same(*b, *c);
}

// rollout.kv_cache on the context-parallel path: every shard piece stores quantized pages (the
// zigzag prefill shard's two chunks and the appended run are separate page runs). Against the
// f32 shards with the same seed: completions agree up to the first token where the sampler
// drew differently, and over those shared tokens |delta log-prob| stays within a bound per
// format (measured: int8 0.052 over 251 tokens, int2 KIVI R=4 0.57 over 34; bounds 3x); the
// peak KV bytes of all ranks' shards shrink (measured int8 0.514x, int2 0.662x of f32: pages of
// only 4 rows, so partly filled f32 pages and per-channel key scales weigh much here).
TEST(ContextParallelGeneration, QuantizedShardsStayCloseToF32ShardsAndHoldFewerBytes) {
    const ModelConfig cfg = testing::context_parallel_config();
    const ModelWeights w = cp_weights(cfg);
    const auto ps = cp_prompts();
    SamplingOptions so;
    so.max_new_tokens = 40;
    so.seed = 99;
    GeneratorOptions o;
    o.context_parallel = 2;
    o.max_tokens_per_device = 45;  // the prompts of 23, 37 and 30 tokens are sharded
    auto run = [&](const KvCacheOptions& kv, GenerateStats& st) {
        GeneratorOptions q = o;
        q.kv = kv;
        auto gen = GroupGenerator::create(cfg, q);
        EXPECT_TRUE(gen.ok()) << gen.status().to_string();
        auto r = gen->generate(w.data(), ps, 4, so, &st);
        EXPECT_TRUE(r.ok()) << r.status().to_string();
        return std::move(r).value();
    };
    GenerateStats f32s;
    const auto ref = run(KvCacheOptions{}, f32s);
    EXPECT_EQ(f32s.sharded_sequences, 12);
    ASSERT_GT(f32s.kv_peak_bytes, 0);
    EXPECT_NEAR(f32s.kv_compression, 1.0, 1e-12);
    struct Case {
        kernels::KvDType dtype;
        double max_dlogprob;  // bound on shared prefixes
        double max_ratio;     // peak bytes against f32
    };
    for (const Case k :
         {Case{kernels::KvDType::kInt8, 0.15, 0.75}, Case{kernels::KvDType::kInt2, 1.5, 0.85}}) {
        SCOPED_TRACE(kernels::kv_dtype_name(k.dtype));
        KvCacheOptions kv;
        kv.dtype = k.dtype;
        kv.block_tokens = 4;
        kv.value_group = 8;
        kv.residual_tokens = 4;
        GenerateStats qs;
        const auto got = run(kv, qs);
        ASSERT_EQ(got.size(), ref.size());
        double worst = 0;
        int64_t compared = 0, identical = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            const auto& a = ref[i].tokens;
            const auto& b = got[i].tokens;
            identical += a == b ? 1 : 0;
            for (size_t j = 0; j < std::min(a.size(), b.size()); ++j) {
                ASSERT_TRUE(std::isfinite(got[i].logprobs[j]));
                if (a[j] != b[j]) break;  // the same draw gave another token: streams part here
                worst = std::max<double>(worst, std::fabs(ref[i].logprobs[j] - got[i].logprobs[j]));
                ++compared;
            }
        }
        const double ratio =
            static_cast<double>(qs.kv_peak_bytes) / static_cast<double>(f32s.kv_peak_bytes);
        std::printf(
            "%s shards: max |dlogprob| %.4g over %lld tokens, %lld/%zu completions "
            "identical, peak KV %lld vs %lld bytes (%.3fx)\n",
            kernels::kv_dtype_name(k.dtype), worst, static_cast<long long>(compared),
            static_cast<long long>(identical), got.size(), static_cast<long long>(qs.kv_peak_bytes),
            static_cast<long long>(f32s.kv_peak_bytes), ratio);
        EXPECT_GT(compared, 20);
        EXPECT_LE(worst, k.max_dlogprob);
        EXPECT_LT(ratio, k.max_ratio);
        EXPECT_NEAR(qs.kv_compression * f32s.kv_bytes_per_token, qs.kv_bytes_per_token, 1e-9);
    }
}

TEST(ContextShardPlan, EveryPositionHasOneOwnerAndNoRankExceedsItsQuota) {
    for (const auto layout : {kernels::RingLayout::kZigzag, kernels::RingLayout::kContiguous}) {
        for (const int ranks : {2, 3, 4, 8}) {
            for (const int64_t prompt : {1, 2, 5, 17, 64, 101}) {
                for (const int64_t extra : {1, 7, 40}) {
                    const int64_t ctx = prompt + extra;
                    const auto plan = plan_context_shards(layout, prompt, ctx, ranks);
                    EXPECT_EQ(plan.prefill_len, prompt - 1);
                    EXPECT_EQ(plan.quota, (ctx + ranks - 1) / ranks);
                    int64_t total = 0;
                    for (int r = 0; r < ranks; ++r) {
                        total += plan.prefill_rows[r] + plan.append_end[r] - plan.append_begin[r];
                        EXPECT_LE(plan.prefill_rows[r] + plan.append_end[r] - plan.append_begin[r],
                                  plan.quota);
                        if (r > 0) {
                            EXPECT_EQ(plan.append_begin[r], plan.append_end[r - 1]);
                        }
                    }
                    EXPECT_EQ(total, ctx) << "P " << ranks << " prompt " << prompt;
                    EXPECT_EQ(plan.append_begin[0], prompt - 1);
                    EXPECT_EQ(plan.append_end[ranks - 1], ctx);
                    EXPECT_LE(plan.max_rows(), plan.quota);
                    for (int64_t pos = prompt - 1; pos < ctx; ++pos) {
                        const int r = plan.owner(pos);
                        EXPECT_GE(pos, plan.append_begin[r]);
                        EXPECT_LT(pos, plan.append_end[r]);
                    }
                }
            }
        }
    }
}

TEST(ContextParallelGeneration, ContextLongerThanAllRanksIsAnErrorNamingTheFields) {
    const ModelConfig cfg = testing::context_parallel_config();
    const ModelWeights w = cp_weights(cfg);
    GeneratorOptions o;
    o.context_parallel = 2;
    o.max_tokens_per_device = 20;
    o.job = "long-job";
    auto gen = GroupGenerator::create(cfg, o);
    ASSERT_TRUE(gen.ok());
    SamplingOptions so;
    so.max_new_tokens = 10;
    std::vector<std::vector<int32_t>> ps{std::vector<int32_t>(31, 3)};  // 41 > 2 x 20
    auto r = gen->generate(w.data(), ps, 2, so);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("long-job"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("rollout.context_parallel"), std::string::npos);
    EXPECT_NE(r.status().message().find("rollout.max_tokens_per_device"), std::string::npos);
    ps[0].resize(30);  // 40 fits exactly
    EXPECT_TRUE(gen->generate(w.data(), ps, 2, so).ok());
    // One device: anything over max_tokens_per_device is an error.
    o.context_parallel = 1;
    auto one = GroupGenerator::create(cfg, o);
    ASSERT_TRUE(one.ok());
    ps[0].resize(10);  // 20 fits
    EXPECT_TRUE(one->generate(w.data(), ps, 2, so).ok());
    ps[0].resize(11);
    auto over = one->generate(w.data(), ps, 2, so);
    ASSERT_FALSE(over.ok());
    EXPECT_NE(over.status().message().find("rollout.max_tokens_per_device (20)"), std::string::npos)
        << over.status().message();
    o.context_parallel = 0;
    EXPECT_FALSE(GroupGenerator::create(cfg, o).ok());
}

TEST(ContextParallelGeneration, BadPromptTokenIsRejectedBeforeAnyRankStarts) {
    const ModelConfig cfg = testing::context_parallel_config();
    const ModelWeights w = cp_weights(cfg);
    GeneratorOptions o;
    o.context_parallel = 2;
    o.max_tokens_per_device = 20;
    auto gen = GroupGenerator::create(cfg, o);
    ASSERT_TRUE(gen.ok());
    SamplingOptions so;
    so.max_new_tokens = 10;
    std::vector<std::vector<int32_t>> ps{std::vector<int32_t>(25, 3)};
    ps[0][7] = cfg.vocab_size;  // sharded (35 > 20), one token past the vocabulary
    auto r = gen->generate(w.data(), ps, 2, so);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("outside the vocabulary"), std::string::npos)
        << r.status().message();
    ps[0][7] = 3;
    EXPECT_TRUE(gen->generate(w.data(), ps, 2, so).ok());  // the ring is still usable
}

TEST(ContextParallelJob, JobValidationNamesBothFields) {
    config::JobSpec job;
    job.name = "copy-long";
    job.task.name = config::TaskName::kCopy;
    job.task.min_length = 30;
    job.task.max_length = 40;
    job.model.max_seq_len = 96;
    job.rollout.sampling.max_new_tokens = 41;
    job.rollout.context_parallel = 2;
    job.rollout.max_tokens_per_device = 40;  // 42 + 41 = 83 > 80
    auto bad = make_job_setup(job);
    ASSERT_FALSE(bad.ok());
    const std::string msg = bad.status().message();
    EXPECT_NE(msg.find("copy-long"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rollout.context_parallel (2)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rollout.max_tokens_per_device (40)"), std::string::npos) << msg;
    job.rollout.max_tokens_per_device = 48;
    EXPECT_TRUE(make_job_setup(job).ok());
}

TEST(ContextParallelJob, TheLongContextJobFileTrainsLocallyWithShardedRollouts) {
    const std::string path =
        std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/copy-long-context.yaml";
    auto job = config::load_job_file(path);
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    auto setup = make_job_setup(*job);
    ASSERT_TRUE(setup.ok()) << setup.status().to_string();
    const auto& r = job->rollout;
    EXPECT_GT(r.context_parallel, 1);
    // Every context of the job is longer than one device holds, and fits the ring.
    const int64_t shortest = 2 + job->task.min_length + r.sampling.max_new_tokens;
    EXPECT_GT(shortest, r.max_tokens_per_device);
    auto gen = GroupGenerator::create(setup->initial.config(), GeneratorOptions::from_job(*job));
    ASSERT_TRUE(gen.ok());
    std::vector<std::vector<int32_t>> prompts;
    for (uint64_t i = 0; i < 2; ++i) {
        auto p = setup->task->prompt_tokens(setup->task->example(i));
        ASSERT_TRUE(p.ok());
        prompts.push_back(*p);
    }
    GenerateStats st;
    auto out = gen->generate(setup->initial.data(), prompts, 2,
                             SamplingOptions::from_spec(r.sampling, 7), &st);
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(st.sharded_sequences, 4);
    EXPECT_LE(st.peak_tokens_per_rank, r.max_tokens_per_device);
}

}  // namespace
}  // namespace tandem::model
