// GPU weights: publish from device memory and copy fetched weights to device memory, staged
// through pinned host memory. Skips with the reason when there is no CUDA device (or no CUDA).

#include <cstring>

#include <gtest/gtest.h>

#include "common/weights/device_staging.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "tests/integration/weights/test_support.h"

namespace tandem::weights::testing {
namespace {

TEST(WeightsGpu, DeviceWeightsRoundTripThroughPinnedHostStaging) {
    auto staging = DeviceStaging::create(0);
    if (!staging.ok()) GTEST_SKIP() << staging.status().message();

    const Layout layout = random_layout(31, 8 << 20);
    auto host = *HostBuffer::allocate(layout.total_bytes());
    fill_version(host.span(), 31, 1);
    auto device_src = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(device_src.ok()) << device_src.status().to_string();
    ASSERT_TRUE((*staging)->to_device(device_src->data(), host.data(), host.size()).ok());

    VersionDirectory directory;
    PublisherOptions po;
    po.job = JobId(1);
    po.ucx.transports = "shm,self";
    auto publisher = Publisher::create(po, layout, directory);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    ASSERT_TRUE((*publisher)->publish_from_device(1, device_src->data(), **staging).ok());
    EXPECT_EQ((*publisher)->stats().device_staged, 1u);

    ReaderOptions ro;
    ro.job = JobId(1);
    ro.ucx.transports = "shm,self";
    auto reader = Reader::create(ro, layout);
    ASSERT_TRUE(reader.ok());
    ASSERT_TRUE((*reader)->fetch(*directory.newest(JobId(1))).ok());
    ASSERT_TRUE((*reader)->swap());
    auto device_dst = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(device_dst.ok());
    ASSERT_TRUE((*reader)->copy_current_to_device(**staging, *device_dst).ok());
    EXPECT_EQ((*reader)->device_staged(), 1u);

    auto back = *HostBuffer::allocate(layout.total_bytes());
    ASSERT_TRUE((*staging)->to_host(back.data(), device_dst->data(), back.size()).ok());
    EXPECT_EQ(std::memcmp(back.data(), host.data(), host.size()), 0);
}

}  // namespace
}  // namespace tandem::weights::testing
