// Group generation: prefix sharing, determinism, sampling options, and log-prob parity between
// the rollout's behaviour log-probs and the trainer's recomputation.
#include "common/model/generate.h"

#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "common/model/model_weights.h"
#include "common/model/transformer.h"

namespace tandem::model {
namespace {

ModelConfig gen_config() {
    ModelConfig c;
    c.vocab_size = 15;
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 48;
    c.max_seq_len = 40;
    return c;
}

std::vector<std::vector<int32_t>> prompts() {
    return {{1, 4, 5, 6, 7, 8, 9, 10, 11, 14},
            {1, 3, 3, 12, 14},
            {1, 7, 8, 9, 10, 11, 12, 13, 3, 4, 5, 6, 14}};
}

// Weights with enough scale that samples differ and some hit eos early.
ModelWeights test_weights(const ModelConfig& cfg) {
    auto w = ModelWeights::random(cfg, 77, 0.3);
    EXPECT_TRUE(w.ok());
    return std::move(w).value();
}

TEST(GroupGenerator, PrefixSharedEqualsUnsharedWithTheSameSeed) {
    const ModelConfig cfg = gen_config();
    const ModelWeights w = test_weights(cfg);
    GeneratorOptions shared_opts, own_opts;
    shared_opts.block_tokens = 4;
    own_opts.block_tokens = 4;
    own_opts.share_prefix = false;
    auto shared = GroupGenerator::create(cfg, shared_opts);
    auto own = GroupGenerator::create(cfg, own_opts);
    ASSERT_TRUE(shared.ok() && own.ok());
    SamplingOptions so;
    so.max_new_tokens = 12;
    so.seed = 1234;
    const auto ps = prompts();
    GenerateStats s1, s2;
    auto a = shared->generate(w.data(), ps, 8, so, &s1);
    auto b = own->generate(w.data(), ps, 8, so, &s2);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << b.status().to_string();
    ASSERT_EQ(a->size(), 24u);
    ASSERT_EQ(b->size(), 24u);
    int distinct_first = 0;
    for (size_t i = 0; i < a->size(); ++i) {
        EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
        EXPECT_EQ((*a)[i].sample, (*b)[i].sample);
        ASSERT_EQ((*a)[i].tokens, (*b)[i].tokens) << "completion " << i;
        for (size_t j = 0; j < (*a)[i].logprobs.size(); ++j) {
            EXPECT_NEAR((*a)[i].logprobs[j], (*b)[i].logprobs[j], 1e-5);
        }
        if (i % 8 && (*a)[i].tokens != (*a)[i - 1].tokens) ++distinct_first;
    }
    EXPECT_GT(distinct_first, 10);  // the samples of a group really differ
    // The prompt was prefilled once per prompt instead of once per sample, and its blocks were
    // shared: fewer blocks at the peak.
    EXPECT_EQ(s1.prompt_tokens, 10 + 5 + 13);
    EXPECT_EQ(s2.prompt_tokens, 8 * (10 + 5 + 13));
    EXPECT_LT(s1.peak_blocks, s2.peak_blocks);
    EXPECT_EQ(s1.generated_tokens, s2.generated_tokens);
}

TEST(GroupGenerator, BehaviourLogprobsMatchTrainerRecomputation) {
    // Log-prob parity: what the rollout reports equals what the trainer recomputes on the same
    // weights, within 1e-5, at temperature 1 and at 0.7.
    const ModelConfig cfg = gen_config();
    const ModelWeights w = test_weights(cfg);
    auto gen = GroupGenerator::create(cfg, GeneratorOptions{.block_tokens = 4});
    auto trainer = Transformer<float>::create(cfg);
    ASSERT_TRUE(gen.ok() && trainer.ok());
    const auto ps = prompts();
    for (const double temperature : {1.0, 0.7}) {
        SamplingOptions so;
        so.temperature = temperature;
        so.max_new_tokens = 14;
        so.seed = 99;
        auto out = gen->generate(w.data(), ps, 8, so);
        ASSERT_TRUE(out.ok());
        PackedBatch batch;
        for (const auto& c : *out) batch.add(ps[c.prompt], c.tokens);
        std::vector<float> logp(batch.tokens.size());
        ASSERT_TRUE(trainer->forward(w.data(), batch, temperature, logp.data(), nullptr).ok());
        double worst = 0;
        for (size_t i = 0; i < out->size(); ++i) {
            const auto& c = (*out)[i];
            const int64_t base = batch.begin[i] + static_cast<int64_t>(ps[c.prompt].size());
            for (size_t j = 0; j < c.tokens.size(); ++j) {
                worst =
                    std::max(worst, std::abs(static_cast<double>(logp[base + j]) - c.logprobs[j]));
            }
        }
        EXPECT_LT(worst, 1e-5) << "temperature " << temperature;
    }
}

TEST(GroupGenerator, SameSeedSameSamplesAndOtherSeedsDiffer) {
    const ModelConfig cfg = gen_config();
    const ModelWeights w = test_weights(cfg);
    auto gen = GroupGenerator::create(cfg);
    ASSERT_TRUE(gen.ok());
    SamplingOptions so;
    so.seed = 5;
    const auto ps = prompts();
    auto a = gen->generate(w.data(), ps, 4, so);
    auto b = gen->generate(w.data(), ps, 4, so);
    so.seed = 6;
    auto c = gen->generate(w.data(), ps, 4, so);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    int same_as_other_seed = 0;
    for (size_t i = 0; i < a->size(); ++i) {
        EXPECT_EQ((*a)[i].tokens, (*b)[i].tokens);
        same_as_other_seed += (*a)[i].tokens == (*c)[i].tokens;
    }
    EXPECT_LT(same_as_other_seed, 3);
    // A sample's stream depends on (seed, prompt, sample) only: generating one prompt alone
    // gives the same completions as within the batch.
    so.seed = 5;
    auto alone = gen->generate(w.data(), std::span(ps).subspan(0, 1), 4, so);
    ASSERT_TRUE(alone.ok());
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ((*alone)[i].tokens, (*a)[i].tokens);
}

TEST(GroupGenerator, StopsAtEosOrMaxNewTokens) {
    const ModelConfig cfg = gen_config();
    const ModelWeights w = test_weights(cfg);
    auto gen = GroupGenerator::create(cfg);
    ASSERT_TRUE(gen.ok());
    SamplingOptions so;
    so.max_new_tokens = 6;
    so.seed = 3;
    auto out = gen->generate(w.data(), prompts(), 16, so);
    ASSERT_TRUE(out.ok());
    int finished = 0;
    for (const auto& c : *out) {
        ASSERT_LE(c.tokens.size(), 6u);
        ASSERT_EQ(c.tokens.size(), c.logprobs.size());
        if (c.finished) {
            ++finished;
            EXPECT_EQ(c.tokens.back(), 2);
        } else {
            EXPECT_EQ(c.tokens.size(), 6u);
        }
        for (size_t j = 0; j + 1 < c.tokens.size(); ++j) EXPECT_NE(c.tokens[j], 2);
    }
    EXPECT_GT(finished, 0);
    so.max_new_tokens = 40;
    auto too_long = gen->generate(w.data(), prompts(), 2, so);
    EXPECT_EQ(too_long.status().code(), StatusCode::kInvalidArgument);
}

TEST(Sampler, GreedyTopKAndTopPKeepTheLikeliestTokens) {
    const std::vector<float> logits{0.0f, 3.0f, 1.0f, 2.9f, -1.0f};
    Sampler s;
    Rng rng(1);
    SamplingOptions greedy;
    greedy.temperature = 0;
    EXPECT_EQ(s.sample(logits.data(), 5, greedy, rng).token, 1);
    SamplingOptions k2;
    k2.top_k = 2;
    SamplingOptions p_small;
    p_small.top_p = 0.3;  // token 1 alone holds ~0.45
    std::map<int32_t, int> hist_k, hist_p, hist_all;
    SamplingOptions all;
    for (int i = 0; i < 4000; ++i) {
        ++hist_k[s.sample(logits.data(), 5, k2, rng).token];
        ++hist_p[s.sample(logits.data(), 5, p_small, rng).token];
        ++hist_all[s.sample(logits.data(), 5, all, rng).token];
    }
    EXPECT_EQ(hist_k.size(), 2u);
    EXPECT_TRUE(hist_k.count(1) && hist_k.count(3));
    EXPECT_EQ(hist_p.size(), 1u);
    EXPECT_EQ(hist_all.size(), 5u);
    // Frequencies follow the softmax: p(1) = e^3 / Z.
    double z = 0;
    for (const float l : logits) z += std::exp(l);
    EXPECT_NEAR(hist_all[1] / 4000.0, std::exp(3.0) / z, 0.03);
    // The reported log-prob is of the full distribution, whatever the truncation.
    const SampledToken t = s.sample(logits.data(), 5, k2, rng);
    EXPECT_NEAR(t.logprob, logits[t.token] - std::log(z), 1e-6);
}

}  // namespace
}  // namespace tandem::model
