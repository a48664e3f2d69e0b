// DeviceStaging when Tandem is built without CUDA: nothing to stage to.

#include "common/weights/device_staging.h"

namespace tandem::weights {

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create(int device) {
    (void)device;
    return unavailable("this build of Tandem has no CUDA support (TANDEM_CUDA=OFF or no nvcc)");
}

}  // namespace tandem::weights
