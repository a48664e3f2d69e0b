// DeviceStaging when Tandem is built without CUDA: nothing to stage to.

#include "common/weights/device_staging.h"

namespace tandem::weights {

Result<std::unique_ptr<DeviceStaging>> DeviceStaging::create(int device) {
    (void)device;
    return unavailable("this build of Tandem has no CUDA support (TANDEM_CUDA=OFF or no nvcc)");
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      device_(o.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    device_ = o.device_;
    return *this;
}

DeviceBuffer::~DeviceBuffer() = default;

}  // namespace tandem::weights
