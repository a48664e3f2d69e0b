#pragma once

// Which device a built-in actor computes on: `trainer.device` / `rollout.device` (cpu | cuda |
// auto) against what the actor has. One function for both actors, in every build (without CUDA
// it answers cpu, or an error when cuda was asked). The facts are gathered once at the actor's
// start (probe_devices) and passed in, so the decision is testable without a GPU.
//
//   auto: cuda when the scheduler assigned the actor a GPU, the build has CUDA and a device is
//         visible; else cpu (the reason says which was missing).
//   cuda: the same three, each missing one an error naming the job and the field.
//   cpu:  cpu, whatever the node has.

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/config/job_spec.h"
#include "common/status.h"

namespace tandem::gpu {

// What the actor's process has.
struct DeviceFacts {
    bool built_with_cuda = false;  // kernels::built_with_cuda()
    int visible_devices = 0;       // CUDA devices this process sees (after CUDA_VISIBLE_DEVICES)
    std::string not_visible;       // why none is visible ("no CUDA device: ..."), when none is
    std::string device_name;       // the first visible device's name, for the log line
    // The GPUs the scheduler assigned to the actor (its CUDA_VISIBLE_DEVICES, "3" or "0,1");
    // empty when it assigned none.
    std::string assigned;
};

// The GPUs the coordinator assigned to `actor` in its placement (placement.actors[actor]:
// cuda_visible_devices as the node agent wrote it, else the scheduler's gpu slots); empty when
// none.
std::string assigned_gpus(const nlohmann::json& placement, std::string_view actor);

// The facts of this process: the build, the CUDA devices it sees (this initialises the CUDA
// runtime: call it after CUDA_VISIBLE_DEVICES is set) and `assigned`.
DeviceFacts probe_devices(std::string assigned);

struct DeviceChoice {
    config::ComputeDevice device = config::ComputeDevice::kCpu;  // kCpu or kCuda, never kAuto
    // For the actor's log line: "cuda (auto: GPU 3 assigned, NVIDIA H200)", "cpu (auto: no GPU
    // assigned to the actor)".
    std::string reason;
    bool cuda() const { return device == config::ComputeDevice::kCuda; }
};

// Resolves `asked` (the value of `field`, "trainer.device" or "rollout.device", of job `job`).
// Errors are invalid_argument (a job that asks for cuda where it cannot have it; not retryable):
//   "job job-000004: trainer.device is cuda but this build has no CUDA (TANDEM_CUDA=OFF or nvcc
//    not found at build time)"
//   "... but the scheduler assigned the actor no GPU (set trainer.resources.gpus)"
//   "... but no CUDA device is visible to the actor (CUDA_VISIBLE_DEVICES=3): no CUDA device: ..."
Result<DeviceChoice> resolve_device(config::ComputeDevice asked, const DeviceFacts& facts,
                                    std::string_view job, std::string_view field);

}  // namespace tandem::gpu
