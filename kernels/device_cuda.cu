// CUDA side of kernels/device.h: device discovery through the CUDA runtime.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "kernels/device.h"

namespace tandem::kernels {

bool built_with_cuda() { return true; }

std::vector<DeviceInfo> cuda_devices(std::string* why) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        if (why) *why = std::string("no CUDA device: ") + cudaGetErrorString(err);
        return {};
    }
    std::vector<DeviceInfo> out;
    for (int i = 0; i < count; ++i) {
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
        out.push_back(DeviceInfo{i, prop.name, prop.totalGlobalMem, prop.major, prop.minor});
    }
    if (out.empty() && why) *why = "no CUDA device visible";
    return out;
}

}  // namespace tandem::kernels
