// gpu::run_generation (common/gpu/generate_loop.h), the host side of device generation, over
// the host fake backend (tests/fakes/fake_generation_backend.h), which checks at every decode step
// that each row reads its own tokens through its block table (shared prompt blocks, the copied
// partial block, its appends) and that padding rows stay in block 0. The system-prompt cache
// (GenerationLoop across calls: forks, refcounts, invalidation) and admission waves (the CPU
// engine's model::admission_waves plan over the device's block bytes) run over the same fake.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/gpu/generate_loop.h"
#include "common/gpu/sampling_reference.h"
#include "common/model/kv_admission.h"
#include "common/model/kv_cache.h"
#include "tests/fakes/fake_generation_backend.h"

namespace tandem::gpu {
namespace {

using testing::FakeGenerationBackend;

model::ModelConfig tiny() {
    model::ModelConfig c;
    c.vocab_size = 50;
    c.max_seq_len = 128;
    return c;
}

std::vector<std::vector<int32_t>> prompts_of(std::initializer_list<int> lens) {
    std::vector<std::vector<int32_t>> out;
    int32_t t = 1;
    for (const int len : lens) {
        out.emplace_back();
        for (int i = 0; i < len; ++i) out.back().push_back(t++ % 50);
    }
    return out;
}

TEST(GenerationLoop, EveryStepReadsItsOwnPagesAndSamplesEndLikeTheCpuGenerator) {
    const int bt = 4, group = 3;
    FakeGenerationBackend fake(bt, 50);
    GenerationLoopOptions opt;
    opt.block_tokens = bt;
    opt.stop_ids = {7, 9, 11, 13, 17};  // sorted; about one token in ten stops
    const auto is_stop = [&](int32_t t) {
        return std::binary_search(opt.stop_ids.begin(), opt.stop_ids.end(), t);
    };
    const auto prompts = prompts_of({1, 5, 16, 17, 33});
    model::SamplingOptions o;
    o.max_new_tokens = 20;
    o.seed = 3;
    GenerationCounts counts;
    auto out = run_generation(fake, tiny(), opt, prompts, group, o, &counts);
    ASSERT_TRUE(out.ok()) << out.status().message();
    for (const auto& e : fake.errors()) ADD_FAILURE() << e;
    ASSERT_EQ(out->size(), prompts.size() * group);
    int stopped = 0;
    for (size_t i = 0; i < out->size(); ++i) {
        const model::Completion& cp = (*out)[i];
        EXPECT_EQ(cp.prompt, static_cast<int32_t>(i / group));
        EXPECT_EQ(cp.sample, static_cast<int32_t>(i % group));
        const uint64_t stream = sample_stream(o.seed, cp.prompt, cp.sample);
        ASSERT_FALSE(cp.tokens.empty());
        for (size_t k = 0; k < cp.tokens.size(); ++k) {
            EXPECT_EQ(cp.tokens[k], fake.token(stream, static_cast<int32_t>(k)));
            EXPECT_EQ(cp.logprobs[k], FakeGenerationBackend::logprob(cp.tokens[k], k));
            if (k + 1 < cp.tokens.size()) {
                EXPECT_FALSE(is_stop(cp.tokens[k])) << "sample " << i << " went on past a stop";
            }
        }
        const bool stop = is_stop(cp.tokens.back());
        EXPECT_EQ(cp.finished, stop) << "sample " << i;
        if (!stop) {
            EXPECT_EQ(std::ssize(cp.tokens), o.max_new_tokens) << "sample " << i;
        }
        stopped += stop;
    }
    EXPECT_GT(stopped, 0) << "no sample met a stop id: the test does not exercise stops";
    EXPECT_EQ(counts.prompt_tokens, 1 + 5 + 16 + 17 + 33);
    int64_t generated = 0;
    for (const auto& cp : *out) generated += std::ssize(cp.tokens);
    EXPECT_EQ(counts.generated_tokens, generated);
    EXPECT_LE(counts.peak_blocks, fake.reserved_blocks() - 1);
    // The batch shrank into smaller buckets as samples stopped.
    int64_t buckets = 0;
    for (const int64_t n : counts.bucket_steps) buckets += n > 0;
    EXPECT_GT(buckets, 1);
    EXPECT_EQ(counts.decode_steps, o.max_new_tokens - 1);
}

TEST(GenerationLoop, PrefillTakesWholePromptsUpToTheTokenLimit) {
    FakeGenerationBackend fake(16, 50);
    GenerationLoopOptions opt;
    opt.max_prefill_tokens = 20;
    const auto prompts = prompts_of({8, 8, 8, 30, 3});
    model::SamplingOptions o;
    o.max_new_tokens = 3;
    auto out = run_generation(fake, tiny(), opt, prompts, 2, o);
    ASSERT_TRUE(out.ok()) << out.status().message();
    for (const auto& e : fake.errors()) ADD_FAILURE() << e;
    EXPECT_EQ(fake.prefill_rows(), (std::vector<int64_t>{16, 8, 30, 3}));
}

TEST(GenerationLoop, OneNewTokenNeedsNoDecodeStep) {
    FakeGenerationBackend fake(16, 50);
    const auto prompts = prompts_of({4, 6});
    model::SamplingOptions o;
    o.max_new_tokens = 1;
    GenerationCounts counts;
    auto out = run_generation(fake, tiny(), GenerationLoopOptions{}, prompts, 4, o, &counts);
    ASSERT_TRUE(out.ok()) << out.status().message();
    EXPECT_EQ(counts.decode_steps, 0);
    for (const auto& cp : *out) EXPECT_EQ(cp.tokens.size(), 1u);
}

TEST(GenerationLoop, BadCallsAreNamedByJobPromptAndField) {
    FakeGenerationBackend fake(16, 50);
    GenerationLoopOptions opt;
    opt.job = "job-9";
    model::SamplingOptions o;
    o.max_new_tokens = 8;
    const auto check = [&](std::vector<std::vector<int32_t>> prompts, int group,
                           const model::SamplingOptions& so, const std::string& want) {
        auto r = run_generation(fake, tiny(), opt, prompts, group, so);
        ASSERT_FALSE(r.ok()) << want;
        EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
    };
    check({{1, 2}, {}}, 2, o, "job job-9: device generation: prompt 1 is empty");
    check({{1, 2}, {3, 50}}, 2, o, "prompt 1 token 1 is 50, outside the vocabulary (50)");
    check({std::vector<int32_t>(125, 1)}, 2, o,
          "prompt 0 has 125 tokens; with max_new_tokens 8 that exceeds max_seq_len 128");
    check({{1}}, 0, o, "group_size must be >= 1");
    model::SamplingOptions bad = o;
    bad.top_p = 0;
    check({{1}}, 1, bad, "top_p in (0, 1]");
}

// Prompts that start with `prefix` (a tail of `tails[i]` tokens each; 0: the prefix alone, which
// is no hit: a hit needs a token after it), then `others` prompts of other tokens.
std::vector<std::vector<int32_t>> with_prefix(const std::vector<int32_t>& prefix,
                                              std::initializer_list<int> tails, int others) {
    std::vector<std::vector<int32_t>> out;
    int32_t t = 20;
    for (const int n : tails) {
        out.push_back(prefix);
        for (int i = 0; i < n; ++i) out.back().push_back(t++ % 50);
    }
    for (int k = 0; k < others; ++k) {
        out.emplace_back();
        for (int i = 0; i < 7 + 3 * k; ++i) out.back().push_back(t++ % 50);
    }
    return out;
}

std::vector<int32_t> system_prompt(int n) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>(40 - i));
    return p;
}

// Every completion holds the fake's tokens of its stream, and the fake's pages held its prompt.
void expect_fake_completions(const FakeGenerationBackend& fake,
                             const std::vector<std::vector<int32_t>>& prompts, int group,
                             const model::SamplingOptions& o,
                             const std::vector<model::Completion>& out) {
    for (const auto& e : fake.errors()) ADD_FAILURE() << e;
    ASSERT_EQ(out.size(), prompts.size() * group);
    for (size_t i = 0; i < out.size(); ++i) {
        const model::Completion& cp = out[i];
        ASSERT_EQ(cp.prompt, static_cast<int32_t>(i / group));
        const uint64_t stream = sample_stream(o.seed, cp.prompt, cp.sample);
        EXPECT_EQ(fake.prompt_of(stream), prompts[static_cast<size_t>(cp.prompt)])
            << "sample " << i;
        for (size_t k = 0; k < cp.tokens.size(); ++k) {
            EXPECT_EQ(cp.tokens[k], fake.token(stream, static_cast<int32_t>(k))) << "sample " << i;
        }
    }
}

// Wraps the fake and records, at the first decode step of each call, the references of the
// cached prefix's blocks; fails the decode step `fail_at` (counted over its life) when set.
class RefProbe final : public GenerationBackend {
public:
    RefProbe(FakeGenerationBackend& fake, const GenerationLoop& loop) : fake_(fake), loop_(loop) {}
    std::vector<int32_t> refs;  // at the first decode step
    int64_t fail_at = -1, steps = 0;
    Result<StepLayout> reserve(int64_t b, int64_t r, int w) override {
        refs.clear();
        return fake_.reserve(b, r, w);
    }
    Status prefill(const PrefillBatch& batch, std::vector<int32_t>& t,
                   std::vector<float>& l) override {
        return fake_.prefill(batch, t, l);
    }
    Status copy_blocks(std::span<const int32_t> pairs) override { return fake_.copy_blocks(pairs); }
    Status decode(int64_t rows, std::span<const int32_t> step, int64_t live,
                  std::vector<int32_t>& t, std::vector<float>& l) override {
        if (refs.empty()) {
            for (const int32_t b : loop_.prefix().blocks) {
                refs.push_back(loop_.sequences()->pool().refs(b));
            }
        }
        if (steps++ == fail_at) return internal_error("decode step failed (test)");
        return fake_.decode(rows, step, live, t, l);
    }

private:
    FakeGenerationBackend& fake_;
    const GenerationLoop& loop_;
};

TEST(GenerationLoop, PromptsStartingWithTheSystemPromptForkItsCachedPagesAcrossCalls) {
    const int bt = 4, group = 3;
    const std::vector<int32_t> prefix = system_prompt(10);  // two full blocks and a partial one
    FakeGenerationBackend fake(bt, 50);
    GenerationLoopOptions opt;
    opt.block_tokens = bt;
    opt.prefix_tokens = 10;
    GenerationLoop loop(opt);
    RefProbe probe(fake, loop);
    loop.set_weights_version(1);
    // Three hits (tails 1, 3, 10), the prefix alone (no hit), two prompts without it.
    const auto prompts = with_prefix(prefix, {1, 3, 10, 0}, 2);
    model::SamplingOptions o;
    o.max_new_tokens = 9;
    o.seed = 5;
    int64_t all = 0;
    for (const auto& p : prompts) all += std::ssize(p);
    for (int call = 0; call < 2; ++call) {
        SCOPED_TRACE(call);
        GenerationCounts counts;
        auto out = loop.run(probe, tiny(), prompts, group, o, &counts);
        ASSERT_TRUE(out.ok()) << out.status().message();
        expect_fake_completions(fake, prompts, group, o, *out);
        EXPECT_EQ(counts.prefix_hits, 3);
        EXPECT_EQ(counts.prompt_tokens, all - 3 * 10);
        EXPECT_EQ(counts.prefix_bytes, 0);  // block_bytes unset
        EXPECT_EQ(counts.evictions, 0);
        EXPECT_EQ(loop.prefix_stats().prefills, 1) << "one prefill of the prefix per version";
        EXPECT_EQ(loop.prefix_stats().prefill_tokens, 10);
        EXPECT_EQ(loop.prefix_stats().hits, 3 * (call + 1));
        // At the first decode step every sample of the three hit prompts shares the prefix's
        // two full blocks; its partial block was copied into each hit prompt's own block.
        ASSERT_EQ(loop.prefix().blocks.size(), 3u);
        EXPECT_EQ(probe.refs, (std::vector<int32_t>{1 + 3 * group, 1 + 3 * group, 1}));
        // After the call only the cache holds the prefix; everything else is free.
        for (const int32_t b : loop.prefix().blocks) {
            EXPECT_EQ(loop.sequences()->pool().refs(b), 1);
        }
        EXPECT_EQ(loop.sequences()->pool().in_use(), 3);
        EXPECT_GE(counts.peak_blocks, 3 + 3 * group);
    }
    // The prefix was prefilled once (10 rows, first), never again.
    EXPECT_EQ(std::count(fake.prefill_rows().begin(), fake.prefill_rows().end(), 10), 1);
    EXPECT_EQ(fake.prefill_rows().front(), 10);

    // The same call without the cache: the same completions.
    FakeGenerationBackend plain(bt, 50);
    GenerationLoopOptions no_cache = opt;
    no_cache.prefix_tokens = 0;
    auto want = run_generation(plain, tiny(), no_cache, prompts, group, o);
    ASSERT_TRUE(want.ok()) << want.status().message();
    auto got = loop.run(probe, tiny(), prompts, group, o);
    ASSERT_TRUE(got.ok()) << got.status().message();
    ASSERT_EQ(got->size(), want->size());
    for (size_t i = 0; i < got->size(); ++i) {
        EXPECT_EQ((*got)[i].tokens, (*want)[i].tokens) << "sample " << i;
        EXPECT_EQ((*got)[i].logprobs, (*want)[i].logprobs) << "sample " << i;
        EXPECT_EQ((*got)[i].finished, (*want)[i].finished) << "sample " << i;
    }
}

TEST(GenerationLoop, ANewVersionNewWeightsOrAGrownPoolDropTheCachedPrefix) {
    const int bt = 4, group = 2;
    const std::vector<int32_t> prefix = system_prompt(9);
    FakeGenerationBackend fake(bt, 50);
    GenerationLoopOptions opt;
    opt.block_tokens = bt;
    GenerationLoop loop(opt);
    loop.set_system_prompt(prefix);  // explicit: the prompts need not be longer than a count
    const auto prompts = with_prefix(prefix, {2, 5}, 1);
    model::SamplingOptions o;
    o.max_new_tokens = 6;
    const auto run = [&](int64_t version, int epoch, const std::vector<std::vector<int32_t>>& ps) {
        loop.set_weights_version(version);
        fake.set_weights(epoch);
        GenerationCounts counts;
        auto out = loop.run(fake, tiny(), ps, group, o, &counts);
        EXPECT_TRUE(out.ok()) << out.status().message();
        if (out.ok()) expect_fake_completions(fake, ps, group, o, *out);
        int64_t hits = 0;
        for (const auto& p : ps)
            hits += p.size() > prefix.size() && std::equal(prefix.begin(), prefix.end(), p.begin());
        EXPECT_EQ(counts.prefix_hits, hits);
        return counts.evictions;
    };
    EXPECT_EQ(run(1, 1, prompts), 0);
    EXPECT_EQ(run(1, 1, prompts), 0);
    EXPECT_EQ(loop.prefix_stats().prefills, 1);
    // A new version: the pages were computed with the old weights (the fake would see it).
    EXPECT_EQ(run(2, 2, prompts), 1);
    EXPECT_EQ(loop.prefix_stats().prefills, 2);
    // The same version number, but the weights were loaded again.
    loop.weights_changed();
    EXPECT_EQ(run(2, 3, prompts), 1);
    EXPECT_EQ(loop.prefix_stats().prefills, 3);
    // No version: the prefix lives one call.
    EXPECT_EQ(run(-1, 4, prompts), 1);
    EXPECT_EQ(run(-1, 4, prompts), 1);
    EXPECT_EQ(loop.prefix_stats().prefills, 5);
    // A batch that needs a larger pool: the new pool starts empty, so the prefix is prefilled
    // into it again.
    EXPECT_EQ(run(3, 5, prompts), 1);
    auto more = with_prefix(prefix, {2, 5, 7, 30}, 3);
    EXPECT_EQ(run(3, 5, more), 1);
    EXPECT_EQ(loop.prefix_stats().prefills, 7);
    EXPECT_EQ(loop.prefix_stats().evictions, 6);
    EXPECT_EQ(run(3, 5, prompts), 0) << "a smaller batch keeps the pool and the prefix";

    // The fake does see stale pages: weights replaced without telling the loop.
    fake.set_weights(6);
    auto stale = loop.run(fake, tiny(), prompts, group, o);
    ASSERT_TRUE(stale.ok());
    EXPECT_FALSE(fake.errors().empty()) << "the fake missed a read of stale KV";
}

// The CPU engine's f32 cache of blocks of `bt` tokens for tiny(): its admission plan is the one
// the device's must equal.
model::PagedKvCache cpu_cache(int bt) {
    model::KvCacheOptions kv;
    kv.block_tokens = bt;
    auto cache = model::PagedKvCache::create(tiny(), kv);
    EXPECT_TRUE(cache.ok()) << cache.status().message();
    return std::move(cache).value();
}

// Options of a loop under `budget_bytes` with the CPU engine's f32 block bytes.
GenerationLoopOptions budget_options(int bt, int64_t block, int64_t budget, std::string job) {
    GenerationLoopOptions opt;
    opt.block_tokens = bt;
    opt.budget_bytes = budget;
    opt.block_bytes = block;
    opt.job = std::move(job);
    return opt;
}

TEST(GenerationLoop, AfterAFailedCallThePoolAndThePrefixStartOver) {
    const int bt = 4, group = 2;
    const std::vector<int32_t> prefix = system_prompt(6);
    FakeGenerationBackend fake(bt, 50);
    GenerationLoopOptions opt;
    opt.block_tokens = bt;
    GenerationLoop loop(opt);
    RefProbe probe(fake, loop);
    loop.set_system_prompt(prefix);
    loop.set_weights_version(1);
    const auto prompts = with_prefix(prefix, {3, 9}, 1);
    model::SamplingOptions o;
    o.max_new_tokens = 5;
    ASSERT_TRUE(loop.run(probe, tiny(), prompts, group, o).ok());
    probe.fail_at = probe.steps + 2;  // mid-call: samples hold blocks when it fails
    auto failed = loop.run(probe, tiny(), prompts, group, o);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("decode step failed"), std::string::npos);
    GenerationCounts counts;
    auto out = loop.run(probe, tiny(), prompts, group, o, &counts);
    ASSERT_TRUE(out.ok()) << out.status().message();
    expect_fake_completions(fake, prompts, group, o, *out);
    EXPECT_EQ(counts.evictions, 1) << "the prefix of the failed call is not trusted";
    EXPECT_EQ(loop.prefix_stats().prefills, 2);
    // Nothing the failed call held is left: only the prefix's blocks are in use.
    EXPECT_EQ(loop.sequences()->pool().in_use(), std::ssize(loop.prefix().blocks));
}

TEST(GenerationLoop, BudgetWavesAreTheCpuEnginesPlanForTheSameBlockBytes) {
    const int bt = 4, group = 2;
    const model::ModelConfig c = tiny();
    const model::PagedKvCache cpu = cpu_cache(bt);
    const int64_t block = cpu.f32_block_bytes();
    const std::vector<int32_t> prefix = system_prompt(8);
    // Lengths that are multiples of the block: the device's pages then hold what the plan counts.
    const auto prompts = with_prefix(prefix, {8, 4, 16, 12, 4}, 0);
    model::SamplingOptions o;
    o.max_new_tokens = 8;
    for (const bool cached : {false, true}) {
        SCOPED_TRACE(cached ? "system prompt cached" : "no system prompt");
        const int64_t pinned = cached ? 2 * block : 0;
        std::vector<int64_t> shared(prompts.size(), cached ? 8 : 0);
        // What the CPU engine plans for these prompts under a budget of about two prompts.
        const int64_t budget = pinned + 2 * model::worst_case_kv_bytes(cpu, 12, group, 8);
        auto plan = model::admission_waves(cpu, prompts, group, o.max_new_tokens, budget, "job-3",
                                           true, pinned, shared);
        ASSERT_TRUE(plan.ok()) << plan.status().message();
        ASSERT_GT(plan->size(), 1u) << "the budget does not split the batch";
        std::vector<int64_t> want;
        for (const auto& w : *plan) want.push_back(w.second);

        FakeGenerationBackend fake(bt, 50);
        const GenerationLoopOptions opt = budget_options(bt, block, budget, "job-3");
        GenerationLoop loop(opt);
        if (cached) loop.set_system_prompt(prefix);
        GenerationCounts counts;
        auto out = loop.run(fake, c, prompts, group, o, &counts);
        ASSERT_TRUE(out.ok()) << out.status().message();
        expect_fake_completions(fake, prompts, group, o, *out);
        EXPECT_EQ(counts.wave_prompts, want);
        EXPECT_EQ(counts.admission_waits, std::ssize(prompts) - want.front());
        EXPECT_EQ(counts.prefix_bytes, pinned);
        // The pool never held more than the budget (padding block aside).
        EXPECT_LE(counts.peak_blocks * block, budget);

        // Without the budget: one wave, the same completions.
        FakeGenerationBackend fake1(bt, 50);
        GenerationLoopOptions one = opt;
        one.budget_bytes = 0;
        GenerationLoop loop1(one);
        if (cached) loop1.set_system_prompt(prefix);
        GenerationCounts counts1;
        auto all = loop1.run(fake1, c, prompts, group, o, &counts1);
        ASSERT_TRUE(all.ok()) << all.status().message();
        EXPECT_EQ(counts1.wave_prompts, (std::vector<int64_t>{std::ssize(prompts)}));
        ASSERT_EQ(all->size(), out->size());
        for (size_t i = 0; i < all->size(); ++i) {
            EXPECT_EQ((*all)[i].tokens, (*out)[i].tokens) << "sample " << i;
        }
        EXPECT_GT(counts1.peak_blocks, counts.peak_blocks);
    }
}

TEST(GenerationLoop, APromptThatCanNeverFitGetsTheCpuEnginesError) {
    const int bt = 4, group = 2;
    const model::ModelConfig c = tiny();
    const model::PagedKvCache cpu = cpu_cache(bt);
    const int64_t block = cpu.f32_block_bytes();
    const std::vector<int32_t> prefix = system_prompt(8);
    const auto prompts = with_prefix(prefix, {4, 40}, 0);
    model::SamplingOptions o;
    o.max_new_tokens = 8;
    for (const bool cached : {false, true}) {
        const int64_t pinned = cached ? 2 * block : 0;
        std::vector<int64_t> shared(prompts.size(), cached ? 8 : 0);
        const int64_t budget = pinned + model::worst_case_kv_bytes(cpu, 12, group, 8);
        auto want = model::admission_waves(cpu, prompts, group, o.max_new_tokens, budget, "job-4",
                                           true, pinned, shared);
        ASSERT_FALSE(want.ok());
        FakeGenerationBackend fake(bt, 50);
        GenerationLoop loop(budget_options(bt, block, budget, "job-4"));
        if (cached) loop.set_system_prompt(prefix);
        loop.set_weights_version(1);
        const std::vector<std::vector<int32_t>> fits{prompts[0]};
        ASSERT_TRUE(loop.run(fake, c, fits, group, o).ok());
        auto got = loop.run(fake, c, prompts, group, o);
        ASSERT_FALSE(got.ok());
        EXPECT_EQ(got.status().message(), want.status().message());
        EXPECT_NE(got.status().message().find("job job-4: prompt 1 (48 tokens"), std::string::npos)
            << got.status().message();
        EXPECT_EQ(got.status().message().find("pinned system-prompt prefix") != std::string::npos,
                  cached)
            << got.status().message();
        // The refusal came before anything was allocated: the cached prefix stays.
        ASSERT_TRUE(loop.run(fake, c, fits, group, o).ok());
        EXPECT_EQ(loop.prefix_stats().prefills, cached ? 1 : 0);
        EXPECT_EQ(loop.prefix_stats().evictions, 0);
        for (const auto& e : fake.errors()) ADD_FAILURE() << e;
    }
}

}  // namespace
}  // namespace tandem::gpu
