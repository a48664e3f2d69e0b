// The device paths of the weight plane on CPU: a real publisher and reader (UCX over shared
// memory, one process) with a host-memory fake standing in for the device staging
// (tests/fakes/fake_device_staging.h). Checks the pipelined publish from and fetch into "device"
// memory end to end, that a copy failing midway leaves no version visible on either side, and
// the device-slot bookkeeping of the CUDA IPC path (handle announced, opened, closed, lease held).

#include <unistd.h>

#include <cstring>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "common/weights/ucx.h"
#include "tests/fakes/fake_device_staging.h"
#include "tests/integration/weights/test_support.h"

namespace tandem::weights::testing {
namespace {

constexpr uint64_t kChunk = 64 << 10;

class WeightsDevicePath : public ::testing::Test {
protected:
    void SetUp() override { layout_ = random_layout(41, 1 << 20); }

    PublisherOptions publisher_options() {
        PublisherOptions o;
        o.job = JobId(1);
        o.publisher_id = "job-000001/trainer-0";
        o.chunk_bytes = kChunk;
        o.ucx.transports = "shm,self";
        o.lease_ttl_ms = std::chrono::milliseconds(2000);
        return o;
    }
    ReaderOptions reader_options() {
        ReaderOptions o;
        o.job = JobId(1);
        o.reader_id = "job-000001/rollout-0";
        o.ucx.transports = "shm,self";
        o.stall_timeout_ms = std::chrono::milliseconds(3000);
        o.request_timeout_ms = std::chrono::milliseconds(3000);
        return o;
    }
    // Version v's bytes in fake device memory.
    DeviceBuffer device_version(FakeDeviceStaging& fake, Version v) {
        auto b = fake.allocate(layout_.total_bytes());
        EXPECT_TRUE(b.ok());
        fill_version({static_cast<std::byte*>(b->data()), b->size()}, 41, v);
        return std::move(*b);
    }

    // A device buffer for the whole layout in `gpu`'s memory.
    DeviceWeights device_target(FakeDeviceStaging& gpu) {
        DeviceWeights target;
        auto buffer = gpu.allocate(layout_.total_bytes());
        EXPECT_TRUE(buffer.ok());
        if (buffer.ok()) target.buffer = std::move(*buffer);
        return target;
    }
    // The first byte of `target` that differs from version v's, or nullopt.
    std::optional<size_t> device_mismatch(const DeviceWeights& target, Version v) {
        return first_mismatch(
            {static_cast<const std::byte*>(target.buffer.data()), layout_.total_bytes()}, 41, v);
    }

    Layout layout_;
    VersionDirectory directory_;
};

TEST_F(WeightsDevicePath, PublishFromDeviceAndFetchIntoDeviceChunkByChunk) {
    FakeDeviceStaging trainer_gpu(0);
    FakeDeviceStaging rollout_gpu(1);
    auto publisher = Publisher::create(publisher_options(), layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    DeviceBuffer src = device_version(trainer_gpu, 1);
    ASSERT_TRUE((*publisher)->publish_from_device(1, src.data(), trainer_gpu).ok());
    EXPECT_EQ((*publisher)->stats().device_staged, 1u);
    EXPECT_EQ((*publisher)->stats().device_slot_exports, 0u);  // device_slots off
    auto d = directory_.newest(JobId(1));
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->shards[0].cuda_ipc_handle.empty());

    auto reader = Reader::create(reader_options(), layout_);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    DeviceWeights target;
    auto buffer = rollout_gpu.allocate(layout_.total_bytes());
    ASSERT_TRUE(buffer.ok());
    target.buffer = std::move(*buffer);
    Status s = (*reader)->fetch_to_device(*d, rollout_gpu, target);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_EQ(target.version, std::optional<Version>(1));
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
    const auto st = (*reader)->last_device_fetch();
    EXPECT_EQ(st.path, DeviceWeightPath::kPinnedHost);
    EXPECT_EQ(st.bytes, layout_.total_bytes());
    EXPECT_EQ(st.copies, (layout_.total_bytes() + kChunk - 1) / kChunk);  // one per chunk
    EXPECT_EQ((*reader)->device_staged(), 1u);
    std::cout << "device fetch: " << st.copies << " copies, " << st.overlapped_bytes << " of "
              << st.bytes << " bytes enqueued while the fetch ran\n";
    // The host copy is there too, like after fetch().
    ASSERT_TRUE((*reader)->swap());
    EXPECT_EQ((*reader)->current()->version(), 1u);
}

TEST_F(WeightsDevicePath, ACopyFailingMidwayLeavesNoVersionVisible) {
    FakeDeviceStaging trainer_gpu(0);
    auto publisher = Publisher::create(publisher_options(), layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    DeviceBuffer v1 = device_version(trainer_gpu, 1);
    ASSERT_TRUE((*publisher)->publish_from_device(1, v1.data(), trainer_gpu).ok());

    // Publishing: the third device -> host copy of version 2 fails.
    trainer_gpu.fail_complete_at(trainer_gpu.enqueued() + 3);
    DeviceBuffer v2 = device_version(trainer_gpu, 2);
    Status failed = (*publisher)->publish_from_device(2, v2.data(), trainer_gpu);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.message().find("publishing version 2"), std::string::npos) << failed.message();
    EXPECT_EQ(directory_.newest(JobId(1))->version, 1u);  // version 2 was never announced
    EXPECT_EQ((*publisher)->newest(), std::optional<Version>(1));
    trainer_gpu.fail_complete_at(0);
    ASSERT_TRUE((*publisher)->publish_from_device(3, v2.data(), trainer_gpu).ok());  // slot free

    // Fetching: the second host -> device copy fails; the target shows no version.
    FakeDeviceStaging rollout_gpu(1);
    rollout_gpu.fail_complete_at(2);
    auto reader = Reader::create(reader_options(), layout_);
    ASSERT_TRUE(reader.ok());
    DeviceWeights target = device_target(rollout_gpu);
    target.version = 1;  // what it held before
    Status s = (*reader)->fetch_to_device(*directory_.newest(JobId(1)), rollout_gpu, target);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("fetching version 3 into device 1"), std::string::npos)
        << s.message();
    EXPECT_FALSE(target.version.has_value());
    EXPECT_EQ(rollout_gpu.in_flight(), 0u);
    // A buffer too small is refused before anything moves.
    DeviceWeights small;
    small.buffer = std::move(*rollout_gpu.allocate(100));
    Status too_small = (*reader)->fetch_to_device(*directory_.newest(JobId(1)), rollout_gpu, small);
    EXPECT_EQ(too_small.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(too_small.message().find("has 100 bytes"), std::string::npos);
}

TEST_F(WeightsDevicePath, DeviceSlotsAreAnnouncedWithAHandleThatAMapOpensUnderALease) {
    FakeDeviceStaging trainer_gpu(0);
    PublisherOptions po = publisher_options();
    po.device_slots = true;
    auto publisher = Publisher::create(po, layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    DeviceBuffer src = device_version(trainer_gpu, 1);
    ASSERT_TRUE((*publisher)->publish_from_device(1, src.data(), trainer_gpu).ok());
    EXPECT_EQ((*publisher)->stats().device_slot_exports, 1u);
    auto d = directory_.newest(JobId(1));
    ASSERT_TRUE(d.has_value());
    ASSERT_EQ(d->shards[0].cuda_ipc_handle.size(), kIpcHandleBytes);
    // JSON (what the control plane carries) keeps it.
    auto via_json = descriptor_from_json(to_json(*d));
    ASSERT_TRUE(via_json.ok());
    EXPECT_EQ(via_json->shards[0].cuda_ipc_handle, d->shards[0].cuda_ipc_handle);

    FakeDeviceStaging rollout_gpu(0);
    auto reader = Reader::create(reader_options(), layout_);
    ASSERT_TRUE(reader.ok());
    // Same process: CUDA cannot open its own handles, so the reader takes the pinned path.
    EXPECT_EQ((*reader)->device_path(*d, &rollout_gpu).path, DeviceWeightPath::kPinnedHost);
    auto refused = (*reader)->map_device(*d, rollout_gpu);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("published by this process"), std::string::npos);

    // As another process on this host would see it (the fake opens handles in-process).
    VersionDescriptor other = *d;
    other.shards[0].pid = static_cast<int64_t>(getppid());
    EXPECT_EQ((*reader)->device_path(other, &rollout_gpu).path, DeviceWeightPath::kCudaIpc);
    {
        auto mapped = (*reader)->map_device(other, rollout_gpu);
        ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
        EXPECT_EQ((*mapped)->version(), 1u);
        EXPECT_TRUE((*mapped)->still_valid());
        ASSERT_NE((*mapped)->data(), nullptr);
        EXPECT_EQ(
            first_mismatch(
                {static_cast<const std::byte*>((*mapped)->data()), layout_.total_bytes()}, 41, 1),
            std::nullopt);
        EXPECT_EQ(rollout_gpu.opened(), 1);
        EXPECT_EQ((*publisher)->stats().live_leases, 1u);  // the slot stays
        EXPECT_EQ((*reader)->last_device_fetch().path, DeviceWeightPath::kCudaIpc);
    }
    EXPECT_EQ(rollout_gpu.closed(), 1);
    // The release reaches the publisher's loop asynchronously.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while ((*publisher)->stats().live_leases != 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
    }
    EXPECT_EQ((*publisher)->stats().live_leases, 0u);

    // A publish from host memory reuses slots without a device copy: no handle announced.
    auto host = *HostBuffer::allocate(layout_.total_bytes());
    fill_version(host.span(), 41, 2);
    ASSERT_TRUE((*publisher)->publish(2, host.span()).ok());
    EXPECT_TRUE(directory_.newest(JobId(1))->shards[0].cuda_ipc_handle.empty());
}

// Reader options for relay tree member `index` (rollout-<index>), serving what it fetches.
ReaderOptions relay_reader_options(int index) {
    ReaderOptions o;
    o.job = JobId(1);
    o.reader_id = fmt::format("job-000001/rollout-{}", index);
    o.ucx.transports = "shm,self";
    o.relay = true;
    o.stall_timeout_ms = std::chrono::milliseconds(3000);
    o.request_timeout_ms = std::chrono::milliseconds(1500);
    return o;
}

TEST_F(WeightsDevicePath, ADeviceReaderReadsItsRelayAndRelaysToItsOwnChildren) {
    auto publisher = Publisher::create(publisher_options(), layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    auto host = *HostBuffer::allocate(layout_.total_bytes());
    fill_version(host.span(), 41, 1);
    ASSERT_TRUE((*publisher)->publish(1, host.span()).ok());
    const VersionDescriptor d = *directory_.newest(JobId(1));

    // The tree: publisher -> rollout-1 (host) -> rollout-2 (device) -> rollout-3 (host).
    auto r1 = Reader::create(relay_reader_options(1), layout_);
    auto r2 = Reader::create(relay_reader_options(2), layout_);
    auto r3 = Reader::create(relay_reader_options(3), layout_);
    ASSERT_TRUE(r1.ok() && r2.ok() && r3.ok());
    ASSERT_TRUE((*r1)->fetch(d).ok());

    FakeDeviceStaging gpu(0);
    DeviceWeights target = device_target(gpu);
    const RelayTreeFetch tree = fetch_via_relay_tree(
        std::optional<RelaySource>((*r1)->relay_source()),
        [&](const RelaySource* relay) { return (*r2)->fetch_to_device(d, gpu, target, relay); });
    ASSERT_TRUE(tree.status.ok()) << tree.status.to_string();
    EXPECT_EQ(tree.source, "job-000001/rollout-1");
    EXPECT_FALSE(tree.relay.has_value());
    ASSERT_EQ(target.version, std::optional<Version>(1));
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
    const DeviceFetchStats st = (*r2)->last_device_fetch();
    EXPECT_TRUE(st.via_relay);
    EXPECT_EQ(st.path, DeviceWeightPath::kPinnedHost);
    EXPECT_EQ(st.bytes, layout_.total_bytes());
    EXPECT_TRUE((*r2)->last_fetch().via_relay);
    std::cout << "device fetch via relay: " << st.copies << " copies, " << st.overlapped_bytes
              << " of " << st.bytes << " bytes enqueued while the fetch ran\n";

    // The device reader serves its pinned host copy downstream.
    const RelaySource r2_source = (*r2)->relay_source();
    ASSERT_TRUE((*r3)->fetch(d, &r2_source).ok());
    ASSERT_TRUE((*r3)->swap());
    EXPECT_EQ(first_mismatch((*r3)->current()->bytes(), 41, 1), std::nullopt);
    EXPECT_TRUE((*r3)->last_fetch().via_relay);
}

TEST_F(WeightsDevicePath, ABadOrDeadRelayIsRefusedAndThePublishersServeTheDevice) {
    auto publisher = Publisher::create(publisher_options(), layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    auto host = *HostBuffer::allocate(layout_.total_bytes());
    fill_version(host.span(), 41, 1);
    ASSERT_TRUE((*publisher)->publish(1, host.span()).ok());
    const VersionDescriptor v1 = *directory_.newest(JobId(1));

    auto r1 = Reader::create(relay_reader_options(1), layout_);
    auto r2 = Reader::create(relay_reader_options(2), layout_);
    ASSERT_TRUE(r1.ok() && r2.ok());
    ASSERT_TRUE((*r1)->fetch(v1).ok());
    ASSERT_TRUE((*r1)->swap());
    // The relay's copy goes bad after it verified it (a memory fault): its readers' checksums
    // refuse the chunk (read twice), and the publishers serve instead.
    auto bytes = (*r1)->current()->bytes();
    const size_t at = bytes.size() / 2;
    const_cast<std::byte&>(bytes[at]) ^= std::byte{0x5a};

    FakeDeviceStaging gpu(0);
    DeviceWeights target = device_target(gpu);
    auto read = [&](const VersionDescriptor& d) {
        return [&, d](const RelaySource* relay) {
            return (*r2)->fetch_to_device(d, gpu, target, relay);
        };
    };
    const RelaySource r1_source = (*r1)->relay_source();
    RelayTreeFetch tree = fetch_via_relay_tree(std::optional<RelaySource>(r1_source), read(v1));
    ASSERT_TRUE(tree.status.ok()) << tree.status.to_string();
    EXPECT_TRUE(tree.fell_back);
    EXPECT_EQ(tree.source, "publisher");
    ASSERT_TRUE(tree.relay.has_value());
    EXPECT_EQ(tree.relay->code(), StatusCode::kDataLoss) << tree.relay->to_string();
    EXPECT_NE(tree.relay->message().find("failed its checksum twice"), std::string::npos)
        << tree.relay->message();
    EXPECT_NE(tree.relay->message().find("relay job-000001/rollout-1"), std::string::npos)
        << tree.relay->message();
    ASSERT_EQ(target.version, std::optional<Version>(1));
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
    EXPECT_FALSE((*r2)->last_device_fetch().via_relay);

    // The relay is gone: the read of it fails (unreachable or silent), the publishers serve.
    r1->reset();
    fill_version(host.span(), 41, 2);
    ASSERT_TRUE((*publisher)->publish(2, host.span()).ok());
    const VersionDescriptor v2 = *directory_.newest(JobId(1));
    tree = fetch_via_relay_tree(std::optional<RelaySource>(r1_source), read(v2));
    ASSERT_TRUE(tree.status.ok()) << tree.status.to_string();
    EXPECT_TRUE(tree.fell_back);
    ASSERT_TRUE(tree.relay.has_value());
    std::cout << "dead relay: " << tree.relay->to_string() << "\n";
    ASSERT_EQ(target.version, std::optional<Version>(2));
    EXPECT_EQ(device_mismatch(target, 2), std::nullopt);
}

TEST_F(WeightsDevicePath, WithoutCudaInUcxDeviceSlotsAreNotOfferedOverUcxAndThePinnedPathRuns) {
    auto probe = ucx::Context::create(publisher_options().ucx);
    ASSERT_TRUE(probe.ok()) << probe.status().to_string();
    if ((*probe)->supports_cuda_memory()) {
        GTEST_SKIP() << "this UCX reports CUDA memory support; tandem_gpu_weights covers it";
    }
    FakeDeviceStaging trainer_gpu(0);  // DeviceMemoryKind::kCuda, like a real device
    PublisherOptions po = publisher_options();
    po.device_slots = true;
    auto publisher = Publisher::create(po, layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    DeviceBuffer src = device_version(trainer_gpu, 1);
    ASSERT_TRUE((*publisher)->publish_from_device(1, src.data(), trainer_gpu).ok());
    EXPECT_EQ((*publisher)->stats().device_slot_exports, 1u);  // CUDA IPC for this node
    EXPECT_EQ((*publisher)->stats().ucx_device_exports, 0u);
    VersionDescriptor d = *directory_.newest(JobId(1));
    EXPECT_TRUE(d.shards[0].device_rkey.empty());
    d.shards[0].host = "another-host";  // as a rollout elsewhere sees it

    FakeDeviceStaging rollout_gpu(1);
    auto reader = Reader::create(reader_options(), layout_);
    ASSERT_TRUE(reader.ok());
    const DevicePathChoice choice = (*reader)->device_path(d, &rollout_gpu);
    EXPECT_EQ(choice.path, DeviceWeightPath::kPinnedHost);
    EXPECT_NE(choice.reason.find("this UCX cannot register CUDA memory"), std::string::npos)
        << choice.reason;
    DeviceWeights target = device_target(rollout_gpu);
    ASSERT_TRUE((*reader)->fetch_to_device(d, rollout_gpu, target).ok());
    EXPECT_EQ((*reader)->last_device_fetch().path, DeviceWeightPath::kPinnedHost);
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
}

// The ucx_device path end to end on CPU: the fake's "device" memory is host memory and says so
// (DeviceMemoryKind::kHost), so this UCX registers the publisher's device slots and gets from
// them into the reader's "device" buffer, as a CUDA-enabled UCX would with GPU memory.
TEST_F(WeightsDevicePath, UcxDeviceSlotsAreGotStraightIntoDeviceMemoryAndVerifiedOnTheHost) {
    FakeDeviceStaging trainer_gpu(0);
    trainer_gpu.set_memory_kind(DeviceMemoryKind::kHost);
    PublisherOptions po = publisher_options();
    po.device_slots = true;
    auto publisher = Publisher::create(po, layout_, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    DeviceBuffer src = device_version(trainer_gpu, 1);
    ASSERT_TRUE((*publisher)->publish_from_device(1, src.data(), trainer_gpu).ok());
    EXPECT_EQ((*publisher)->stats().ucx_device_exports, 1u);
    VersionDescriptor d = *directory_.newest(JobId(1));
    ASSERT_FALSE(d.shards[0].device_rkey.empty());
    EXPECT_NE(describe_for_log(d).find("+ucx_device"), std::string::npos);
    auto via_wire = decode_wire(encode_wire(d).body, encode_wire(d).frames);
    ASSERT_TRUE(via_wire.ok()) << via_wire.status().to_string();
    EXPECT_EQ(via_wire->shards[0].device_rkey, d.shards[0].device_rkey);
    EXPECT_EQ(via_wire->shards[0].device_remote_address, d.shards[0].device_remote_address);

    FakeDeviceStaging rollout_gpu(1);
    rollout_gpu.set_memory_kind(DeviceMemoryKind::kHost);
    ReaderOptions ro = reader_options();
    ro.relay = true;
    auto reader = Reader::create(ro, layout_);
    ASSERT_TRUE(reader.ok());
    // Same process: CUDA IPC cannot serve, ucx_device can.
    EXPECT_EQ((*reader)->device_path(d, &rollout_gpu).path, DeviceWeightPath::kUcxDevice);
    DeviceWeights target = device_target(rollout_gpu);
    Status s = (*reader)->fetch_to_device(d, rollout_gpu, target);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_EQ(target.version, std::optional<Version>(1));
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
    const DeviceFetchStats st = (*reader)->last_device_fetch();
    EXPECT_EQ(st.path, DeviceWeightPath::kUcxDevice);
    EXPECT_EQ(st.bytes, layout_.total_bytes());
    EXPECT_EQ(st.copies, (layout_.total_bytes() + kChunk - 1) / kChunk);  // one D2H per chunk
    EXPECT_EQ(rollout_gpu.enqueued(), st.copies);  // no host -> device copy at all
    // The verified host copy is there too: swap() and relaying work as after fetch().
    const RelaySource me = (*reader)->relay_source();
    auto child = Reader::create(reader_options(), layout_);
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE((*child)->fetch(d, &me).ok());
    ASSERT_TRUE((*child)->swap());
    EXPECT_EQ(first_mismatch((*child)->current()->bytes(), 41, 1), std::nullopt);
    ASSERT_TRUE((*reader)->swap());
    EXPECT_EQ((*reader)->current()->version(), 1u);

    // Fetching the same version again still fills the device buffer.
    std::memset(target.buffer.data(), 0, layout_.total_bytes());
    ASSERT_TRUE((*reader)->fetch_to_device(d, rollout_gpu, target).ok());
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);

    // A device slot whose bytes went bad: the chunk fails its checksum twice, the ucx_device read
    // is refused, and the host slot serves the version through the pinned path.
    ASSERT_TRUE((*publisher)->publish_from_device(2, src.data(), trainer_gpu).ok());
    VersionDescriptor d2 = *directory_.newest(JobId(1));
    reinterpret_cast<std::byte*>(d2.shards[0].device_remote_address)[3 * kChunk + 5] ^=
        std::byte{0x21};
    Status fell_back = (*reader)->fetch_to_device(d2, rollout_gpu, target);
    ASSERT_TRUE(fell_back.ok()) << fell_back.to_string();
    EXPECT_EQ(target.version, std::optional<Version>(2));
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);  // src holds version 1's bytes
    const DeviceFetchStats after = (*reader)->last_device_fetch();
    EXPECT_EQ(after.path, DeviceWeightPath::kPinnedHost);
    EXPECT_TRUE(after.fell_back);
    // A refused chunk may be one slot's fault only: the next version tries ucx_device again.
    ASSERT_TRUE((*publisher)->publish_from_device(3, src.data(), trainer_gpu).ok());
    ASSERT_TRUE((*reader)->fetch_to_device(*directory_.newest(JobId(1)), rollout_gpu, target).ok());
    EXPECT_EQ((*reader)->last_device_fetch().path, DeviceWeightPath::kUcxDevice);
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);

    // Any other failure (here the second device -> host copy) also falls back, and keeps this
    // reader on the pinned path from then on.
    ASSERT_TRUE((*publisher)->publish_from_device(4, src.data(), trainer_gpu).ok());
    rollout_gpu.fail_complete_at(rollout_gpu.enqueued() + 2);
    ASSERT_TRUE((*reader)->fetch_to_device(*directory_.newest(JobId(1)), rollout_gpu, target).ok());
    EXPECT_TRUE((*reader)->last_device_fetch().fell_back);
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
    ASSERT_TRUE((*publisher)->publish_from_device(5, src.data(), trainer_gpu).ok());
    ASSERT_TRUE((*reader)->fetch_to_device(*directory_.newest(JobId(1)), rollout_gpu, target).ok());
    EXPECT_EQ((*reader)->last_device_fetch().path, DeviceWeightPath::kPinnedHost);
    EXPECT_FALSE((*reader)->last_device_fetch().fell_back);
    EXPECT_EQ(device_mismatch(target, 1), std::nullopt);
}

}  // namespace
}  // namespace tandem::weights::testing
