// The device pipelines' ordering, overlap bookkeeping and failure handling, over a host-memory
// staging whose copies complete only when waited for (tests/fakes/fake_device_staging.h), and the
// choice of device path.

#include "common/weights/device_pipeline.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "tests/fakes/fake_device_staging.h"

namespace tandem::weights {
namespace {

using testing::FakeDeviceStaging;
using Op = FakeDeviceStaging::Op;

std::vector<std::byte> pattern(size_t n, uint8_t seed) {
    std::vector<std::byte> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<uint8_t>(i * 131 + seed));
    return v;
}

// The "device" source: a fake allocation holding `bytes`.
DeviceBuffer device_with(FakeDeviceStaging& fake, const std::vector<std::byte>& bytes) {
    auto b = fake.allocate(bytes.size());
    EXPECT_TRUE(b.ok());
    std::memcpy(b->data(), bytes.data(), bytes.size());
    return std::move(*b);
}

TEST(CopyFromDeviceChunked, ChecksumsChunkKWhileChunkKPlusOneIsInFlight) {
    FakeDeviceStaging fake;
    const auto src = pattern(10'000, 7);
    DeviceBuffer dev = device_with(fake, src);
    std::vector<std::byte> host(src.size());
    std::vector<size_t> seen;
    std::vector<size_t> in_flight_at_chunk;
    Status s = copy_from_device_chunked(
        fake, host, dev.data(), 4096, [&](size_t k, std::span<const std::byte> bytes) {
            seen.push_back(k);
            in_flight_at_chunk.push_back(fake.in_flight());
            // The chunk's bytes have arrived when it is handed over.
            EXPECT_EQ(std::memcmp(bytes.data(), src.data() + k * 4096, bytes.size()), 0) << k;
            EXPECT_EQ(bytes.size(), k < 2 ? 4096u : 10'000u - 8192u);
            return Status();
        });
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(seen, (std::vector<size_t>{0, 1, 2}));
    // Chunks 0 and 1 were checksummed with the next copy in flight; the last with none.
    EXPECT_EQ(in_flight_at_chunk, (std::vector<size_t>{1, 1, 0}));
    EXPECT_EQ(host, src);
    // Order: enqueue 1, enqueue 2, wait 1, enqueue 3, wait 2, wait 3.
    std::vector<std::pair<Op, CopyTicket>> order;
    for (const auto& e : fake.events()) {
        if (e.op != Op::kComplete) order.emplace_back(e.op, e.ticket);
    }
    const std::vector<std::pair<Op, CopyTicket>> expected = {
        {Op::kEnqueueToHost, 1}, {Op::kEnqueueToHost, 2}, {Op::kWait, 1},
        {Op::kEnqueueToHost, 3}, {Op::kWait, 2},          {Op::kWait, 3}};
    EXPECT_EQ(order, expected);
}

TEST(CopyFromDeviceChunked, HandlesOneShortChunkAndNothing) {
    FakeDeviceStaging fake;
    const auto src = pattern(100, 3);
    DeviceBuffer dev = device_with(fake, src);
    std::vector<std::byte> host(src.size());
    int calls = 0;
    ASSERT_TRUE(copy_from_device_chunked(fake, host, dev.data(), 4096,
                                         [&](size_t, std::span<const std::byte> b) {
                                             ++calls;
                                             EXPECT_EQ(b.size(), 100u);
                                             return Status();
                                         })
                    .ok());
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(host, src);
    ASSERT_TRUE(copy_from_device_chunked(fake, {}, dev.data(), 4096,
                                         [&](size_t, std::span<const std::byte>) {
                                             ++calls;
                                             return Status();
                                         })
                    .ok());
    EXPECT_EQ(calls, 1);
    EXPECT_FALSE(
        copy_from_device_chunked(fake, host, dev.data(), 0, [](size_t, std::span<const std::byte>) {
            return Status();
        }).ok());
}

// A copy that fails stops the pipeline at its chunk, with nothing left in flight to write into
// the abandoned host buffer afterwards.
TEST(CopyFromDeviceChunked, CopyFailureMidwayStopsWithNothingInFlight) {
    for (bool at_enqueue : {false, true}) {
        SCOPED_TRACE(at_enqueue ? "enqueue fails" : "completion fails");
        FakeDeviceStaging fake(3);
        if (at_enqueue) {
            fake.fail_enqueue_at(3);
        } else {
            fake.fail_complete_at(3);
        }
        const auto src = pattern(5 * 4096, 9);
        DeviceBuffer dev = device_with(fake, src);
        std::vector<std::byte> host(src.size());
        std::vector<size_t> seen;
        Status s = copy_from_device_chunked(fake, host, dev.data(), 4096,
                                            [&](size_t k, std::span<const std::byte>) {
                                                seen.push_back(k);
                                                return Status();
                                            });
        ASSERT_FALSE(s.ok());
        EXPECT_NE(s.message().find("copying chunk 2 of 5 from device 3"), std::string::npos)
            << s.message();
        EXPECT_EQ(fake.in_flight(), 0u);
        // Enqueue of copy 3 fails after chunk 0's checksum; its completion after chunk 1's.
        const std::vector<size_t> expected =
            at_enqueue ? std::vector<size_t>{0} : std::vector<size_t>{0, 1};
        EXPECT_EQ(seen, expected);
    }
}

TEST(CopyFromDeviceChunked, AnErrorOfTheChunkCallbackStopsAndDrains) {
    FakeDeviceStaging fake;
    const auto src = pattern(4 * 4096, 1);
    DeviceBuffer dev = device_with(fake, src);
    std::vector<std::byte> host(src.size());
    Status s = copy_from_device_chunked(fake, host, dev.data(), 4096,
                                        [&](size_t k, std::span<const std::byte>) {
                                            return k == 1 ? data_loss("bad chunk") : Status();
                                        });
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);
    EXPECT_EQ(fake.in_flight(), 0u);
}

// Waits (with a deadline) until the fake saw `n` enqueues: the uploader's thread has taken the
// ranges announced so far.
bool wait_for_enqueues(const FakeDeviceStaging& fake, size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        size_t got = 0;
        for (const auto& e : fake.events()) got += e.op == Op::kEnqueueToDevice;
        if (got >= n) return true;
        std::this_thread::yield();
    }
    return false;
}

TEST(DeviceUploader, CopiesRangesAsTheyArriveInAnyOrder) {
    FakeDeviceStaging fake;
    const auto host = pattern(8 * 1000, 5);
    auto dev = fake.allocate(host.size());
    ASSERT_TRUE(dev.ok());
    DeviceUploader up(fake, dev->data(), host.size());
    // Chunks verified out of order, as the reader's window completes them.
    const std::vector<size_t> order = {1, 0, 3, 2, 5, 4, 7, 6};
    std::atomic<bool> producer_ok{true};
    std::thread producer([&] {
        for (size_t i = 0; i < order.size(); ++i) {
            const size_t c = order[i];
            up.ready(host.data() + c * 1000, c * 1000, 1000);
            // The copy is enqueued before the next chunk "arrives": overlap.
            if (!wait_for_enqueues(fake, i + 1)) producer_ok = false;
        }
        up.finish(Status());
    });
    Status s = up.run();
    producer.join();
    ASSERT_TRUE(producer_ok.load()) << "the uploader did not enqueue within 10 s";
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(std::memcmp(dev->data(), host.data(), host.size()), 0);
    const auto st = up.stats();
    EXPECT_EQ(st.copies, 8u);
    EXPECT_EQ(st.bytes, host.size());
    EXPECT_EQ(st.overlapped_bytes, host.size());  // every copy was enqueued before finish()
    EXPECT_EQ(fake.in_flight(), 0u);
    // One wait, at the end, for the last copy: nothing blocks the enqueues.
    size_t waits = 0;
    for (const auto& e : fake.events()) waits += e.op == Op::kWait;
    EXPECT_EQ(waits, 1u);
}

TEST(DeviceUploader, RangesAnnouncedBeforeRunAreCopiedWithoutOverlap) {
    FakeDeviceStaging fake;
    const auto host = pattern(3000, 2);
    auto dev = fake.allocate(host.size());
    ASSERT_TRUE(dev.ok());
    DeviceUploader up(fake, dev->data(), host.size());
    up.ready(host.data() + 2000, 2000, 1000);
    up.ready(host.data(), 0, 2000);
    up.finish(Status());
    ASSERT_TRUE(up.run().ok());
    EXPECT_EQ(std::memcmp(dev->data(), host.data(), host.size()), 0);
    EXPECT_EQ(up.stats().overlapped_bytes, 0u);
    EXPECT_EQ(up.stats().max_pending, 2u);
}

TEST(DeviceUploader, AProducerFailureWinsAndWaitsForCopiesInFlight) {
    FakeDeviceStaging fake;
    const auto host = pattern(4000, 4);
    auto dev = fake.allocate(host.size());
    ASSERT_TRUE(dev.ok());
    DeviceUploader up(fake, dev->data(), host.size());
    up.ready(host.data(), 0, 1000);
    up.finish(not_found("version 3 was reclaimed under the read"));
    Status s = up.run();
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    EXPECT_NE(s.message().find("reclaimed"), std::string::npos);
    EXPECT_EQ(fake.in_flight(), 0u);
}

TEST(DeviceUploader, ACopyFailureIsReportedAndLaterRangesAreNotCopied) {
    FakeDeviceStaging fake(1);
    fake.fail_complete_at(2);
    const auto host = pattern(3000, 6);
    auto dev = fake.allocate(host.size());
    ASSERT_TRUE(dev.ok());
    DeviceUploader up(fake, dev->data(), host.size());
    for (int c = 0; c < 3; ++c) up.ready(host.data() + c * 1000, c * 1000, 1000);
    up.finish(Status());
    Status s = up.run();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("fake copy 2"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("device 1"), std::string::npos) << s.message();
    EXPECT_EQ(fake.in_flight(), 0u);

    FakeDeviceStaging fake2(1);
    fake2.fail_enqueue_at(2);
    DeviceUploader up2(fake2, dev->data(), host.size());
    for (int c = 0; c < 3; ++c) up2.ready(host.data() + c * 1000, c * 1000, 1000);
    up2.finish(Status());
    Status s2 = up2.run();
    ASSERT_FALSE(s2.ok());
    EXPECT_NE(s2.message().find("copying bytes [1000, 2000) to device 1"), std::string::npos)
        << s2.message();
    EXPECT_EQ(up2.stats().copies, 1u);  // the third range was not enqueued
}

TEST(DeviceUploader, ProducerBugsAreInternalErrors) {
    FakeDeviceStaging fake;
    const auto host = pattern(2000, 8);
    auto dev = fake.allocate(host.size());
    ASSERT_TRUE(dev.ok());
    {
        DeviceUploader up(fake, dev->data(), host.size());
        up.ready(host.data(), 1500, 1000);  // past the end
        up.finish(Status());
        Status s = up.run();
        EXPECT_EQ(s.code(), StatusCode::kInternal);
        EXPECT_NE(s.message().find("[1500, 2500) lies outside the 2000 bytes"), std::string::npos)
            << s.message();
    }
    {
        DeviceUploader up(fake, dev->data(), host.size());
        up.ready(host.data(), 0, 1000);  // half of it
        up.finish(Status());
        Status s = up.run();
        EXPECT_EQ(s.code(), StatusCode::kInternal);
        EXPECT_NE(s.message().find("1000 of 2000 bytes"), std::string::npos) << s.message();
    }
}

// ---- choosing the path ----

VersionDescriptor two_shards(bool handles, const std::string& host, int64_t pid) {
    VersionDescriptor d;
    d.job = JobId(5);
    d.version = 3;
    d.shard_count = 2;
    for (uint32_t i = 0; i < 2; ++i) {
        ShardDescriptor s;
        s.index = i;
        s.publisher = "job-000005/trainer-" + std::to_string(i);
        s.host = host;
        s.pid = pid;
        if (handles) s.cuda_ipc_handle.assign(kIpcHandleBytes, std::byte{1});
        d.shards.push_back(s);
    }
    return d;
}

TEST(ChooseDevicePath, CudaIpcOnlyForDeviceSlotsOfAnotherProcessOnThisHost) {
    DevicePathInputs in{"node-a/boot-1", 100, true, false};
    auto c = choose_device_path(two_shards(true, "node-a/boot-1", 200), in);
    EXPECT_EQ(c.path, DeviceWeightPath::kCudaIpc) << c.reason;
    EXPECT_EQ(device_weight_path_name(c.path), "cuda_ipc");

    c = choose_device_path(two_shards(true, "node-b/boot-9", 200), in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("shard 0 was published on another host (node-b/boot-9)"),
              std::string::npos)
        << c.reason;

    c = choose_device_path(two_shards(true, "node-a/boot-1", 100), in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("published by this process"), std::string::npos) << c.reason;

    VersionDescriptor one_without = two_shards(true, "node-a/boot-1", 200);
    one_without.shards[1].cuda_ipc_handle.clear();
    c = choose_device_path(one_without, in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("shard 1 (publisher job-000005/trainer-1) has no device slot"),
              std::string::npos)
        << c.reason;

    DevicePathInputs no_staging = in;
    no_staging.ipc_available = false;
    c = choose_device_path(two_shards(true, "node-a/boot-1", 200), no_staging);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("no device staging"), std::string::npos) << c.reason;
}

TEST(ChooseDevicePath, ThePinnedReasonSaysWhatUcxCanDo) {
    DevicePathInputs in{"h", 1, false, false};
    auto c = choose_device_path(two_shards(false, "h", 2), in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("this UCX cannot register CUDA memory"), std::string::npos) << c.reason;
    in.ucx_cuda_memory = true;
    c = choose_device_path(two_shards(false, "h", 2), in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("this UCX can read device memory, but shard 0 (publisher "
                            "job-000005/trainer-0) has no device slot registered with UCX"),
              std::string::npos)
        << c.reason;
    EXPECT_EQ(choose_device_path(VersionDescriptor{}, in).path, DeviceWeightPath::kPinnedHost);
}

TEST(ChooseDevicePath, UcxDeviceWhenBothSidesRegisterDeviceMemoryAndIpcCannotServe) {
    VersionDescriptor d = two_shards(true, "node-b/boot-9", 200);  // another host
    for (auto& s : d.shards) {
        s.device_rkey.assign(16, std::byte{7});
        s.device_remote_address = 0x7f0000000000 + s.index;
    }
    DevicePathInputs in{"node-a/boot-1", 100, true, true};
    auto c = choose_device_path(d, in);
    EXPECT_EQ(c.path, DeviceWeightPath::kUcxDevice) << c.reason;
    EXPECT_EQ(device_weight_path_name(c.path), "ucx_device");
    EXPECT_NE(c.reason.find("shard 0 was published on another host"), std::string::npos)
        << c.reason;
    // This reader's UCX has no CUDA (Debian's): pinned, saying so.
    in.ucx_cuda_memory = false;
    c = choose_device_path(d, in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("this UCX cannot register CUDA memory"), std::string::npos) << c.reason;
    // One shard's publisher could not register its slot.
    in.ucx_cuda_memory = true;
    d.shards[1].device_rkey.clear();
    c = choose_device_path(d, in);
    EXPECT_EQ(c.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(c.reason.find("shard 1 (publisher job-000005/trainer-1) has no device slot "
                            "registered with UCX"),
              std::string::npos)
        << c.reason;
    // Same host, another process: CUDA IPC still wins (no copy at all).
    d = two_shards(true, "node-a/boot-1", 200);
    for (auto& s : d.shards) {
        s.device_rkey.assign(16, std::byte{7});
        s.device_remote_address = 0x7f0000000000;
    }
    EXPECT_EQ(choose_device_path(d, in).path, DeviceWeightPath::kCudaIpc);
}

TEST(FakeDeviceStaging, IpcHandlesOpenTheExportedMemoryAndCloseOnce) {
    FakeDeviceStaging fake;
    auto dev = fake.allocate(64);
    ASSERT_TRUE(dev.ok());
    auto h = fake.export_handle(dev->data());
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->size(), kIpcHandleBytes);
    {
        auto opened = fake.open_handle(*h, 64);
        ASSERT_TRUE(opened.ok());
        EXPECT_EQ(opened->data(), dev->data());
        DeviceBuffer moved = std::move(*opened);
        EXPECT_EQ(fake.closed(), 0);
    }
    EXPECT_EQ(fake.opened(), 1);
    EXPECT_EQ(fake.closed(), 1);
}

}  // namespace
}  // namespace tandem::weights
