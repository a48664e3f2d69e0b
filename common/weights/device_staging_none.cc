// DeviceStaging when Tandem is built without CUDA: nothing to stage to.

#include "common/weights/device_staging.h"

namespace tandem::weights {

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create(int device) {
    (void)device;
    return unavailable("this build of Tandem has no CUDA support (TANDEM_CUDA=OFF or no nvcc)");
}

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create_on_stream(int device, void* stream) {
    (void)stream;
    return create(device);
}

}  // namespace tandem::weights
