#include <gtest/gtest.h>

#include "kernels/device.h"

namespace tandem::kernels {
namespace {

TEST(CudaDevice, ReportsAtLeastOneDeviceWithMemoryAndComputeCapability) {
    std::string why;
    const auto devices = cuda_devices(&why);
    if (devices.empty()) GTEST_SKIP() << why;
    for (const auto& d : devices) {
        EXPECT_FALSE(d.name.empty());
        EXPECT_GT(d.memory_bytes, 0u);
        EXPECT_GE(d.sm_major, 7) << d.name;
    }
}

}  // namespace
}  // namespace tandem::kernels
