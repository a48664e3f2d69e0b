// The trainer actor's device path (tandem_gpu_trainer_device): device checkpoints and the
// trainer's Policy on cuda against cpu. Skips with a reason without a device.
//
// 1. Checkpoint round trip: a DeviceTrainer steps, saves, steps again; a second one restores the
//    checkpoint and takes the same second step. Restored masters and AdamW moments equal the
//    saved ones bit for bit; after the step, loss and grad norm within 1e-5 relative and the
//    weights within 1e-6 of the uninterrupted run for 99.9% of the elements (the device's
//    reductions may add in another order), every one within 2 lr.
// 2. Cross-device resume: a CPU trainer (model::GrpoTrainer) restores a device checkpoint and a
//    DeviceTrainer a CPU one; weights, moments and AdamW's step equal bit for bit (fp32 written
//    and read as fp32).
// 3. The trainer actor's Policy (trainer_node/policy.h) on cuda against cpu: one supervised step
//    (the warm start) then two GRPO steps (KL on, two micro-batches, clipping, decay, tis_cap 2)
//    on the same batches. The supervised step (same weights on both sides) within
//    tandem_gpu_train's one-step tolerances (loss 3e-2 + 1e-2 |ref|, grad norm 3e-2 relative);
//    the GRPO steps start from weights that already differ by bf16 rounding, so twice those
//    (loss 6e-2 abs, grad norm 6e-2 relative, KL and entropy 6e-2 + 2e-2 |ref|); tis weight
//    mean 5e-2 abs; lr, tokens, step equal. Then the cuda policy publishes from device memory
//    (pinned slot, counted as device_staged) and a Reader fetches exactly the device masters.
// Observed errors are printed for the first device run to tighten these.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/gpu/device_trainer.h"
#include "common/model/model_weights.h"
#include "common/model/trainer.h"
#include "common/weights/descriptor.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/gpu/model_test_util.h"
#include "tests/unit/kernels/support/attention_reference.h"
#include "trainer_node/policy.h"

namespace tandem::gpu {
namespace {

using kernels::cuda::testing::CudaFixture;
using kernels::testkit::test_seed;
using testing::make_trajectories;
using testing::random_params;

class DeviceTrainerActorTest : public CudaFixture {
protected:
    void SetUp() override {
        CudaFixture::SetUp();
        if (IsSkipped()) return;
        config_ = testing::cases().front().config;  // llama3: tied, RoPE scaling
        auto w = model::ModelWeights::zeros(config_);
        ASSERT_TRUE(w.ok()) << w.status().to_string();
        initial_ = std::move(*w);
        const std::vector<float> p =
            random_params(initial_.index(), config_, uint64_t{test_seed()} * 131 + 7);
        std::copy(p.begin(), p.end(), initial_.data());
        batch1_ = make_trajectories(config_, initial_, uint64_t{test_seed()} + 1);
        batch2_ = make_trajectories(config_, initial_, uint64_t{test_seed()} + 2);
        ASSERT_EQ(batch1_.size(), 6u);
        opt_.temperature = 0.9;
        opt_.micro_batch = 4;  // two micro-batches
        opt_.algorithm.steps = 10;
        opt_.algorithm.kl_coef = 0.05;
        opt_.algorithm.tis_cap = 2.0;
        opt_.algorithm.optimizer.lr = 1e-3;
        opt_.algorithm.optimizer.weight_decay = 0.01;
        opt_.algorithm.optimizer.grad_clip = 0.5;
        dir_ = ::testing::TempDir() + "/tandem_trainer_device_" + std::to_string(::getpid());
        std::filesystem::remove_all(dir_);
    }
    void TearDown() override {
        if (!dir_.empty()) std::filesystem::remove_all(dir_);
        CudaFixture::TearDown();
    }
    std::unique_ptr<DeviceTrainer> device_trainer() {
        auto t = DeviceTrainer::create(initial_, opt_, *alloc_, *gemm_, s());
        EXPECT_TRUE(t.ok()) << t.status().to_string();
        return t.ok() ? std::move(*t) : nullptr;
    }
    std::vector<float> masters(const DeviceTrainer& t) {
        std::vector<float> w(t.index().elements);
        EXPECT_TRUE(t.download_weights(s(), w.data()).ok());
        return w;
    }
    std::pair<std::vector<float>, std::vector<float>> moments(const DeviceTrainer& t) {
        std::vector<float> m(t.index().elements), v(t.index().elements);
        EXPECT_TRUE(t.download_moments(s(), m.data(), v.data()).ok());
        return {m, v};
    }

    model::ModelConfig config_;
    model::ModelWeights initial_;
    std::vector<model::Trajectory> batch1_, batch2_;
    model::TrainerOptions opt_;
    std::string dir_;
};

bool same_bits(const std::vector<float>& a, const float* b) {
    return std::memcmp(a.data(), b, a.size() * sizeof(float)) == 0;
}

TEST_F(DeviceTrainerActorTest, CheckpointRoundTripAndAStepAfterItEqualAnUninterruptedRun) {
    auto a = device_trainer();
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->step(s(), batch1_).ok());
    model::TrainerState state;
    state.step = 1;
    state.version = 1;
    state.data_cursor = 7;
    auto path = a->save_checkpoint(s(), dir_, state, nullptr);
    ASSERT_TRUE(path.ok()) << path.status().to_string();
    const std::vector<float> saved = masters(*a);
    const auto [saved_m, saved_v] = moments(*a);
    auto a2 = a->step(s(), batch2_);
    ASSERT_TRUE(a2.ok()) << a2.status().to_string();
    const std::vector<float> want = masters(*a);

    auto b = device_trainer();
    ASSERT_TRUE(b);
    auto restored = b->restore(s(), *path);
    ASSERT_TRUE(restored.ok()) << restored.status().to_string();
    EXPECT_EQ(restored->step, 1);
    EXPECT_EQ(restored->version, 1);
    EXPECT_EQ(restored->data_cursor, 7u);
    EXPECT_EQ(b->steps_taken(), 1);
    EXPECT_EQ(b->optimizer_steps(), 1);
    EXPECT_TRUE(same_bits(saved, masters(*b).data())) << "restored masters differ";
    const auto [m, v] = moments(*b);
    EXPECT_TRUE(same_bits(saved_m, m.data())) << "restored first moments differ";
    EXPECT_TRUE(same_bits(saved_v, v.data())) << "restored second moments differ";

    auto b2 = b->step(s(), batch2_);
    ASSERT_TRUE(b2.ok()) << b2.status().to_string();
    const std::vector<float> got = masters(*b);
    double worst = 0;
    int64_t off = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << "weight " << i;
        const double e = std::abs(static_cast<double>(got[i]) - want[i]);
        worst = std::max(worst, e);
        off += e > 1e-6;
    }
    std::printf(
        "resumed step: loss %.7f (uninterrupted %.7f), grad_norm %.7f (%.7f), weights max |err| "
        "%.3e, %lld of %zu beyond 1e-6\n",
        b2->loss, a2->loss, b2->grad_norm, a2->grad_norm, worst, static_cast<long long>(off),
        got.size());
    EXPECT_EQ(b2->step, 2);
    EXPECT_EQ(a2->step, 2);
    EXPECT_DOUBLE_EQ(b2->lr, a2->lr);
    EXPECT_NEAR(b2->loss, a2->loss, 1e-5 * std::max(1.0, std::abs(a2->loss)));
    EXPECT_NEAR(b2->grad_norm, a2->grad_norm, 1e-5 * a2->grad_norm);
    EXPECT_LE(worst, 2 * opt_.algorithm.optimizer.lr);
    EXPECT_LE(static_cast<double>(off), 1e-3 * static_cast<double>(got.size()));
}

TEST_F(DeviceTrainerActorTest, CpuAndDeviceTrainersResumeEachOthersCheckpoints) {
    // Device -> CPU.
    auto dev = device_trainer();
    ASSERT_TRUE(dev);
    ASSERT_TRUE(dev->step(s(), batch1_).ok());
    model::TrainerState state;
    state.step = 1;
    auto path = dev->save_checkpoint(s(), dir_ + "/from_device", state, nullptr);
    ASSERT_TRUE(path.ok()) << path.status().to_string();
    auto cpu = model::GrpoTrainer::create(initial_, opt_);
    ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
    auto restored = (*cpu)->restore(*path);
    ASSERT_TRUE(restored.ok()) << restored.status().to_string();
    EXPECT_TRUE(same_bits(masters(*dev), (*cpu)->weights().data()));
    auto [m, v] = moments(*dev);
    EXPECT_TRUE(same_bits(m, (*cpu)->optimizer().exp_avg().data()));
    EXPECT_TRUE(same_bits(v, (*cpu)->optimizer().exp_avg_sq().data()));
    EXPECT_EQ((*cpu)->optimizer().steps_taken(), dev->optimizer_steps());
    EXPECT_EQ((*cpu)->steps_taken(), 1);

    // CPU -> device.
    auto cpu2 = model::GrpoTrainer::create(initial_, opt_);
    ASSERT_TRUE(cpu2.ok());
    ASSERT_TRUE((*cpu2)->step(batch2_).ok());
    state.step = 1;
    auto cpu_path = (*cpu2)->save_checkpoint(dir_ + "/from_cpu", state, nullptr);
    ASSERT_TRUE(cpu_path.ok()) << cpu_path.status().to_string();
    auto dev2 = device_trainer();
    ASSERT_TRUE(dev2);
    ASSERT_TRUE(dev2->restore(s(), *cpu_path).ok());
    EXPECT_TRUE(same_bits(masters(*dev2), (*cpu2)->weights().data()));
    std::tie(m, v) = moments(*dev2);
    EXPECT_TRUE(same_bits(m, (*cpu2)->optimizer().exp_avg().data()));
    EXPECT_TRUE(same_bits(v, (*cpu2)->optimizer().exp_avg_sq().data()));
    EXPECT_EQ(dev2->optimizer_steps(), (*cpu2)->optimizer().steps_taken());

    // Another model's checkpoint is refused by path.
    model::ModelConfig other = config_;
    other.num_layers = 1;
    auto small = model::ModelWeights::zeros(other);
    ASSERT_TRUE(small.ok());
    auto small_cpu = model::GrpoTrainer::create(*small, opt_);
    ASSERT_TRUE(small_cpu.ok());
    auto small_path = (*small_cpu)->save_checkpoint(dir_ + "/other", state, nullptr);
    ASSERT_TRUE(small_path.ok());
    auto refused = dev2->restore(s(), *small_path);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find(*small_path), std::string::npos)
        << refused.status().message();
}

void expect_close(const char* what, const model::TrainStats& got, const model::TrainStats& want,
                  double scale) {
    std::printf(
        "%s: loss %.5f (cpu %.5f), grad_norm %.5f (cpu %.5f), kl %.3e (cpu %.3e), entropy %.4f "
        "(cpu %.4f), tis_weight_mean %.4f (cpu %.4f), tis_truncated %.3f (cpu %.3f)\n",
        what, got.loss, want.loss, got.grad_norm, want.grad_norm, got.kl, want.kl, got.entropy,
        want.entropy, got.tis_weight_mean, want.tis_weight_mean, got.tis_truncated_fraction,
        want.tis_truncated_fraction);
    SCOPED_TRACE(what);
    EXPECT_EQ(got.step, want.step);
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_DOUBLE_EQ(got.lr, want.lr);
    EXPECT_NEAR(got.loss, want.loss, 3e-2 * scale) << "seed " << test_seed();
    EXPECT_NEAR(got.grad_norm, want.grad_norm, 3e-2 * scale * want.grad_norm);
    EXPECT_NEAR(got.kl, want.kl, (3e-2 + 1e-2 * std::abs(want.kl)) * scale);
    EXPECT_NEAR(got.entropy, want.entropy, (3e-2 + 1e-2 * std::abs(want.entropy)) * scale);
    EXPECT_NEAR(got.tis_weight_mean, want.tis_weight_mean, 5e-2);
}

TEST_F(DeviceTrainerActorTest, CudaPolicyMatchesCpuAndPublishesFromDeviceMemory) {
    auto cpu = trainer::make_cpu_policy(initial_, opt_);
    ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
    auto cuda = trainer::make_cuda_policy(initial_, opt_);
    ASSERT_TRUE(cuda.ok()) << cuda.status().to_string();
    EXPECT_STREQ((*cpu)->device(), "cpu");
    EXPECT_STREQ((*cuda)->device(), "cuda");
    EXPECT_EQ((*cuda)->layout().fingerprint(), (*cpu)->layout().fingerprint());

    // The warm start's supervised step.
    auto sw = (*cuda)->supervised_step(batch1_);
    auto sc = (*cpu)->supervised_step(batch1_);
    ASSERT_TRUE(sw.ok()) << sw.status().to_string();
    ASSERT_TRUE(sc.ok()) << sc.status().to_string();
    std::printf("supervised: loss %.5f (cpu %.5f), grad_norm %.5f (cpu %.5f)\n", sw->loss, sc->loss,
                sw->grad_norm, sc->grad_norm);
    EXPECT_NEAR(sw->loss, sc->loss, 3e-2 + 1e-2 * std::abs(sc->loss));
    EXPECT_NEAR(sw->grad_norm, sc->grad_norm, 3e-2 * sc->grad_norm);
    EXPECT_EQ(sw->step, 1);

    int k = 0;
    for (const auto* batch : {&batch1_, &batch2_}) {
        auto got = (*cuda)->step(*batch);
        auto want = (*cpu)->step(*batch);
        ASSERT_TRUE(got.ok()) << got.status().to_string();
        ASSERT_TRUE(want.ok()) << want.status().to_string();
        ++k;
        expect_close(k == 1 ? "grpo step 1" : "grpo step 2", *got, *want, 2.0);
    }

    // Publishing from device memory: the reader gets exactly the device masters.
    weights::VersionDirectory directory;
    weights::PublisherOptions po;
    po.job = JobId(1);
    po.ucx.transports = "shm,self";
    auto publisher = weights::Publisher::create(po, (*cuda)->layout(), directory);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    ASSERT_TRUE((*cuda)->publish(**publisher, 3).ok());
    EXPECT_EQ((*publisher)->stats().device_staged, 1u);
    weights::ReaderOptions ro;
    ro.job = JobId(1);
    ro.ucx.transports = "shm,self";
    auto reader = weights::Reader::create(ro, (*cuda)->layout());
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    ASSERT_TRUE((*reader)->fetch(*directory.newest(JobId(1))).ok());
    ASSERT_TRUE((*reader)->swap());
    auto host = (*cuda)->weights();
    ASSERT_TRUE(host.ok()) << host.status().to_string();
    const auto fetched = (*reader)->current()->bytes();
    ASSERT_EQ(fetched.size(), host->bytes().size());
    EXPECT_EQ(std::memcmp(fetched.data(), host->bytes().data(), fetched.size()), 0);
}

}  // namespace
}  // namespace tandem::gpu
