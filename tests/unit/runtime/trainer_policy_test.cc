// The trainer actor's Policy (trainer_node/policy.h) on the CPU: the same steps, checkpoints and
// published bytes as model::GrpoTrainer, make_cuda_policy's error where there is no device, and
// the trainer actor refusing trainer.device: cuda where it has no GPU.
// The cuda policy against this one is tests/gpu/trainer_device_cuda_test.cc.
#include "trainer_node/policy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "common/weights/descriptor.h"
#include "common/weights/reader.h"
#include "kernels/device.h"
#include "tests/fakes/fake_runtime.h"
#include "tests/unit/model/test_util.h"
#include "trainer_node/grpo_trainer_actor.h"

namespace tandem::trainer {
namespace {

std::vector<model::Trajectory> batch(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, 6);
    std::vector<model::Trajectory> out;
    for (int g = 0; g < 2; ++g) {
        std::vector<int32_t> prompt = {tok(rng), tok(rng), tok(rng)};
        for (int i = 0; i < 3; ++i) {
            model::Trajectory t;
            t.prompt = prompt;
            for (int j = 0; j < 3 + i; ++j) t.completion.push_back(tok(rng));
            t.behaviour_logprobs.assign(t.completion.size(), -1.9f);
            t.reward = static_cast<double>(i);
            t.group = static_cast<uint64_t>(g);
            out.push_back(std::move(t));
        }
    }
    return out;
}

class TrainerPolicyTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto w = model::ModelWeights::random(model::testing::tiny_config(), 5);
        ASSERT_TRUE(w.ok()) << w.status().to_string();
        initial_ = std::move(*w);
        opt_.micro_batch = 4;
        opt_.algorithm.steps = 4;
        opt_.algorithm.kl_coef = 0.05;
        dir_ = ::testing::TempDir() + "/tandem_trainer_policy_" + std::to_string(::getpid());
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    model::ModelWeights initial_;
    model::TrainerOptions opt_;
    std::string dir_;
};

TEST_F(TrainerPolicyTest, CpuPolicyIsTheCpuTrainerAndResumesItsCheckpoint) {
    auto policy = make_cpu_policy(initial_, opt_);
    ASSERT_TRUE(policy.ok()) << policy.status().to_string();
    EXPECT_STREQ((*policy)->device(), "cpu");
    auto direct = model::GrpoTrainer::create(initial_, opt_);
    ASSERT_TRUE(direct.ok());
    auto sp = (*policy)->supervised_step(batch(1));
    auto sd = (*direct)->supervised_step(batch(1));
    ASSERT_TRUE(sp.ok() && sd.ok());
    EXPECT_EQ(sp->loss, sd->loss);
    auto got = (*policy)->step(batch(2));
    auto want = (*direct)->step(batch(2));
    ASSERT_TRUE(got.ok() && want.ok());
    EXPECT_EQ(got->loss, want->loss);
    EXPECT_EQ(got->grad_norm, want->grad_norm);
    EXPECT_EQ(got->step, 2);

    model::TrainerState state;
    state.step = 2;
    state.data_cursor = 9;
    auto path = (*policy)->save_checkpoint(dir_, state, nullptr);
    ASSERT_TRUE(path.ok()) << path.status().to_string();
    auto resumed = make_cpu_policy(initial_, opt_);
    ASSERT_TRUE(resumed.ok());
    auto st = (*resumed)->restore(*path);
    ASSERT_TRUE(st.ok()) << st.status().to_string();
    EXPECT_EQ(st->data_cursor, 9u);
    auto a = (*policy)->weights();
    auto b = (*resumed)->weights();
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->bytes().size(), b->bytes().size());
    EXPECT_EQ(std::memcmp(a->bytes().data(), b->bytes().data(), a->bytes().size()), 0);
    auto next = (*resumed)->step(batch(3));
    auto next_want = (*policy)->step(batch(3));
    ASSERT_TRUE(next.ok() && next_want.ok());
    EXPECT_EQ(next->step, 3);
    EXPECT_EQ(next->loss, next_want->loss);
}

TEST_F(TrainerPolicyTest, CpuPolicyPublishesItsWeights) {
    auto policy = make_cpu_policy(initial_, opt_);
    ASSERT_TRUE(policy.ok());
    weights::VersionDirectory directory;
    weights::PublisherOptions po;
    po.job = JobId(1);
    po.ucx.transports = "shm,self";
    auto publisher = weights::Publisher::create(po, (*policy)->layout(), directory);
    if (!publisher.ok()) GTEST_SKIP() << "no UCX here: " << publisher.status().to_string();
    ASSERT_TRUE((*policy)->publish(**publisher, 1).ok());
    weights::ReaderOptions ro;
    ro.job = JobId(1);
    ro.ucx.transports = "shm,self";
    auto reader = weights::Reader::create(ro, (*policy)->layout());
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    ASSERT_TRUE((*reader)->fetch(*directory.newest(JobId(1))).ok());
    ASSERT_TRUE((*reader)->swap());
    auto w = (*policy)->weights();
    ASSERT_TRUE(w.ok());
    const auto fetched = (*reader)->current()->bytes();
    ASSERT_EQ(fetched.size(), w->bytes().size());
    EXPECT_EQ(std::memcmp(fetched.data(), w->bytes().data(), fetched.size()), 0);
}

TEST_F(TrainerPolicyTest, CudaPolicyWithoutADeviceSaysWhy) {
    if (!kernels::cuda_devices().empty()) GTEST_SKIP() << "a CUDA device is present";
    auto p = make_cuda_policy(initial_, opt_);
    ASSERT_FALSE(p.ok());
    const std::string msg = p.status().message();
    std::printf("make_cuda_policy without a device: %s\n", msg.c_str());
    // Without CUDA the build says so; with CUDA and no device the runtime's error names the op
    // (cudaSetDevice(0): ...).
    EXPECT_EQ(msg.rfind("the trainer on cuda: ", 0), 0u) << msg;
    EXPECT_GT(msg.size(), std::string("the trainer on cuda: ").size()) << msg;
}

TEST(TrainerActorDevice, CudaWhereTheActorHasNoGpuFailsNamingTheJobAndField) {
    config::JobSpec spec;
    spec.name = "j";
    spec.trainer.device = config::ComputeDevice::kCuda;
    spec.trainer.resources.gpus = 1;
    // The fake runtime's placement assigns no GPU (and a build without CUDA has none either).
    testing::FakeRuntime rt(spec, ActorId{JobId(4), ActorRole::kTrainer, 0});
    const Status st = run_grpo_trainer(rt);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("job job-000004: trainer.device is cuda but "), std::string::npos)
        << st.message();
}

TEST(TrainerActorDevice, DeviceSlotsOnlyWithAGpuRolloutOnTheTrainersHost) {
    const auto placement = nlohmann::json::parse(R"({"actors": {
        "job-000001/trainer-0": {"node": "t0", "host": "h1", "gpus": [0]},
        "job-000001/rollout-0": {"node": "r0", "host": "h2", "gpus": [0]},
        "job-000001/rollout-1": {"node": "r1", "host": "h1"}}})");
    // The rollout on the trainer's host has no GPU; the one with a GPU is elsewhere.
    EXPECT_FALSE(gpu_rollout_on_trainer_host(placement, "job-000001/trainer-0"));
    auto beside = placement;
    beside["actors"]["job-000001/rollout-1"]["gpus"] = {1};
    EXPECT_TRUE(gpu_rollout_on_trainer_host(beside, "job-000001/trainer-0"));
    EXPECT_FALSE(gpu_rollout_on_trainer_host(beside, "job-000001/trainer-9"));
    EXPECT_FALSE(gpu_rollout_on_trainer_host(nlohmann::json::object(), "job-000001/trainer-0"));
}

}  // namespace
}  // namespace tandem::trainer
