#include "kernels/device.h"

namespace tandem::kernels {

#ifndef TANDEM_KERNELS_CUDA
bool built_with_cuda() { return false; }

std::vector<DeviceInfo> cuda_devices(std::string* why) {
    if (why) *why = "built without CUDA (TANDEM_CUDA=OFF or no nvcc at build time)";
    return {};
}
#endif

}  // namespace tandem::kernels
