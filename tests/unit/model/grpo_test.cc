// GRPO loss and advantages, AdamW and the schedule, the trainer's step and resume, and a short
// in-process GRPO run on the reverse task.
#include "common/model/grpo.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "common/model/layers.h"
#include "common/model/optimizer.h"
#include "common/model/trainer.h"
#include "common/rl/local_loop.h"
#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

TEST(GroupAdvantages, NormaliseWithinEachGroup) {
    const std::vector<double> r{1, 0, 0, 1, 0.5, 0.5, 0.2};
    const std::vector<uint64_t> g{7, 7, 7, 7, 9, 9, 4};
    const auto a = group_advantages(r, g);
    // Group 7: mean 0.5, std 0.5.
    EXPECT_NEAR(a[0], 1.0, 1e-5);
    EXPECT_NEAR(a[1], -1.0, 1e-5);
    EXPECT_NEAR(a[3], 1.0, 1e-5);
    // Equal rewards and singleton groups carry no signal.
    EXPECT_EQ(a[4], 0.0);
    EXPECT_EQ(a[5], 0.0);
    EXPECT_EQ(a[6], 0.0);
}

TEST(GrpoTokenLoss, WeightIsTheDerivativeOfTheLoss) {
    GrpoOptions o;
    o.clip_eps = 0.2;
    o.kl_coef = 0.1;
    const double scale = 0.25, eps = 1e-6;
    for (const double adv : {1.3, -0.7}) {
        for (const double delta : {-0.5, -0.1, 0.0, 0.1, 0.5}) {  // logp - behaviour
            const double beh = -1.2, ref = -1.0, lp = beh + delta;
            const TokenLoss t = grpo_token_loss(lp, beh, ref, adv, o, scale);
            const double numeric = (grpo_token_loss(lp + eps, beh, ref, adv, o, scale).loss -
                                    grpo_token_loss(lp - eps, beh, ref, adv, o, scale).loss) /
                                   (2 * eps);
            EXPECT_NEAR(t.weight, numeric, 1e-6) << adv << " " << delta;
            // Outside the trust region in the advantage's direction the policy term is clipped.
            const bool expect_clipped =
                (adv > 0 && delta > std::log(1.2)) || (adv < 0 && delta < std::log(0.8));
            EXPECT_EQ(t.clipped, expect_clipped) << adv << " " << delta;
        }
    }
    // On-policy (ratio 1) without KL: loss -A * scale, weight -A * scale.
    o.kl_coef = 0;
    const TokenLoss t = grpo_token_loss(-2.0, -2.0, -2.0, 0.5, o, 0.1);
    EXPECT_NEAR(t.loss, -0.05, 1e-12);
    EXPECT_NEAR(t.weight, -0.05, 1e-12);
    EXPECT_EQ(t.kl, 0.0);
}

TEST(GrpoTokenLoss, DualClipBoundsTheWeightOfNegativeAdvantagesFromAnotherSampler) {
    // Behaviour log-probs from a quantized KV cache can sit nats below the trainer's: ratio e^9.
    GrpoOptions o;
    o.clip_eps = 0.2;
    const double beh = -10.0, lp = -1.0, adv = -0.7, scale = 0.5;
    const TokenLoss t = grpo_token_loss(lp, beh, lp, adv, o, scale);
    EXPECT_GT(t.ratio, o.dual_clip);
    EXPECT_TRUE(t.clipped);
    EXPECT_EQ(t.weight, 0.0);
    EXPECT_NEAR(t.loss, -o.dual_clip * adv * scale, 1e-12);
    // Below the dual clip the unclipped branch stays: weight -ratio * A * scale.
    const TokenLoss below = grpo_token_loss(beh + std::log(2.5), beh, beh, adv, o, scale);
    EXPECT_FALSE(below.clipped);
    EXPECT_NEAR(below.weight, -2.5 * adv * scale, 1e-9);
    // Positive advantages are untouched (the ordinary clip already caps them), and off it is the
    // plain clipped objective: weight -ratio * A * scale however large the ratio.
    EXPECT_TRUE(grpo_token_loss(lp, beh, lp, 0.7, o, scale).clipped);
    o.dual_clip = 0;
    const TokenLoss off = grpo_token_loss(lp, beh, lp, adv, o, scale);
    EXPECT_FALSE(off.clipped);
    EXPECT_NEAR(off.weight, -std::exp(9.0) * adv * scale, 1e-6);
}

TEST(GrpoTokenLoss, TruncatedImportanceSamplingWeightsTheTokenAndCutsItAtTheCap) {
    GrpoOptions o;
    o.clip_eps = 0.2;
    o.tis_cap = 2.0;
    const double lp = -1.0, scale = 0.5;
    for (const double adv : {0.7, -0.7}) {
        // One update per step (old = logp): ratio 1, the policy term is -w A with w =
        // exp(logp - behaviour), a constant.
        const TokenLoss t = grpo_token_loss(lp, lp - std::log(1.5), lp, adv, o, scale);
        EXPECT_NEAR(t.tis_weight, 1.5, 1e-12) << adv;
        EXPECT_FALSE(t.tis_truncated) << adv;
        EXPECT_EQ(t.ratio, 1.0) << adv;
        EXPECT_FALSE(t.clipped) << adv;
        EXPECT_NEAR(t.weight, -1.5 * adv * scale, 1e-12) << adv;
        EXPECT_NEAR(t.loss, -1.5 * adv * scale, 1e-12) << adv;
        // A sampler that under-weights the token by 9 nats (an int2 KV cache): w is cut to the
        // cap, and a right token in an above-average sample still gets its gradient (without
        // TIS the ratio e^9 clips it to none).
        const TokenLoss far = grpo_token_loss(lp, lp - 9.0, lp, adv, o, scale);
        EXPECT_EQ(far.tis_weight, 2.0) << adv;
        EXPECT_TRUE(far.tis_truncated) << adv;
        EXPECT_NEAR(far.weight, -2.0 * adv * scale, 1e-12) << adv;
        // A sampler that over-weights it: w < 1, not truncated.
        const TokenLoss over = grpo_token_loss(lp, lp + 1.0, lp, adv, o, scale);
        EXPECT_NEAR(over.tis_weight, std::exp(-1.0), 1e-12) << adv;
        EXPECT_FALSE(over.tis_truncated) << adv;
        EXPECT_NEAR(over.weight, -std::exp(-1.0) * adv * scale, 1e-12) << adv;
    }
    GrpoOptions no_tis = o;
    no_tis.tis_cap = 0;
    EXPECT_EQ(grpo_token_loss(lp, lp - 9.0, lp, 0.7, no_tis, scale).weight, 0.0);

    // A later mini-batch (the trainer's pre-update log-prob old != logp): the ratio and its clip
    // are taken against old, w against the behaviour log-prob; weight = dloss/dlogp.
    const double old = -1.3, beh = -1.8, ref = -1.1, eps = 1e-6;  // w = e^0.5 < cap
    o.kl_coef = 0.1;
    for (const double adv : {1.3, -0.7}) {
        for (const double delta : {-0.5, -0.1, 0.0, 0.1, 0.5}) {  // logp - old
            const double l = old + delta;
            const TokenLoss t = grpo_token_loss(l, old, beh, ref, adv, o, scale);
            const double numeric = (grpo_token_loss(l + eps, old, beh, ref, adv, o, scale).loss -
                                    grpo_token_loss(l - eps, old, beh, ref, adv, o, scale).loss) /
                                   (2 * eps);
            EXPECT_NEAR(t.weight, numeric, 1e-6) << adv << " " << delta;
            EXPECT_NEAR(t.ratio, std::exp(delta), 1e-12);
            EXPECT_NEAR(t.tis_weight, std::exp(old - beh), 1e-12);
            const bool expect_clipped =
                (adv > 0 && delta > std::log(1.2)) || (adv < 0 && delta < std::log(0.8));
            EXPECT_EQ(t.clipped, expect_clipped) << adv << " " << delta;
        }
    }
}

// The token loss of 83d584a, before tis_cap, as it was.
TokenLoss token_loss_before_tis(double logp, double behaviour_logp, double ref_logp,
                                double advantage, const GrpoOptions& o, double scale) {
    TokenLoss t;
    t.ratio = std::exp(logp - behaviour_logp);
    const double clipped_ratio = std::clamp(t.ratio, 1.0 - o.clip_eps, 1.0 + o.clip_eps);
    const double surr1 = t.ratio * advantage, surr2 = clipped_ratio * advantage;
    double dobj = 0;
    if (surr1 <= surr2) {
        dobj = t.ratio * advantage;
    } else {
        t.clipped = true;
    }
    double obj = std::min(surr1, surr2);
    if (advantage < 0 && o.dual_clip > 0 && obj < o.dual_clip * advantage) {
        obj = o.dual_clip * advantage;
        dobj = 0;
        t.clipped = true;
    }
    t.loss = -obj;
    t.weight = -dobj;
    if (o.kl_coef > 0) {
        const double d = ref_logp - logp;
        t.kl = std::exp(d) - d - 1.0;
        t.loss += o.kl_coef * t.kl;
        t.weight += o.kl_coef * (1.0 - std::exp(d));
    }
    t.loss *= scale;
    t.weight *= scale;
    return t;
}

TEST(GrpoTokenLoss, TisCapZeroIsBitIdenticalToTheLossBefore) {
    GrpoOptions o;
    o.tis_cap = 0;
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> u(-12.0, 0.0), a(-2.0, 2.0);
    for (int i = 0; i < 2000; ++i) {
        o.kl_coef = i % 2 ? 0.0 : 0.05;
        o.dual_clip = i % 3 ? 3.0 : 0.0;
        const double lp = u(rng), old = u(rng), beh = u(rng), ref = u(rng), adv = a(rng);
        const TokenLoss want = token_loss_before_tis(lp, beh, ref, adv, o, 0.125);
        for (const TokenLoss& got : {grpo_token_loss(lp, old, beh, ref, adv, o, 0.125),
                                     grpo_token_loss(lp, beh, ref, adv, o, 0.125)}) {
            EXPECT_EQ(got.loss, want.loss) << i;
            EXPECT_EQ(got.weight, want.weight) << i;
            EXPECT_EQ(got.ratio, want.ratio) << i;
            EXPECT_EQ(got.kl, want.kl) << i;
            EXPECT_EQ(got.clipped, want.clipped) << i;
            EXPECT_EQ(got.tis_weight, 1.0) << i;
            EXPECT_FALSE(got.tis_truncated) << i;
        }
    }
}

TEST(GrpoTokenLoss, BadTisCapIsNamedByFileAndField) {
    const std::string dir = ::testing::TempDir() + "/tandem_tis_cap_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    const std::string path = dir + "/job.yaml";
    for (const auto& [value, want] :
         {std::pair<std::string, std::string>{"-1", "algorithm.tis_cap: -1 is out of range"},
          {"two", "algorithm.tis_cap:"}}) {
        std::ofstream(path) << "name: j\nkind: grpo\nalgorithm:\n  tis_cap: " << value << "\n";
        const auto r = config::load_job_file(path);
        ASSERT_FALSE(r.ok()) << value;
        const std::string msg = r.status().message();
        EXPECT_NE(msg.find("job.yaml:4:12: " + want), std::string::npos) << msg;
    }
    std::ofstream(path) << "name: j\nkind: grpo\nalgorithm:\n  tis_cap: 0\n";
    const auto off = config::load_job_file(path);
    ASSERT_TRUE(off.ok()) << off.status().to_string();
    EXPECT_EQ(off->algorithm.tis_cap, 0.0);
    EXPECT_EQ(config::AlgorithmSpec{}.tis_cap, 2.0);
    std::filesystem::remove_all(dir);
}

TEST(LearningRate, WarmupThenConstantLinearOrCosine) {
    config::OptimizerSpec s;
    s.lr = 1.0;
    s.warmup_steps = 4;
    EXPECT_NEAR(learning_rate(s, 0, 104), 0.25, 1e-12);
    EXPECT_NEAR(learning_rate(s, 3, 104), 1.0, 1e-12);
    EXPECT_NEAR(learning_rate(s, 50, 104), 1.0, 1e-12);
    s.schedule = config::LrSchedule::kLinear;
    EXPECT_NEAR(learning_rate(s, 54, 104), 0.5, 1e-12);
    EXPECT_NEAR(learning_rate(s, 104, 104), 0.0, 1e-12);
    s.schedule = config::LrSchedule::kCosine;
    EXPECT_NEAR(learning_rate(s, 4, 104), 1.0, 1e-12);
    EXPECT_NEAR(learning_rate(s, 54, 104), 0.5, 1e-12);
    EXPECT_NEAR(learning_rate(s, 104, 104), 0.0, 1e-12);
}

TEST(AdamW, MatchesTheUpdateRuleWithClippingAndDecay) {
    const ModelConfig cfg = testing::tiny_config(false);
    auto index_layout = make_param_layout(cfg);
    ASSERT_TRUE(index_layout.ok());
    auto index = ParamIndex::create(cfg, *index_layout);
    ASSERT_TRUE(index.ok());
    config::OptimizerSpec s;
    s.lr = 0.01;
    s.weight_decay = 0.1;
    s.grad_clip = 0.5;
    AdamW opt(s, *index, 10);
    const size_t n = static_cast<size_t>(index->elements);
    std::vector<float> p = testing::random_vector<float>(n, 1), p0 = p;
    std::vector<float> g = testing::random_vector<float>(n, 2), g0 = g;
    double norm = 0;
    for (const float x : g0) norm += static_cast<double>(x) * x;
    norm = std::sqrt(norm);
    const auto r = opt.step(p.data(), g.data());
    EXPECT_NEAR(r.grad_norm, norm, 1e-3);
    EXPECT_NEAR(r.lr, 0.01, 1e-12);
    const size_t in_matrix = index->layers[0].wq, in_norm = index->layers[0].input_norm;
    for (const size_t i : {in_matrix, in_norm}) {
        const double gc = g0[i] * 0.5 / norm;
        const double m = 0.1 * gc / (1 - 0.9), v = 0.01 * gc * gc / (1 - 0.99);
        const double decayed = i == in_matrix ? p0[i] * (1 - 0.01 * 0.1) : p0[i];
        EXPECT_NEAR(p[i], decayed - 0.01 * m / (std::sqrt(v) + 1e-8), 1e-6) << i;
    }
}

config::JobSpec small_job() {
    config::JobSpec job;
    job.name = "test";
    job.algorithm.steps = 20;
    job.algorithm.prompts_per_step = 16;
    job.algorithm.group_size = 8;
    job.task.name = config::TaskName::kReverse;
    return job;
}

std::vector<Trajectory> fake_batch(int seed) {
    std::vector<Trajectory> b;
    std::mt19937_64 rng(static_cast<uint64_t>(seed));
    for (int i = 0; i < 12; ++i) {
        Trajectory t;
        t.prompt = {1, 4, 5, 6, 14};
        for (int j = 0; j < 3 + i % 3; ++j) {
            t.completion.push_back(static_cast<int32_t>(3 + rng() % 10));
            t.behaviour_logprobs.push_back(-2.7f);
        }
        t.reward = static_cast<double>(rng() % 5) / 4.0;
        t.group = static_cast<uint64_t>(i / 4);
        b.push_back(t);
    }
    return b;
}

TEST(GrpoTrainer, ResumeFromCheckpointContinuesIdentically) {
    const config::JobSpec job = small_job();
    auto cfg = ModelConfig::from_spec(job.model, Vocabulary::builtin().size());
    ASSERT_TRUE(cfg.ok());
    auto w0 = ModelWeights::random(*cfg, 11);
    ASSERT_TRUE(w0.ok());
    TrainerOptions to = TrainerOptions::from_job(job);
    to.micro_batch = 5;  // several backward passes per step
    auto a = GrpoTrainer::create(*w0, to);
    auto b = GrpoTrainer::create(*w0, to);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE((*a)->step(fake_batch(1)).ok());
    const std::string root =
        ::testing::TempDir() + "/tandem_model_resume_" + std::to_string(::getpid());
    std::filesystem::remove_all(root);
    TrainerState st;
    st.step = 1;
    st.version = 1;
    st.data_cursor = 16;
    auto path = (*a)->save_checkpoint(root, st, nullptr);
    ASSERT_TRUE(path.ok()) << path.status().to_string();
    auto restored = (*b)->restore(*path);
    ASSERT_TRUE(restored.ok()) << restored.status().to_string();
    EXPECT_EQ(restored->data_cursor, 16u);
    EXPECT_EQ((*b)->steps_taken(), 1);
    auto sa = (*a)->step(fake_batch(2));
    auto sb = (*b)->step(fake_batch(2));
    ASSERT_TRUE(sa.ok() && sb.ok());
    EXPECT_EQ(sa->loss, sb->loss);
    EXPECT_EQ(
        std::memcmp((*a)->weights().data(), (*b)->weights().data(), (*a)->weights().bytes().size()),
        0);
    std::filesystem::remove_all(root);
}

TEST(GrpoTrainer, KlPenaltyIsZeroAtTheReferenceAndGrowsAfterSteps) {
    config::JobSpec job = small_job();
    job.algorithm.kl_coef = 0.05;
    auto cfg = ModelConfig::from_spec(job.model, Vocabulary::builtin().size());
    auto w0 = ModelWeights::random(*cfg, 12);
    ASSERT_TRUE(w0.ok());
    auto t = GrpoTrainer::create(*w0, TrainerOptions::from_job(job));
    ASSERT_TRUE(t.ok());
    auto s1 = (*t)->step(fake_batch(3));
    ASSERT_TRUE(s1.ok());
    EXPECT_EQ(s1->kl, 0.0);
    EXPECT_GT(s1->entropy, 2.0);  // near-uniform over 15 tokens at init
    auto s2 = (*t)->step(fake_batch(4));
    ASSERT_TRUE(s2.ok());
    EXPECT_GT(s2->kl, 0.0);
    EXPECT_GT(s2->grad_norm, 0.0);
}

TEST(GrpoTrainer, RejectsMalformedTrajectories) {
    const config::JobSpec job = small_job();
    auto cfg = ModelConfig::from_spec(job.model, Vocabulary::builtin().size());
    auto t = GrpoTrainer::create(*ModelWeights::random(*cfg, 1), TrainerOptions::from_job(job));
    ASSERT_TRUE(t.ok());
    auto b = fake_batch(5);
    b[3].behaviour_logprobs.pop_back();
    const auto r = (*t)->step(b);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("trajectory 3"), std::string::npos);
}

TEST(GrpoTrainer, MiniBatchesTakeSeveralUpdatesPerStep) {
    const config::JobSpec job = small_job();
    auto cfg = ModelConfig::from_spec(job.model, Vocabulary::builtin().size());
    TrainerOptions to = TrainerOptions::from_job(job);
    to.mini_batches = 3;
    auto t = GrpoTrainer::create(*ModelWeights::random(*cfg, 2), to);
    ASSERT_TRUE(t.ok());
    // Behaviour log-probs from the current weights: the first mini-batch is on-policy (ratio 1),
    // the later ones see the updated policy.
    auto batch = fake_batch(6);
    auto tr = Transformer<float>::create(*cfg);
    ASSERT_TRUE(tr.ok());
    PackedBatch pb;
    for (const auto& x : batch) pb.add(x.prompt, x.completion);
    std::vector<float> lp(pb.tokens.size());
    ASSERT_TRUE(tr->forward((*t)->weights().data(), pb, 1.0, lp.data(), nullptr).ok());
    for (size_t i = 0; i < batch.size(); ++i) {
        for (size_t j = 0; j < batch[i].completion.size(); ++j) {
            batch[i].behaviour_logprobs[j] = lp[pb.begin[i] + batch[i].prompt.size() + j];
        }
    }
    auto s = (*t)->step(batch);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->updates, 3);
    EXPECT_EQ(s->step, 1);
    EXPECT_EQ((*t)->steps_taken(), 1);
    EXPECT_EQ((*t)->optimizer().steps_taken(), 3);
    EXPECT_GT(s->ratio_max, 1.0 + 1e-4);
}

TEST(GrpoTrainer, TruncatedImportanceSamplingTakesLaterMiniBatchesAgainstThePreUpdatePolicy) {
    config::JobSpec job = small_job();
    job.algorithm.tis_cap = 2.0;
    auto cfg = ModelConfig::from_spec(job.model, Vocabulary::builtin().size());
    TrainerOptions to = TrainerOptions::from_job(job);
    to.mini_batches = 3;
    to.micro_batch = 5;
    auto w0 = ModelWeights::random(*cfg, 2);
    ASSERT_TRUE(w0.ok());
    // Behaviour log-probs from the initial weights, shifted by `shift` nats.
    auto batch_with = [&](double shift) {
        auto batch = fake_batch(6);
        auto tr = Transformer<float>::create(*cfg);
        PackedBatch pb;
        for (const auto& x : batch) pb.add(x.prompt, x.completion);
        std::vector<float> lp(pb.tokens.size());
        EXPECT_TRUE(tr->forward(w0->data(), pb, 1.0, lp.data(), nullptr).ok());
        for (size_t i = 0; i < batch.size(); ++i) {
            for (size_t j = 0; j < batch[i].completion.size(); ++j) {
                batch[i].behaviour_logprobs[j] =
                    static_cast<float>(lp[pb.begin[i] + batch[i].prompt.size() + j] + shift);
            }
        }
        return batch;
    };
    // Same sampler: every w is 1 to float rounding, also for the mini-batches after the first
    // update (their old log-probs are the pre-update policy's), while the PPO ratios move.
    auto t = GrpoTrainer::create(*w0, to);
    ASSERT_TRUE(t.ok());
    auto s = (*t)->step(batch_with(0.0));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->updates, 3);
    EXPECT_NEAR(s->tis_weight_mean, 1.0, 1e-4);
    EXPECT_EQ(s->tis_truncated_fraction, 0.0);
    EXPECT_GT(s->ratio_max, 1.0 + 1e-4);
    // A sampler 1.5 nats below the trainer on every token: w = e^1.5 is cut to 2 everywhere,
    // and the ratios are the trainer's own (1 for the first mini-batch), not e^1.5 = 4.5.
    auto t2 = GrpoTrainer::create(*w0, to);
    ASSERT_TRUE(t2.ok());
    auto s2 = (*t2)->step(batch_with(-1.5));
    ASSERT_TRUE(s2.ok()) << s2.status().to_string();
    EXPECT_DOUBLE_EQ(s2->tis_weight_mean, 2.0);
    EXPECT_EQ(s2->tis_truncated_fraction, 1.0);
    EXPECT_LT(s2->ratio_mean, 2.0);
    EXPECT_GT(s2->logprob_diff_max, 1.5 - 1e-4);
    // Off: the ratio is against the behaviour log-probs again.
    to.algorithm.tis_cap = 0;
    auto t3 = GrpoTrainer::create(*w0, to);
    ASSERT_TRUE(t3.ok());
    auto s3 = (*t3)->step(batch_with(-1.5));
    ASSERT_TRUE(s3.ok()) << s3.status().to_string();
    EXPECT_EQ(s3->tis_weight_mean, 1.0);
    EXPECT_GT(s3->ratio_mean, 4.0);
}

TEST(GrpoTrainer, SupervisedStepsLowerTheCompletionNll) {
    const config::JobSpec job = small_job();
    auto cfg = ModelConfig::from_spec(job.model, Vocabulary::builtin().size());
    auto t = GrpoTrainer::create(*ModelWeights::random(*cfg, 3), TrainerOptions::from_job(job));
    ASSERT_TRUE(t.ok());
    const auto batch = fake_batch(7);
    auto first = (*t)->supervised_step(batch);
    ASSERT_TRUE(first.ok());
    EXPECT_NEAR(first->loss, std::log(15.0), 0.2);  // near-uniform at init
    double last = first->loss;
    for (int i = 0; i < 10; ++i) last = (*t)->supervised_step(batch)->loss;
    EXPECT_LT(last, first->loss - 0.5);
    EXPECT_EQ((*t)->steps_taken(), 11);
}

TEST(LocalGrpo, ReverseTaskLearnsWellAboveTheRandomPolicy) {
    // The default model (2 layers, 64 wide) and algorithm (32 prompts x groups of 8) on reverse-3,
    // short enough for the unit suite. The first step's reward is the random policy's.
    set_blas_threads(1);  // as an actor on a shared machine would
    config::JobSpec job = small_job();
    job.algorithm.prompts_per_step = 32;
    job.task.min_length = job.task.max_length = 3;
    job.rollout.sampling.max_new_tokens = 4;
    std::vector<double> rewards;
    auto run = rl::run_local_grpo(job, {.steps = 60, .on_step = [&](const rl::LocalStep& s) {
                                            rewards.push_back(s.reward_mean);
                                        }});
    ASSERT_TRUE(run.ok()) << run.status().to_string();
    ASSERT_EQ(rewards.size(), 60u);
    double last5 = 0;
    for (size_t i = rewards.size() - 5; i < rewards.size(); ++i) last5 += rewards[i] / 5;
    std::string curve;
    for (size_t i = 0; i < rewards.size(); i += 5)
        curve += " " + std::to_string(rewards[i]).substr(0, 5);
    RecordProperty("reward_curve_every_5", curve);
    EXPECT_LT(rewards[0], 0.12) << curve;
    EXPECT_GT(last5, 2.5 * rewards[0]) << curve;
    EXPECT_GT(last5, 0.18) << curve;
}

}  // namespace
}  // namespace tandem::model
