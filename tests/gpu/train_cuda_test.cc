// The device training path (common/gpu/device_model.h backward, device_trainer.h) against the CPU
// engine on the small random models of model_test_util.h. Skips with a reason without a device.
//
// 1. Backward: DeviceModel::train_forward + backward with fixed random loss weights per token
//    against Transformer<double> on the same bf16-rounded weights. The device rounds activations
//    and activation gradients to bf16 where they enter a GEMM, so gradients agree to about a
//    percent: global norm |err| <= 3e-2 x norm(ref); per tensor rms(err) <= 6e-2 x rms(ref).
// 2. One GRPO step (KL on, two micro-batches, shared prompts, clipping and weight decay) of
//    DeviceTrainer against model::GrpoTrainer (fp32 CPU): loss |err| <= 3e-2 (a token mean of
//    ratio x advantage terms with log-prob errors of ~1e-2), grad_norm |err| <= 3e-2 x norm,
//    mean KL and entropy |err| <= 3e-2 + 1e-2 |ref|. Updated weights: AdamW's first update is
//    lr x g / (|g| + eps), about lr x sign(g), so an element differs only where the two
//    gradients' signs differ (tiny gradients): every |w_dev - w_cpu| <= 2 lr + 1e-6 and at most
//    10% of the elements differ by more than lr / 10.
// The observed errors are printed for the first device run to tighten these.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/gpu/device_trainer.h"
#include "common/model/grpo_batch.h"
#include "common/model/model_weights.h"
#include "common/model/trainer.h"
#include "common/model/transformer.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/gpu/model_test_util.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::gpu {
namespace {

using kernels::cuda::testing::CudaFixture;
using kernels::testkit::test_seed;
using testing::Case;
using testing::cases;
using testing::make_batch;
using testing::make_trajectories;
using testing::random_params;

// Named slices of the flat parameter buffer worth comparing one by one.
struct Slice {
    std::string name;
    uint64_t offset;
    int64_t length;
};

std::vector<Slice> slices(const model::ParamIndex& index, const model::ModelConfig& c) {
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    const auto& first = index.layers.front();
    const auto& last = index.layers.back();
    std::vector<Slice> out = {
        {"embed", index.embed, c.vocab_size * h}, {"layer0.wq", first.wq, qd * h},
        {"layer0.wk", first.wk, kvd * h},         {"layer0.wv", first.wv, kvd * h},
        {"layer0.wo", first.wo, h * qd},          {"layer0.input_norm", first.input_norm, h},
        {"last.wg", last.wg, inter * h},          {"last.wd", last.wd, h * inter},
        {"last.post_norm", last.post_norm, h},    {"final_norm", index.final_norm, h},
    };
    if (index.lm_head != index.embed) out.push_back({"lm_head", index.lm_head, c.vocab_size * h});
    if (first.bq != model::ParamIndex::kAbsent) out.push_back({"layer0.bq", first.bq, qd});
    if (first.bk != model::ParamIndex::kAbsent) out.push_back({"layer0.bk", first.bk, kvd});
    if (first.bo != model::ParamIndex::kAbsent) out.push_back({"layer0.bo", first.bo, h});
    if (first.bg != model::ParamIndex::kAbsent) out.push_back({"layer0.bg", first.bg, inter});
    if (first.q_norm != model::ParamIndex::kAbsent) {
        out.push_back({"layer0.q_norm", first.q_norm, c.head_dim()});
        out.push_back({"layer0.k_norm", first.k_norm, c.head_dim()});
    }
    return out;
}

double rms(const double* x, int64_t n) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    return std::sqrt(ss / static_cast<double>(std::max<int64_t>(n, 1)));
}

class DeviceTrainTest : public CudaFixture {};

TEST_F(DeviceTrainTest, BackwardMatchesTheCpuEngineForEachArchitecture) {
    int salt = 0;
    for (const Case& cs : cases()) {
        SCOPED_TRACE(cs.name);
        const model::ModelConfig& c = cs.config;
        std::vector<float> params;
        const auto dm =
            testing::random_device_model(*this, c, uint64_t{test_seed()} * 733 + ++salt, params);
        ASSERT_TRUE(dm);
        const model::ParamIndex& index = dm->index();
        const model::PackedBatch batch = make_batch(c.vocab_size, uint64_t{test_seed()} + salt);
        const int64_t n = batch.num_tokens();
        // Loss weights of the size GRPO gives: advantage-like values over the token count.
        std::mt19937_64 rng(uint64_t{test_seed()} * 31 + salt);
        std::normal_distribution<double> dist(0.0, 1.0);
        std::vector<double> wd(static_cast<size_t>(n));
        for (auto& v : wd) v = dist(rng) / static_cast<double>(n);
        const std::vector<float> wf(wd.begin(), wd.end());

        std::vector<float> lp(static_cast<size_t>(n)), ent(static_cast<size_t>(n));
        alloc_->reset_peak();
        Status st = dm->train_forward(s(), batch, 0.8, lp.data(), ent.data());
        ASSERT_TRUE(st.ok()) << st.to_string();
        float* grads = device<float>(index.elements);
        ASSERT_TRUE(kernels::cuda::fill_zero(s(), grads, index.elements * sizeof(float)).ok());
        st = dm->backward(s(), wf.data(), grads);
        ASSERT_TRUE(st.ok()) << st.to_string();
        const std::vector<float> got = download(grads, index.elements);
        dm->release_activations();

        auto ref = model::Transformer<double>::create(c);
        ASSERT_TRUE(ref.ok()) << ref.status().to_string();
        const std::vector<double> pd(params.begin(), params.end());
        std::vector<double> want_lp(static_cast<size_t>(n)), want(index.elements, 0.0);
        ASSERT_TRUE(ref->forward(pd.data(), batch, 0.8, want_lp.data(), nullptr).ok());
        ASSERT_TRUE(ref->backward(pd.data(), wd.data(), want.data()).ok());

        double ss = 0, ss_err = 0;
        for (uint64_t i = 0; i < index.elements; ++i) {
            ASSERT_TRUE(std::isfinite(got[i])) << "gradient element " << i;
            ss += want[i] * want[i];
            ss_err += (got[i] - want[i]) * (got[i] - want[i]);
        }
        const double norm = std::sqrt(ss), norm_err = std::sqrt(ss_err);
        std::printf("%s: gradient norm %.4e, |err| %.3e; peak device memory %.2f MiB\n", cs.name,
                    norm, norm_err, static_cast<double>(alloc_->peak_bytes()) / (1 << 20));
        EXPECT_LE(norm_err, 3e-2 * norm) << "seed " << test_seed();
        for (const Slice& sl : slices(index, c)) {
            std::vector<double> err(static_cast<size_t>(sl.length));
            for (int64_t i = 0; i < sl.length; ++i)
                err[i] = got[sl.offset + i] - want[sl.offset + i];
            const double r = rms(want.data() + sl.offset, sl.length);
            const double e = rms(err.data(), sl.length);
            std::printf("  %-18s rms(ref) %.3e rms(err) %.3e (%.2f%%)\n", sl.name.c_str(), r, e,
                        r > 0 ? 100.0 * e / r : 0.0);
            EXPECT_LE(e, 6e-2 * r) << sl.name << ", seed " << test_seed();
        }
    }
}

TEST_F(DeviceTrainTest, OneGrpoStepMatchesTheCpuTrainer) {
    int salt = 100;
    for (const Case& cs : cases()) {
        SCOPED_TRACE(cs.name);
        const model::ModelConfig& c = cs.config;
        auto initial = model::ModelWeights::zeros(c);
        ASSERT_TRUE(initial.ok()) << initial.status().to_string();
        const std::vector<float> params =
            random_params(initial->index(), c, uint64_t{test_seed()} * 977 + ++salt);
        std::copy(params.begin(), params.end(), initial->data());
        const std::vector<model::Trajectory> batch =
            make_trajectories(c, *initial, uint64_t{test_seed()} + salt);
        ASSERT_EQ(batch.size(), 6u);

        model::TrainerOptions opt;
        opt.temperature = 0.9;
        opt.micro_batch = 4;  // two micro-batches: gradients accumulate
        opt.algorithm.steps = 10;
        opt.algorithm.clip_eps = 0.2;
        opt.algorithm.kl_coef = 0.05;
        opt.algorithm.optimizer.lr = 1e-3;
        opt.algorithm.optimizer.weight_decay = 0.01;
        opt.algorithm.optimizer.grad_clip = 0.5;

        auto cpu = model::GrpoTrainer::create(*initial, opt);
        ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
        auto dev = DeviceTrainer::create(*initial, opt, *alloc_, *gemm_, s());
        ASSERT_TRUE(dev.ok()) << dev.status().to_string();
        auto want = (*cpu)->step(batch);
        ASSERT_TRUE(want.ok()) << want.status().to_string();
        auto got = (*dev)->step(s(), batch);
        ASSERT_TRUE(got.ok()) << got.status().to_string();

        std::printf(
            "%s: loss %.5f (cpu %.5f), grad_norm %.5f (cpu %.5f), kl %.3e (cpu %.3e), entropy "
            "%.4f (cpu %.4f), clip_fraction %.3f (cpu %.3f); forward %.1f ms, backward %.1f ms, "
            "optimizer %.1f ms\n",
            cs.name, got->loss, want->loss, got->grad_norm, want->grad_norm, got->kl, want->kl,
            got->entropy, want->entropy, got->clip_fraction, want->clip_fraction,
            got->forward_s * 1e3, got->backward_s * 1e3, got->optimizer_s * 1e3);
        EXPECT_EQ(got->step, 1);
        EXPECT_EQ(got->updates, 1);
        EXPECT_EQ(got->tokens, want->tokens);
        EXPECT_NEAR(got->loss, want->loss, 3e-2) << "seed " << test_seed();
        EXPECT_NEAR(got->grad_norm, want->grad_norm, 3e-2 * want->grad_norm);
        EXPECT_NEAR(got->kl, want->kl, 3e-2 + 1e-2 * std::abs(want->kl));
        EXPECT_NEAR(got->entropy, want->entropy, 3e-2 + 1e-2 * std::abs(want->entropy));
        EXPECT_DOUBLE_EQ(got->lr, want->lr);

        const model::ParamIndex& index = (*dev)->index();
        std::vector<float> w(index.elements);
        ASSERT_TRUE((*dev)->download_weights(s(), w.data()).ok());
        const float* wc = (*cpu)->weights().data();
        const double lr = opt.algorithm.optimizer.lr;
        int64_t off = 0;
        double worst = 0;
        for (uint64_t i = 0; i < index.elements; ++i) {
            ASSERT_TRUE(std::isfinite(w[i])) << "weight " << i;
            const double e = std::abs(static_cast<double>(w[i]) - wc[i]);
            worst = std::max(worst, e);
            off += e > 0.1 * lr;
        }
        const double frac = static_cast<double>(off) / static_cast<double>(index.elements);
        std::printf("%s: updated weights max |err| %.3e (lr %.1e), %.2f%% differ by > lr/10\n",
                    cs.name, worst, lr, 100.0 * frac);
        EXPECT_LE(worst, 2 * lr + 1e-6);
        EXPECT_LE(frac, 0.10);
        // The bf16 compute copy follows the masters: a forward after the step matches a
        // forward of the downloaded masters.
        std::vector<float> g(index.elements);
        ASSERT_TRUE((*dev)->download_gradients(s(), g.data()).ok());
        double gss = 0;
        for (const float v : g) gss += static_cast<double>(v) * v;
        EXPECT_NEAR(std::sqrt(gss), got->grad_norm, 1e-4 * got->grad_norm + 1e-9);
    }
}

TEST_F(DeviceTrainTest, BackwardWithoutForwardAndBadTrajectoriesAreRefused) {
    const model::ModelConfig c = testing::base_config();
    auto dm = DeviceModel::create(c, *alloc_, *gemm_, s());
    ASSERT_TRUE(dm.ok()) << dm.status().to_string();
    std::vector<float> weight(4, 1.0f);
    float* grads = device<float>((*dm)->index().elements);
    const Status st = (*dm)->backward(s(), weight.data(), grads);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("without a train_forward"), std::string::npos) << st.to_string();

    auto initial = model::ModelWeights::random(c, 3);
    ASSERT_TRUE(initial.ok());
    auto dev = DeviceTrainer::create(*initial, model::TrainerOptions{}, *alloc_, *gemm_, s());
    ASSERT_TRUE(dev.ok()) << dev.status().to_string();
    std::vector<model::Trajectory> bad(1);
    bad[0].prompt = {1, 2};
    bad[0].completion = {3, 4};
    bad[0].behaviour_logprobs = {-1.0f};  // one short
    bad[0].group = 7;
    auto r = (*dev)->step(s(), bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("trajectory 0 (group 7)"), std::string::npos)
        << r.status().to_string();
}

}  // namespace
}  // namespace tandem::gpu
