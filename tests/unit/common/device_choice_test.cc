// trainer.device / rollout.device: parsing, validation and the resolution against injected facts
// (build, assignment, visible devices), so every branch runs without a GPU.
#include "common/gpu/device_choice.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/config/loader.h"

namespace tandem::gpu {
namespace {

using config::ComputeDevice;
namespace fs = std::filesystem;

Result<config::JobSpec> load(const std::string& text) {
    const fs::path dir =
        fs::temp_directory_path() / ("tandem_device_choice_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string path = (dir / "job.yaml").string();
    std::ofstream(path) << text;
    auto r = config::load_job_file(path);
    fs::remove_all(dir);
    return r;
}

TEST(DeviceField, DefaultsToAutoAndParsesEveryValue) {
    EXPECT_EQ(config::TrainerSpec{}.device, ComputeDevice::kAuto);
    EXPECT_EQ(config::RolloutSpec{}.device, ComputeDevice::kAuto);
    auto spec = load(
        "name: j\nkind: grpo\ntrainer: {device: cuda, resources: {gpus: 1}}\n"
        "rollout: {device: cpu}\n");
    ASSERT_TRUE(spec.ok()) << spec.status().to_string();
    EXPECT_EQ(spec->trainer.device, ComputeDevice::kCuda);
    EXPECT_EQ(spec->rollout.device, ComputeDevice::kCpu);
    // The resolved YAML carries it back.
    auto again = config::parse_job_text(config::to_yaml(*spec), "resolved");
    ASSERT_TRUE(again.ok()) << again.status().to_string();
    EXPECT_EQ(again->trainer.device, ComputeDevice::kCuda);
    EXPECT_EQ(again->rollout.device, ComputeDevice::kCpu);
}

TEST(DeviceField, BadValuesAreNamedByFileFieldAndChoices) {
    auto r = load("name: j\nkind: grpo\nrollout:\n  device: gpu\n");
    ASSERT_FALSE(r.ok());
    const std::string msg = r.status().message();
    EXPECT_NE(msg.find("job.yaml:4:11: rollout.device:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda"), std::string::npos) << msg;
    EXPECT_NE(msg.find("auto"), std::string::npos) << msg;
}

TEST(DeviceField, CudaWithoutAGpuResourceIsRefusedAtLoad) {
    for (const std::string role : {"trainer", "rollout"}) {
        auto r = load("name: j\nkind: grpo\n" + role + ": {device: cuda}\n");
        ASSERT_FALSE(r.ok()) << role;
        const std::string msg = r.status().message();
        EXPECT_NE(msg.find(role + ".device: cuda needs a GPU from the scheduler: set " + role +
                           ".resources.gpus"),
                  std::string::npos)
            << msg;
    }
    // auto and cpu need none.
    EXPECT_TRUE(
        load("name: j\nkind: grpo\ntrainer: {device: auto}\nrollout: {device: cpu}\n").ok());
}

DeviceFacts gpu_node() {
    DeviceFacts f;
    f.built_with_cuda = true;
    f.visible_devices = 1;
    f.device_name = "NVIDIA H200";
    f.assigned = "3";
    return f;
}

TEST(ResolveDevice, AutoTakesTheGpuWhenAssignedBuiltAndVisible) {
    auto c = resolve_device(ComputeDevice::kAuto, gpu_node(), "job-000001", "trainer.device");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_TRUE(c->cuda());
    EXPECT_EQ(c->reason, "cuda (auto: GPU 3 assigned, NVIDIA H200)");
}

TEST(ResolveDevice, AutoFallsBackToCpuAndSaysWhy) {
    struct Case {
        DeviceFacts facts;
        std::string why;
    };
    DeviceFacts no_build = gpu_node();
    no_build.built_with_cuda = false;
    DeviceFacts unassigned = gpu_node();
    unassigned.assigned.clear();
    DeviceFacts invisible = gpu_node();
    invisible.visible_devices = 0;
    invisible.not_visible = "no CUDA device: no CUDA-capable device is detected";
    for (const Case& k :
         {Case{no_build, "this build has no CUDA"},
          Case{unassigned, "assigned the actor no GPU (set rollout.resources.gpus)"},
          Case{invisible, "(CUDA_VISIBLE_DEVICES=3): no CUDA device: no CUDA"}}) {
        auto c = resolve_device(ComputeDevice::kAuto, k.facts, "job-000001", "rollout.device");
        ASSERT_TRUE(c.ok()) << c.status().to_string();
        EXPECT_FALSE(c->cuda()) << k.why;
        EXPECT_EQ(c->reason.rfind("cpu (auto: ", 0), 0u) << c->reason;
        EXPECT_NE(c->reason.find(k.why), std::string::npos) << c->reason;
    }
}

TEST(ResolveDevice, CudaAskedWhereItCannotBeIsAnErrorNamingJobAndField) {
    DeviceFacts no_build = gpu_node();
    no_build.built_with_cuda = false;
    DeviceFacts unassigned = gpu_node();
    unassigned.assigned.clear();
    DeviceFacts invisible = gpu_node();
    invisible.visible_devices = 0;
    invisible.not_visible = "no CUDA device visible";
    const std::pair<DeviceFacts, std::string> cases[] = {
        {no_build, "job job-000004: trainer.device is cuda but this build has no CUDA"},
        {unassigned,
         "job job-000004: trainer.device is cuda but the scheduler assigned the actor no GPU "
         "(set trainer.resources.gpus)"},
        {invisible,
         "job job-000004: trainer.device is cuda but no CUDA device is visible to the actor "
         "(CUDA_VISIBLE_DEVICES=3): no CUDA device visible"},
    };
    for (const auto& [facts, want] : cases) {
        auto c = resolve_device(ComputeDevice::kCuda, facts, "job-000004", "trainer.device");
        ASSERT_FALSE(c.ok()) << want;
        EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
        EXPECT_NE(c.status().message().find(want), std::string::npos) << c.status().message();
    }
    auto ok = resolve_device(ComputeDevice::kCuda, gpu_node(), "job-000004", "trainer.device");
    ASSERT_TRUE(ok.ok()) << ok.status().to_string();
    EXPECT_TRUE(ok->cuda());
    EXPECT_EQ(ok->reason, "cuda (asked: GPU 3 assigned, NVIDIA H200)");
}

TEST(ResolveDevice, CpuIsCpuWhateverTheNodeHas) {
    auto c = resolve_device(ComputeDevice::kCpu, gpu_node(), "job-000001", "trainer.device");
    ASSERT_TRUE(c.ok());
    EXPECT_FALSE(c->cuda());
}

TEST(AssignedGpus, ReadsTheAgentsDevicesElseTheSchedulersSlots) {
    const auto placement = nlohmann::json::parse(R"({"actors": {
        "job-000001/trainer-0": {"gpus": [0, 1], "cuda_visible_devices": "4,5"},
        "job-000001/rollout-0": {"gpus": [2]},
        "job-000001/rollout-1": {"node": "r1"}}})");
    EXPECT_EQ(assigned_gpus(placement, "job-000001/trainer-0"), "4,5");
    EXPECT_EQ(assigned_gpus(placement, "job-000001/rollout-0"), "2");
    EXPECT_EQ(assigned_gpus(placement, "job-000001/rollout-1"), "");
    EXPECT_EQ(assigned_gpus(placement, "job-000001/rollout-9"), "");
    EXPECT_EQ(assigned_gpus(nlohmann::json::array(), "job-000001/trainer-0"), "");
}

TEST(ProbeDevices, AgreesWithTheBuild) {
    const DeviceFacts f = probe_devices("0");
    EXPECT_EQ(f.assigned, "0");
    if (!f.built_with_cuda) {
        EXPECT_EQ(f.visible_devices, 0);
    }
    if (f.visible_devices == 0) {
        EXPECT_FALSE(f.not_visible.empty());
    }
}

}  // namespace
}  // namespace tandem::gpu
