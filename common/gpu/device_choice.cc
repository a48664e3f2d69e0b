#include "common/gpu/device_choice.h"

#include <utility>

#include <fmt/format.h>

#include "kernels/device.h"

namespace tandem::gpu {

using config::ComputeDevice;

std::string assigned_gpus(const nlohmann::json& placement, std::string_view actor) {
    if (!placement.is_object()) return "";
    const auto actors = placement.find("actors");
    if (actors == placement.end() || !actors->is_object()) return "";
    const auto me = actors->find(std::string(actor));
    if (me == actors->end() || !me->is_object()) return "";
    if (const auto v = me->find("cuda_visible_devices"); v != me->end() && v->is_string())
        return v->get<std::string>();
    std::string out;
    if (const auto g = me->find("gpus"); g != me->end() && g->is_array()) {
        for (const auto& slot : *g) {
            if (!slot.is_number_integer()) continue;
            out += (out.empty() ? "" : ",") + std::to_string(slot.get<int64_t>());
        }
    }
    return out;
}

DeviceFacts probe_devices(std::string assigned) {
    DeviceFacts f;
    f.assigned = std::move(assigned);
    f.built_with_cuda = kernels::built_with_cuda();
    const std::vector<kernels::DeviceInfo> devices = kernels::cuda_devices(&f.not_visible);
    f.visible_devices = static_cast<int>(devices.size());
    if (!devices.empty()) f.device_name = devices.front().name;
    return f;
}

Result<DeviceChoice> resolve_device(ComputeDevice asked, const DeviceFacts& facts,
                                    std::string_view job, std::string_view field) {
    if (asked == ComputeDevice::kCpu) return DeviceChoice{ComputeDevice::kCpu, "cpu (asked)"};
    // What stands between the actor and a GPU, first missing thing first.
    std::string missing;
    if (!facts.built_with_cuda) {
        missing = "this build has no CUDA (TANDEM_CUDA=OFF or nvcc not found at build time)";
    } else if (facts.assigned.empty()) {
        // trainer.device -> trainer.resources.gpus
        const std::string_view role = field.substr(0, field.find('.'));
        missing =
            fmt::format("the scheduler assigned the actor no GPU (set {}.resources.gpus)", role);
    } else if (facts.visible_devices < 1) {
        missing = fmt::format(
            "no CUDA device is visible to the actor (CUDA_VISIBLE_DEVICES={}): {}", facts.assigned,
            facts.not_visible.empty() ? "none found" : facts.not_visible);
    }
    const std::string_view how = asked == ComputeDevice::kAuto ? "auto" : "asked";
    if (missing.empty()) {
        std::string reason = fmt::format("cuda ({}: GPU {} assigned", how, facts.assigned);
        if (!facts.device_name.empty()) reason += ", " + facts.device_name;
        return DeviceChoice{ComputeDevice::kCuda, reason + ")"};
    }
    if (asked == ComputeDevice::kCuda) {
        return invalid_argument(fmt::format("job {}: {} is cuda but {}", job, field, missing));
    }
    return DeviceChoice{ComputeDevice::kCpu, fmt::format("cpu (auto: {})", missing)};
}

}  // namespace tandem::gpu
