#pragma once

// What the kernels can run on. Callers never need CUDA headers: the CPU build answers "no device".

#include <string>
#include <vector>

namespace tandem::kernels {

struct DeviceInfo {
    int index = 0;
    std::string name;
    size_t memory_bytes = 0;
    int sm_major = 0;
    int sm_minor = 0;
};

// True when this build carries CUDA kernels (TANDEM_CUDA on and nvcc found at build time).
bool built_with_cuda();

// The CUDA devices visible to this process; empty without CUDA or without a device. `why`, if
// given, receives the reason when the list is empty ("built without CUDA", "no CUDA device: ...").
std::vector<DeviceInfo> cuda_devices(std::string* why = nullptr);

}  // namespace tandem::kernels
