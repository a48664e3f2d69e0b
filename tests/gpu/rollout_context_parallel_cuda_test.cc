// rollout.device: cuda with rollout.context_parallel = 2, at the level of the rollout actor's
// sampler (rollout_node/context_parallel_sampler.h, make_cuda_context_parallel_sampler): one
// weights version in device memory of device 0 loaded into the single-device generator and both
// ranks (rank 1 copies rank 0's weights), then greedy completions of a batch mixing a prompt that
// fits rollout.max_tokens_per_device (24) with two that do not (sharded over the ranks), against
// model::GroupGenerator with the same context parallelism on the CPU. Two placements:
//   both ranks on device 0 (two ring processes on one GPU: make_ring_endpoint picks UCX with host
//     staging), so it runs on a one-GPU machine;
//   ranks on devices 0 and 1 of the process (NCCL), skipped with fewer than 2 GPUs.
// Tolerances as the device generator's greedy test (bf16 weights and K/V): log-probs within
// 3e-2 + 1e-2 |ref| up to the first divergence, which must sit on a near tie of the CPU logits
// (gap <= 0.16 rms of the row). Prints the observed errors and the ring. Skips without a device;
// never run (no device was lent when it was written, 2026-12-05).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "common/config/job_spec.h"
#include "common/gpu/device_choice.h"
#include "common/model/generate.h"
#include "common/model/params.h"
#include "common/model/transformer.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "rollout_node/context_parallel_plan.h"
#include "rollout_node/context_parallel_sampler.h"
#include "tests/gpu/model_test_util.h"

namespace tandem::rollout {
namespace {

namespace kc = kernels::cuda;

constexpr int64_t kMaxTokensPerDevice = 24;
constexpr int kNewTokens = 12;
constexpr int kGroup = 2;

config::JobSpec cp_job() {
    config::JobSpec job;
    job.name = "cp-gpu";
    job.rollout.device = config::ComputeDevice::kCuda;
    job.rollout.context_parallel = 2;
    job.rollout.resources.gpus = 2;
    job.rollout.max_tokens_per_device = kMaxTokensPerDevice;
    return job;
}

// Greedy completions of the cuda sampler for `plan` against the CPU generator, every architecture
// of model_test_util.h.
void check_against_cpu(const ContextParallelPlan& plan, const char* label) {
    std::printf("rollout context parallel %s: %s\n", label, plan.describe().c_str());
    int salt = 0;
    for (const gpu::testing::Case& cs : gpu::testing::cases()) {
        SCOPED_TRACE(std::string(cs.name) + " " + label);
        const model::ModelConfig& c = cs.config;
        auto layout = model::make_param_layout(c);
        ASSERT_TRUE(layout.ok());
        auto idx = model::ParamIndex::create(c, *layout);
        ASSERT_TRUE(idx.ok());
        const std::vector<float> params = gpu::testing::random_params(*idx, c, 1300 + ++salt);
        std::mt19937_64 g(77 + salt);
        // 6 + 12 fits one device; 20 + 12 and 27 + 12 are sharded (<= 2 x 24).
        const std::vector<std::vector<int32_t>> prompts = {
            gpu::testing::random_tokens(20, c.vocab_size, g),
            gpu::testing::random_tokens(6, c.vocab_size, g),
            gpu::testing::random_tokens(27, c.vocab_size, g)};
        const config::JobSpec job = cp_job();
        model::GeneratorOptions go = model::GeneratorOptions::from_job(job);
        go.eos_token = -1;  // full length: every step compared
        model::SamplingOptions so;
        so.temperature = 0.0;
        so.max_new_tokens = kNewTokens;

        auto sampler = make_cuda_context_parallel_sampler(c, go, job, plan);
        ASSERT_TRUE(sampler.ok()) << sampler.status().to_string();
        auto alloc = kc::DeviceAllocator::create(0);
        ASSERT_TRUE(alloc.ok()) << alloc.status().to_string();
        auto stream = kc::Stream::create(0);
        ASSERT_TRUE(stream.ok()) << stream.status().to_string();
        const uint64_t total = layout->total_bytes();
        auto buf = (*alloc)->allocate(total, "test: fp32 weights version");
        ASSERT_TRUE(buf.ok()) << buf.status().to_string();
        ASSERT_TRUE(kc::copy_to_device(**stream, buf->as(), params.data(), total).ok());
        ASSERT_TRUE((*stream)->synchronize("test upload").ok());
        const DevicePiece piece{buf->as(), 0, total};
        Status loaded = (*sampler)->device_weights()->load_device(1, {&piece, 1});
        ASSERT_TRUE(loaded.ok()) << loaded.to_string();
        model::GenerateStats gs;
        auto got = (*sampler)->generate(nullptr, 1, prompts, kGroup, so, &gs);
        ASSERT_TRUE(got.ok()) << got.status().to_string();
        EXPECT_EQ(gs.sharded_sequences, 2 * kGroup);

        model::GeneratorOptions ref_go = go;
        auto cpu = model::GroupGenerator::create(c, ref_go);
        ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
        auto want = cpu->generate(params.data(), prompts, kGroup, so);
        ASSERT_TRUE(want.ok()) << want.status().to_string();
        ASSERT_EQ(got->size(), want->size());

        for (size_t b = 0; b < got->size(); ++b) {
            ASSERT_EQ((*got)[b].prompt, (*want)[b].prompt) << "slot " << b;
            ASSERT_EQ((*got)[b].sample, (*want)[b].sample) << "slot " << b;
            ASSERT_EQ((*got)[b].tokens.size(), (*want)[b].tokens.size()) << "slot " << b;
        }
        const gpu::testing::GreedyComparison cmp = gpu::testing::expect_same_greedy(
            std::string("rollout context parallel ") + label + " " + cs.name, c, params, prompts,
            *got, *want, 3e-2);
        std::printf(
            "rollout context parallel %s %s: greedy log-prob max |err| %.3g, %d of %zu "
            "samples diverged on a near tie\n",
            label, cs.name, cmp.worst_logprob_error, cmp.diverged, got->size());
    }
}

TEST(RolloutContextParallelCuda, TwoRanksSharingDevice0OverUcxStagingMatchTheCpuGenerator) {
    std::string why;
    if (kernels::cuda_devices(&why).empty()) GTEST_SKIP() << why;
    ContextParallelPlan plan;
    std::vector<kernels::RingRankPlacement> placements;
    for (int r = 0; r < 2; ++r) {
        ContextParallelRankPlan p;
        p.rank = r;
        p.cuda_device = 0;
        p.placement = {"local", r, 0};
        placements.push_back(p.placement);
        plan.ranks.push_back(p);
    }
    auto choice = kernels::choose_ring_transport(placements, {context_parallel_nccl_built()});
    ASSERT_TRUE(choice.ok()) << choice.status().to_string();
    plan.ring = *choice;
    ASSERT_EQ(plan.ring.backend, kernels::RingBackend::kUcx);
    ASSERT_TRUE(plan.ring.host_staging);
    check_against_cpu(plan, "shared device 0");
}

TEST(RolloutContextParallelCuda, RanksOnTwoGpusMatchTheCpuGenerator) {
    std::string why;
    const auto devices = kernels::cuda_devices(&why);
    if (devices.size() < 2) {
        GTEST_SKIP() << "needs 2 CUDA devices, one per rank; this process sees " << devices.size()
                     << (why.empty() ? "" : " (" + why + ")");
    }
    gpu::DeviceFacts facts = gpu::probe_devices("0,1");
    auto plan =
        plan_context_parallel(cp_job(), facts, "local", "cp-gpu", {context_parallel_nccl_built()});
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    if (context_parallel_nccl_built()) {
        EXPECT_EQ(plan->ring.backend, kernels::RingBackend::kNccl);
    }
    check_against_cpu(*plan, "two GPUs");
}

}  // namespace
}  // namespace tandem::rollout
