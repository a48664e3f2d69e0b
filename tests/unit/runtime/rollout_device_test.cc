// rollout.device for the built-in rollout: gpu::resolve_device, then the settings the device
// generator lacks (KIVI pages compressed further, compression to f32): auto falls back to cpu
// saying why, an explicit cuda is refused naming the job and both fields (context parallelism on
// the device: a GPU per rank, rollout_context_parallel_test.cc).
#include <gtest/gtest.h>

#include "rollout_node/completion_sampler.h"

namespace tandem::rollout {
namespace {

using config::ComputeDevice;

gpu::DeviceFacts gpu_node() {
    gpu::DeviceFacts f;
    f.built_with_cuda = true;
    f.visible_devices = 1;
    f.device_name = "NVIDIA H200";
    f.assigned = "3";
    return f;
}

TEST(RolloutDevice, AutoTakesTheGpuForAJobTheDeviceGeneratorRuns) {
    config::JobSpec job;
    job.rollout.device = ComputeDevice::kAuto;
    auto c = rollout_device(job, gpu_node(), "job-000002");
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_TRUE(c->cuda()) << c->reason;
    EXPECT_EQ(cuda_generation_unsupported(job), "");
}

TEST(RolloutDevice, AutoFallsBackToCpuForSettingsTheDeviceLacksAndSaysWhich) {
    config::JobSpec job;
    job.rollout.device = ComputeDevice::kAuto;
    job.rollout.kv_cache.dtype = config::KvCacheDType::kInt4;  // KIVI compressed to int2
    job.rollout.kv_cache.kivi = true;
    job.rollout.kv_cache.compress_after_tokens = 64;
    auto c = rollout_device(job, gpu_node(), "job-000002");
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_FALSE(c->cuda());
    EXPECT_NE(c->reason.find("rollout.kv_cache.compress_dtype int2 with dtype int4 with kivi"),
              std::string::npos)
        << c->reason;
}

TEST(RolloutDevice, QuantizedPagesAndCompressionRunOnTheDevice) {
    for (const auto dtype : {config::KvCacheDType::kBF16, config::KvCacheDType::kInt8,
                             config::KvCacheDType::kInt4, config::KvCacheDType::kInt2}) {
        config::JobSpec job;
        job.rollout.device = ComputeDevice::kCuda;
        job.rollout.kv_cache.dtype = dtype;
        job.rollout.kv_cache.compress_after_tokens = 64;
        EXPECT_EQ(cuda_generation_unsupported(job), "") << config::enum_name(dtype);
        auto c = rollout_device(job, gpu_node(), "job-000002");
        ASSERT_TRUE(c.ok()) << c.status().message();
        EXPECT_TRUE(c->cuda()) << c->reason;
    }
}

TEST(RolloutDevice, TheSystemPromptCacheAndAKvBudgetRunOnTheDevice) {
    config::JobSpec job;
    job.rollout.device = ComputeDevice::kCuda;
    job.rollout.kv_cache.prefix_tokens = 64;
    job.rollout.kv_cache.budget_bytes = 1 << 20;
    EXPECT_EQ(cuda_generation_unsupported(job), "");
    auto c = rollout_device(job, gpu_node(), "job-000002");
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_TRUE(c->cuda()) << c->reason;
}

TEST(RolloutDevice, ExplicitCudaWithAnUnsupportedSettingNamesTheJobAndBothFields) {
    config::JobSpec job;
    job.rollout.device = ComputeDevice::kCuda;
    job.rollout.kv_cache.dtype = config::KvCacheDType::kInt8;
    job.rollout.kv_cache.compress_after_tokens = 64;
    job.rollout.kv_cache.compress_dtype = config::KvCacheDType::kF32;
    auto c = rollout_device(job, gpu_node(), "job-000002");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("job job-000002: rollout.device is cuda but generation on "
                                        "the device does not support "
                                        "rollout.kv_cache.compress_dtype f32"),
              std::string::npos)
        << c.status().message();
}

TEST(RolloutDevice, CpuAndMissingGpusStayOnTheCpu) {
    config::JobSpec job;
    job.rollout.device = ComputeDevice::kCpu;
    auto c = rollout_device(job, gpu_node(), "job-000002");
    ASSERT_TRUE(c.ok());
    EXPECT_FALSE(c->cuda());
    job.rollout.device = ComputeDevice::kAuto;
    gpu::DeviceFacts none = gpu_node();
    none.assigned.clear();
    auto d = rollout_device(job, none, "job-000002");
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->cuda()) << d->reason;
}

}  // namespace
}  // namespace tandem::rollout
