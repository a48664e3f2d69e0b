// gpu::run_generation (common/gpu/generate_loop.h), the host side of device generation, over
// the host fake backend (tests/fakes/fake_generation_backend.h), which checks at every decode step
// that each row reads its own tokens through its block table (shared prompt blocks, the copied
// partial block, its appends) and that padding rows stay in block 0.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/gpu/generate_loop.h"
#include "common/gpu/sampling_reference.h"
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

}  // namespace
}  // namespace tandem::gpu
