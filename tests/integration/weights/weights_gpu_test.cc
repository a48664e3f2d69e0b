// GPU weights: publish from device memory and copy fetched weights to device memory, staged
// through pinned host memory; the pipelined paths (chunked publish, fetch_to_device); one-sided
// gets into device memory where UCX supports CUDA (ucx_device); CUDA IPC between two processes on
// one device. Skips with the reason when there is no CUDA device (or no
// CUDA). The same logic runs on CPU over a fake staging in weights_device_path_test.cc.

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/weights/device_staging.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "common/weights/ucx.h"
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

// Host copy of a device buffer.
HostBuffer to_host(DeviceStaging& staging, const void* device, size_t bytes) {
    auto back = *HostBuffer::allocate(bytes);
    Status s = staging.to_host(back.data(), device, bytes);
    EXPECT_TRUE(s.ok()) << s.to_string();
    return back;
}

TEST(WeightsGpu, PipelinedPublishFromDeviceAndFetchIntoDevice) {
    auto staging = DeviceStaging::create(0);
    if (!staging.ok()) GTEST_SKIP() << staging.status().message();
    const Layout layout = random_layout(32, 64 << 20);
    auto host = *HostBuffer::allocate(layout.total_bytes());
    fill_version(host.span(), 32, 1);
    auto src = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(src.ok()) << src.status().to_string();
    ASSERT_TRUE((*staging)->to_device(src->data(), host.data(), host.size()).ok());

    VersionDirectory directory;
    PublisherOptions po;
    po.job = JobId(1);
    po.chunk_bytes = 1 << 20;
    po.ucx.transports = "shm,self";
    auto publisher = Publisher::create(po, layout, directory);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE((*publisher)->publish_from_device(1, src->data(), **staging).ok());
    const double publish_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    ReaderOptions ro;
    ro.job = JobId(1);
    ro.ucx.transports = "shm,self";
    auto reader = Reader::create(ro, layout);
    ASSERT_TRUE(reader.ok());
    DeviceWeights target;
    auto buffer = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(buffer.ok());
    target.buffer = std::move(*buffer);
    Status fetched = (*reader)->fetch_to_device(*directory.newest(JobId(1)), **staging, target);
    ASSERT_TRUE(fetched.ok()) << fetched.to_string();
    ASSERT_EQ(target.version, std::optional<Version>(1));
    const auto st = (*reader)->last_device_fetch();
    std::cout << fmt::format(
        "weights gpu: {} MiB publish_from_device {:.3f} s, fetch_to_device {:.3f} s, {} copies, "
        "{:.0f}% enqueued while fetching\n",
        layout.total_bytes() >> 20, publish_s, st.seconds, st.copies,
        st.bytes ? 100.0 * st.overlapped_bytes / st.bytes : 0.0);
    EXPECT_EQ(st.copies, (layout.total_bytes() + po.chunk_bytes - 1) / po.chunk_bytes);
    auto back = to_host(**staging, target.buffer.data(), layout.total_bytes());
    EXPECT_EQ(first_mismatch(back.span(), 32, 1), std::nullopt);
}

// ucx_device: where this UCX reports CUDA memory support (ucp_context_query), the publisher
// registers its device slots with UCX and the reader gets them straight into device memory, each
// chunk copied back to the host to be verified. Debian's UCX (bundled by deploy/gpu/bundle.sh)
// has no CUDA: then this skips, and the pinned path above is what runs.
TEST(WeightsGpu, UcxDeviceSlotsAreGotStraightIntoDeviceMemory) {
    auto staging = DeviceStaging::create(0);
    if (!staging.ok()) GTEST_SKIP() << staging.status().message();
    PublisherOptions po;
    po.job = JobId(1);
    po.chunk_bytes = 1 << 20;
    po.device_slots = true;  // UCX's default transports: its CUDA ones where it has them
    auto context = ucx::Context::create(po.ucx);
    ASSERT_TRUE(context.ok()) << context.status().to_string();
    if (!(*context)->supports_cuda_memory()) {
        GTEST_SKIP() << "this UCX cannot register CUDA memory (ucp_context_query reports no "
                        "UCS_MEMORY_TYPE_CUDA); device weights take pinned_host";
    }
    const Layout layout = random_layout(34, 32 << 20);
    auto host = *HostBuffer::allocate(layout.total_bytes());
    fill_version(host.span(), 34, 1);
    auto src = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(src.ok());
    ASSERT_TRUE((*staging)->to_device(src->data(), host.data(), host.size()).ok());

    VersionDirectory directory;
    auto publisher = Publisher::create(po, layout, directory);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    ASSERT_TRUE((*publisher)->publish_from_device(1, src->data(), **staging).ok());
    EXPECT_EQ((*publisher)->stats().ucx_device_exports, 1u) << "see the publisher's warning";
    const VersionDescriptor d = *directory.newest(JobId(1));
    ASSERT_FALSE(d.shards[0].device_rkey.empty());

    ReaderOptions ro;
    ro.job = JobId(1);
    auto reader = Reader::create(ro, layout);
    ASSERT_TRUE(reader.ok());
    const DevicePathChoice choice = (*reader)->device_path(d, staging->get());
    ASSERT_EQ(choice.path, DeviceWeightPath::kUcxDevice) << choice.reason;
    DeviceWeights target;
    target.buffer = std::move(*(*staging)->allocate(layout.total_bytes()));
    Status fetched = (*reader)->fetch_to_device(d, **staging, target);
    ASSERT_TRUE(fetched.ok()) << fetched.to_string();
    const auto st = (*reader)->last_device_fetch();
    std::cout << fmt::format(
        "weights gpu ucx_device: {} MiB in {:.3f} s, {} device -> host copies\n",
        layout.total_bytes() >> 20, st.seconds, st.copies);
    EXPECT_EQ(st.path, DeviceWeightPath::kUcxDevice);
    auto back = to_host(**staging, target.buffer.data(), layout.total_bytes());
    EXPECT_EQ(first_mismatch(back.span(), 34, 1), std::nullopt);
}

// The IPC test runs this binary again as the reader process (a fork of a process that already
// initialised CUDA cannot use it), pointing it at a file with the descriptor.
constexpr const char* kIpcChildEnv = "TANDEM_TEST_WEIGHTS_IPC_DESCRIPTOR";

TEST(WeightsGpu, SecondProcessOpensTheDeviceSlotThroughCudaIpc) {
    auto staging = DeviceStaging::create(0);
    if (!staging.ok()) GTEST_SKIP() << staging.status().message();
    const Layout layout = random_layout(33, 16 << 20);
    auto host = *HostBuffer::allocate(layout.total_bytes());
    fill_version(host.span(), 33, 1);
    auto src = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(src.ok());
    ASSERT_TRUE((*staging)->to_device(src->data(), host.data(), host.size()).ok());

    VersionDirectory directory;
    PublisherOptions po;
    po.job = JobId(1);
    po.ucx.transports = "shm,self";
    po.device_slots = true;
    auto publisher = Publisher::create(po, layout, directory);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    ASSERT_TRUE((*publisher)->publish_from_device(1, src->data(), **staging).ok());
    ASSERT_EQ((*publisher)->stats().device_slot_exports, 1u)
        << "the device slot was not exported (see the publisher's warning)";
    auto d = directory.newest(JobId(1));
    ASSERT_TRUE(d.has_value());

    const std::string file = fmt::format("/tmp/tandem-weights-ipc-{}.json", getpid());
    {
        std::ofstream out(file);
        out << nlohmann::json{{"descriptor", to_json(*d)}, {"layout", layout.to_json()}}.dump();
    }
    setenv(kIpcChildEnv, file.c_str(), 1);
    auto child = ChildProcess::spawn({std::filesystem::read_symlink("/proc/self/exe").string(),
                                      "--gtest_filter=WeightsGpuIpcChild.*"});
    unsetenv(kIpcChildEnv);
    ASSERT_TRUE(child.ok()) << child.status().to_string();
    std::string output;
    while (auto line = child->read_line(std::chrono::seconds(60))) output += *line + "\n";
    auto rc = child->wait(std::chrono::seconds(30));
    std::filesystem::remove(file);
    std::cout << output;
    ASSERT_TRUE(rc.has_value()) << "the reader process did not exit";
    EXPECT_EQ(*rc, 0) << output;
    EXPECT_NE(output.find("[  PASSED  ] 1 test"), std::string::npos) << output;
    // The child released its lease on exit (the publisher's loop sees it shortly).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((*publisher)->stats().live_leases != 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
    }
    EXPECT_EQ((*publisher)->stats().live_leases, 0u);
}

TEST(WeightsGpuIpcChild, OpensThePublishersDeviceSlot) {
    const char* file = std::getenv(kIpcChildEnv);
    if (file == nullptr) {
        GTEST_SKIP() << "runs only as the reader process of "
                        "WeightsGpu.SecondProcessOpensTheDeviceSlotThroughCudaIpc";
    }
    auto staging = DeviceStaging::create(0);
    ASSERT_TRUE(staging.ok()) << staging.status().to_string();
    std::ifstream in(file);
    const auto j = nlohmann::json::parse(in);
    auto d = descriptor_from_json(j.at("descriptor"));
    auto layout = Layout::from_json(j.at("layout"));
    ASSERT_TRUE(d.ok() && layout.ok());
    ReaderOptions ro;
    ro.job = d->job;
    ro.reader_id = "job-000001/rollout-ipc";
    ro.ucx.transports = "shm,self";
    auto reader = Reader::create(ro, *layout);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    const auto choice = (*reader)->device_path(*d, staging->get());
    ASSERT_EQ(choice.path, DeviceWeightPath::kCudaIpc) << choice.reason;
    auto mapped = (*reader)->map_device(*d, **staging);
    ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
    EXPECT_TRUE((*mapped)->still_valid());
    auto back = to_host(**staging, (*mapped)->data(), layout->total_bytes());
    EXPECT_EQ(first_mismatch(back.span(), 33, 1), std::nullopt);
    std::cout << fmt::format("ipc child: opened version {} in {:.4f} s\n", (*mapped)->version(),
                             (*reader)->last_device_fetch().seconds);
}

}  // namespace
}  // namespace tandem::weights::testing
