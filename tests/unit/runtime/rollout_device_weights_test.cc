// DeviceRolloutWeights (rollout.device: cuda) over a fake weight source and generator: which path
// each placement takes (CUDA IPC from a device slot on this node, else a fetch into device
// memory), the old version kept until the new one is switched in, the order in which a switch
// converts, closes the IPC handles and releases the leases, the fallback from a failed map, and
// what a lost lease or a failed conversion leaves.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <mutex>

#include "rollout_node/device_weights.h"
#include "tests/fakes/fake_device_staging.h"
#include "tests/fakes/fake_runtime.h"

namespace tandem::rollout {
namespace {

using testing::FakeRuntime;
using weights::DeviceWeightPath;

constexpr uint64_t kFloats = 64;
constexpr uint64_t kBytes = kFloats * 4;
constexpr const char* kHost = "rollout-host";

// Events in the order they happened, shared by the fakes.
struct Events {
    void add(std::string e) {
        std::lock_guard<std::mutex> lock(mu);
        list.push_back(std::move(e));
    }
    std::vector<std::string> take() {
        std::lock_guard<std::mutex> lock(mu);
        return std::exchange(list, {});
    }
    std::mutex mu;
    std::vector<std::string> list;
};

std::vector<float> values(Version v) {
    std::vector<float> out(kFloats);
    for (uint64_t i = 0; i < kFloats; ++i) out[i] = static_cast<float>(v * 1000 + i);
    return out;
}

// A version as the trainer announces it: `shards` equal shards published on `host` by pid 100,
// with a device slot (CUDA IPC handle) or not.
weights::VersionDescriptor version(Version v, const std::string& host, bool device_slots,
                                   int shards = 1) {
    weights::VersionDescriptor d;
    d.job = JobId(1);
    d.version = v;
    d.shard_count = static_cast<uint32_t>(shards);
    for (int i = 0; i < shards; ++i) {
        weights::ShardDescriptor s;
        s.index = static_cast<uint32_t>(i);
        s.range = {kBytes * i / shards, kBytes * (i + 1) / shards};
        s.bytes = s.range.size();
        s.publisher = "job-000001/trainer-0";
        s.host = host;
        s.pid = 100;
        if (device_slots) s.cuda_ipc_handle.assign(weights::kIpcHandleBytes, std::byte{1});
        d.shards.push_back(std::move(s));
    }
    return d;
}

runtime::PublishedVersion published(const weights::VersionDescriptor& d) {
    runtime::PublishedVersion p;
    p.info.version = d.version;
    p.descriptor = d;
    return p;
}

// The weight plane seen from this rollout (host kHost, pid 200): the path by choose_device_path,
// device slots as host memory holding the trainer's values, leases whose release is recorded.
class FakeSource final : public DeviceWeightSource {
public:
    explicit FakeSource(Events& events) : events_(events) {}
    uint64_t total_bytes() const override { return kBytes; }
    int device() const override { return 0; }
    weights::DevicePathChoice path(const weights::VersionDescriptor& v) const override {
        weights::DevicePathInputs in;
        in.host = kHost;
        in.pid = 200;
        in.ipc_available = true;
        in.ucx_cuda_memory = ucx_cuda;
        return weights::choose_device_path(v, in);
    }
    Result<std::shared_ptr<const weights::DeviceMappedWeights>> map(
        const weights::VersionDescriptor& v) override {
        if (fail_map) return unavailable("fake: cudaIpcOpenMemHandle: invalid device context");
        const Version n = v.version;
        events_.add(fmt::format("map v{}", n));
        slots_[n] = values(n);  // the trainer's device slot
        auto layout = weights::Layout::create({{"w", weights::DType::kF32, {int64_t{kFloats}}}});
        auto leases = std::make_shared<weights::MappedWeights>(
            n, std::move(*layout), std::vector<weights::MappedWeights::Shard>{}, lease_lost);
        leases->set_on_destroy([this, n] { events_.add(fmt::format("release leases v{}", n)); });
        std::vector<weights::DeviceMappedWeights::Shard> shards;
        for (const auto& s : v.shards) {
            auto* at = reinterpret_cast<std::byte*>(slots_[n].data()) + s.range.begin;
            shards.push_back({s.range, weights::DeviceBuffer(
                                           at, s.range.size(), 0, [this, n, i = s.index](void*) {
                                               events_.add(fmt::format("close v{} shard {}", n, i));
                                           })});
        }
        last_ = {n, DeviceWeightPath::kCudaIpc, 0.001, 0, 0, 0};
        return std::shared_ptr<const weights::DeviceMappedWeights>(
            std::make_shared<weights::DeviceMappedWeights>(std::move(leases), std::move(shards)));
    }
    Status fetch(const weights::VersionDescriptor& v, weights::DeviceWeights& target,
                 const weights::RelaySource* relay) override {
        target.version.reset();
        if (relay != nullptr) {
            if (fail_relay) {
                return data_loss(fmt::format(
                    "fake: chunk 3 from relay {} failed its checksum twice", relay->reader));
            }
            events_.add(fmt::format("fetch v{} from {}", v.version, relay->reader));
        } else {
            if (fail_fetch) return unavailable("fake: publisher gone");
            events_.add(fmt::format("fetch v{}", v.version));
        }
        const auto vals = values(v.version);
        std::memcpy(target.buffer.data(), vals.data(), kBytes);
        target.version = v.version;
        // As Reader::fetch_to_device: ucx_device when chosen, unless a relay serves (host memory).
        const bool direct = relay == nullptr && path(v).path == DeviceWeightPath::kUcxDevice;
        last_ = {v.version, direct ? DeviceWeightPath::kUcxDevice : DeviceWeightPath::kPinnedHost,
                 0.002,     kBytes,
                 1,         direct ? 0 : kBytes};
        return Status();
    }
    Result<weights::DeviceBuffer> allocate(uint64_t bytes) override {
        ++allocations;
        return staging_.allocate(bytes);
    }
    weights::DeviceFetchStats last() const override { return last_; }
    void swap_host() override { events_.add("swap host"); }
    std::optional<weights::RelaySource> relay_source() const override { return mine; }

    bool fail_map = false, fail_fetch = false, fail_relay = false;
    bool ucx_cuda = false;                     // this reader's UCX supports CUDA memory
    std::optional<weights::RelaySource> mine;  // set: the reader relays
    int allocations = 0;
    std::shared_ptr<std::atomic<bool>> lease_lost = std::make_shared<std::atomic<bool>>(false);

private:
    Events& events_;
    weights::testing::FakeDeviceStaging staging_;
    std::map<Version, std::vector<float>> slots_;
    weights::DeviceFetchStats last_;
};

// The generator's weights: copies what it converts.
class FakeSink final : public DeviceWeightSink {
public:
    explicit FakeSink(Events& events) : events_(events) {}
    Status load_device(Version v, std::span<const DevicePiece> pieces) override {
        events_.add(fmt::format("load v{} from {} pieces", v, pieces.size()));
        loaded.reset();
        if (fail) return internal_error("fake: to_bf16: kernel launch: unspecified launch failure");
        for (const DevicePiece& p : pieces) {
            std::memcpy(reinterpret_cast<std::byte*>(weights.data()) + p.offset, p.data, p.bytes);
        }
        loaded = v;
        return Status();
    }
    std::vector<float> weights = std::vector<float>(kFloats, -1.f);
    std::optional<Version> loaded;
    bool fail = false;

private:
    Events& events_;
};

struct Rig {
    Rig() : rt({}, ActorId{JobId(1), ActorRole::kRollout, 0}), dw(rt, source, sink) {}
    // Starts fetching `d` and waits for the fetch (not the switch).
    Status fetch(const weights::VersionDescriptor& d) {
        dw.start_fetch(published(d));
        EXPECT_TRUE(dw.fetching());
        auto s = dw.wait_fetch(rt.clock().now() + std::chrono::seconds(30));
        EXPECT_TRUE(s.has_value()) << "the fetch did not end";
        return s.value_or(internal_error("timed out"));
    }
    bool logged(const std::string& what) const {
        for (const auto& l : rt.logs()) {
            if (l.find(what) != std::string::npos) return true;
        }
        return false;
    }
    Events events;
    FakeRuntime rt;
    FakeSource source{events};
    FakeSink sink{events};
    DeviceRolloutWeights dw;
};

TEST(DeviceRolloutWeights, DeviceSlotOnThisNodeIsOpenedThroughCudaIpcAndClosedAfterTheSwitch) {
    Rig rig;
    ASSERT_TRUE(rig.fetch(version(1, kHost, true)).ok());
    EXPECT_EQ(rig.dw.current(), std::nullopt) << "switched in before the step boundary";
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"map v1"}));
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.dw.current(), std::optional<Version>(1));
    // Converted while the handles and leases are held; then the handles close, then the leases go.
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"load v1 from 1 pieces", "close v1 shard 0",
                                        "release leases v1"}));
    EXPECT_EQ(rig.sink.weights, values(1));
    EXPECT_EQ(rig.source.allocations, 0) << "no fp32 device buffer is needed for CUDA IPC";
    EXPECT_EQ(rig.dw.stats().cuda_ipc, 1u);
    EXPECT_EQ(rig.dw.stats().pinned_host, 0u);
    EXPECT_EQ(rig.dw.stats().switches, 1u);
    EXPECT_TRUE(rig.logged("weights version 1 on device 0 by cuda_ipc")) << rig.rt.logs().front();
    EXPECT_TRUE(rig.logged("device slots on this host"));
}

TEST(DeviceRolloutWeights, TrainerOnAnotherNodeOrWithoutDeviceSlotsIsFetchedIntoDeviceMemory) {
    Rig rig;
    ASSERT_TRUE(rig.fetch(version(1, "trainer-host", true)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"fetch v1", "load v1 from 1 pieces", "swap host"}));
    EXPECT_EQ(rig.sink.weights, values(1));
    EXPECT_TRUE(rig.logged("by pinned_host")) << rig.rt.logs().front();
    EXPECT_TRUE(rig.logged("published on another host (trainer-host)"));

    // Same node, but the trainer keeps no device slots (no GPU rollout on its host at placement).
    ASSERT_TRUE(rig.fetch(version(2, kHost, false)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"fetch v2", "load v2 from 1 pieces", "swap host"}));
    EXPECT_EQ(rig.sink.weights, values(2));
    EXPECT_TRUE(rig.logged("has no device slot to share"));
    EXPECT_EQ(rig.source.allocations, 1) << "the fp32 device buffer is allocated once";
    EXPECT_EQ(rig.dw.stats().pinned_host, 2u);
    EXPECT_EQ(rig.dw.current(), std::optional<Version>(2));
}

TEST(DeviceRolloutWeights, TheOldVersionStaysUntilTheNewOneIsSwitchedIn) {
    Rig rig;
    ASSERT_TRUE(rig.fetch(version(1, kHost, true)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    rig.events.take();
    // Version 2 is opened in the background; the generator keeps version 1 meanwhile.
    ASSERT_TRUE(rig.fetch(version(2, kHost, true)).ok());
    EXPECT_EQ(rig.dw.current(), std::optional<Version>(1));
    EXPECT_EQ(rig.sink.loaded, std::optional<Version>(1));
    EXPECT_EQ(rig.sink.weights, values(1));
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"map v2"}));
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"load v2 from 1 pieces", "close v2 shard 0",
                                        "release leases v2"}));
    EXPECT_EQ(rig.dw.current(), std::optional<Version>(2));
    EXPECT_EQ(rig.sink.weights, values(2));
    // A swap with nothing new keeps the weights.
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_TRUE(rig.events.take().empty());
}

TEST(DeviceRolloutWeights, EveryShardOfAShardedTrainerIsConvertedAtItsOffset) {
    Rig rig;
    ASSERT_TRUE(rig.fetch(version(3, kHost, true, /*shards=*/4)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    const auto events = rig.events.take();
    ASSERT_EQ(events.size(), 1u + 1 + 4 + 1);
    EXPECT_EQ(events[1], "load v3 from 4 pieces");
    EXPECT_EQ(events.back(), "release leases v3");
    EXPECT_EQ(rig.sink.weights, values(3));
}

TEST(DeviceRolloutWeights, AFailedMapFallsBackToAFetchAndSaysWhy) {
    Rig rig;
    rig.source.fail_map = true;
    ASSERT_TRUE(rig.fetch(version(1, kHost, true)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"fetch v1", "load v1 from 1 pieces", "swap host"}));
    EXPECT_EQ(rig.sink.weights, values(1));
    EXPECT_EQ(rig.dw.stats().ipc_fallbacks, 1u);
    EXPECT_EQ(rig.dw.stats().pinned_host, 1u);
    EXPECT_NE(rig.dw.stats().last_reason.find("CUDA IPC was chosen"), std::string::npos);
    EXPECT_TRUE(rig.logged("cudaIpcOpenMemHandle: invalid device context"));
}

TEST(DeviceRolloutWeights, ARelayingRolloutReadsTheRelayTheTreeNamesAndFallsBackToThePublishers) {
    Rig rig;
    rig.source.mine = weights::RelaySource{"job-000001/rollout-0", {}, kHost, 200};
    rig.rt.relay_answer =
        runtime::RelayChoice(weights::RelaySource{"job-000001/rollout-3", {}, "other-host", 300});
    ASSERT_TRUE(rig.fetch(version(1, "trainer-host", false)).ok());
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"fetch v1 from job-000001/rollout-3"}));
    EXPECT_EQ(rig.dw.stats().via_relay, 1u);
    EXPECT_TRUE(rig.logged("by pinned_host from job-000001/rollout-3"));
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.sink.weights, values(1));
    rig.events.take();

    // The relay's bytes fail their checksums: refused, then the publishers are read.
    rig.source.fail_relay = true;
    ASSERT_TRUE(rig.fetch(version(2, "trainer-host", false)).ok());
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"fetch v2"}));
    EXPECT_EQ(rig.dw.stats().relay_fallbacks, 1u);
    EXPECT_EQ(rig.dw.stats().via_relay, 1u);
    EXPECT_TRUE(rig.logged("reading relay job-000001/rollout-3: fake: chunk 3"));
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.sink.weights, values(2));
    rig.events.take();

    // No place in the tree in time: the publishers, with the reason logged.
    rig.rt.relay_answer = deadline_exceeded("no relay place for version 3 in time");
    ASSERT_TRUE(rig.fetch(version(3, "trainer-host", false)).ok());
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"fetch v3"}));
    EXPECT_TRUE(rig.logged("no relay place for version 3"));

    // Both failing: the error names both.
    rig.rt.relay_answer =
        runtime::RelayChoice(weights::RelaySource{"job-000001/rollout-3", {}, "other-host", 300});
    rig.source.fail_fetch = true;
    Status s = rig.fetch(version(4, "trainer-host", false));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("publisher gone"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("relay job-000001/rollout-3"), std::string::npos) << s.message();
}

TEST(DeviceRolloutWeights, DeviceSlotsRegisteredWithUcxAreFetchedByUcxDeviceUnlessARelayServes) {
    Rig rig;
    rig.source.ucx_cuda = true;
    weights::VersionDescriptor d = version(1, "trainer-host", true);
    d.shards[0].device_rkey.assign(8, std::byte{3});
    d.shards[0].device_remote_address = 0x1000;
    ASSERT_TRUE(rig.fetch(d).ok());
    EXPECT_EQ(rig.dw.stats().ucx_device, 1u);
    EXPECT_EQ(rig.dw.stats().last_path, "ucx_device");
    EXPECT_TRUE(rig.logged("weights version 1 on device 0 by ucx_device from publisher"));
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.sink.weights, values(1));

    // In a relay tree the relay serves its host copy: pinned_host, whatever the publishers offer.
    rig.source.mine = weights::RelaySource{"job-000001/rollout-0", {}, kHost, 200};
    rig.rt.relay_answer =
        runtime::RelayChoice(weights::RelaySource{"job-000001/rollout-3", {}, "other-host", 300});
    d.version = 2;
    ASSERT_TRUE(rig.fetch(d).ok());
    EXPECT_EQ(rig.dw.stats().pinned_host, 1u);
    EXPECT_EQ(rig.dw.stats().via_relay, 1u);
    EXPECT_EQ(rig.dw.stats().last_path, "pinned_host");
}

TEST(DeviceRolloutWeights, AVersionMappedThroughCudaIpcNeverJoinsTheRelayTree) {
    Rig rig;
    rig.source.mine = weights::RelaySource{"job-000001/rollout-0", {}, kHost, 200};
    rig.rt.relay_answer =
        runtime::RelayChoice(weights::RelaySource{"job-000001/rollout-3", {}, "other-host", 300});
    ASSERT_TRUE(rig.fetch(version(1, kHost, true)).ok());
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"map v1"}));
    EXPECT_EQ(rig.dw.stats().via_relay, 0u);
}

TEST(DeviceRolloutWeights, AFailedFetchKeepsTheOldVersion) {
    Rig rig;
    ASSERT_TRUE(rig.fetch(version(1, "trainer-host", false)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    rig.events.take();
    rig.source.fail_fetch = true;
    Status s = rig.fetch(version(2, "trainer-host", false));
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("publisher gone"), std::string::npos) << s.to_string();
    ASSERT_TRUE(rig.dw.swap().ok());  // nothing to switch to
    EXPECT_EQ(rig.dw.current(), std::optional<Version>(1));
    EXPECT_EQ(rig.sink.loaded, std::optional<Version>(1));
    EXPECT_TRUE(rig.events.take().empty());
}

TEST(DeviceRolloutWeights, ALeaseLostBeforeTheSwitchRefusesTheVersionAndClosesIt) {
    Rig rig;
    rig.source.lease_lost->store(true);  // the renewals failed while it waited for the boundary
    Status s = rig.fetch(version(1, kHost, true));
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.to_string();
    EXPECT_NE(s.message().find("version 1: lost the lease"), std::string::npos) << s.to_string();
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"map v1", "close v1 shard 0", "release leases v1"}));
    ASSERT_TRUE(rig.dw.swap().ok());
    EXPECT_EQ(rig.dw.current(), std::nullopt);
    EXPECT_EQ(rig.sink.loaded, std::nullopt);
}

TEST(DeviceRolloutWeights, AFailedConversionLeavesNoVersionAndStillClosesTheSlot) {
    Rig rig;
    ASSERT_TRUE(rig.fetch(version(1, kHost, true)).ok());
    ASSERT_TRUE(rig.dw.swap().ok());
    rig.events.take();
    ASSERT_TRUE(rig.fetch(version(2, kHost, true)).ok());
    EXPECT_EQ(rig.events.take(), (std::vector<std::string>{"map v2"}));
    rig.sink.fail = true;
    Status s = rig.dw.swap();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("weights version 2"), std::string::npos) << s.to_string();
    EXPECT_NE(s.message().find("unspecified launch failure"), std::string::npos) << s.to_string();
    EXPECT_EQ(rig.dw.current(), std::nullopt) << "the generator's weights may be half written";
    EXPECT_EQ(rig.events.take(),
              (std::vector<std::string>{"load v2 from 1 pieces", "close v2 shard 0",
                                        "release leases v2"}));
}

TEST(DeviceRolloutWeights, PiecesMustCoverTheLayoutOnceInFp32Values) {
    float x[4];
    const DevicePiece whole{x, 0, 16};
    EXPECT_TRUE(check_device_pieces(1, std::span(&whole, 1), 16).ok());
    const DevicePiece gap[] = {{x, 0, 8}, {x, 12, 4}};
    Status s = check_device_pieces(5, gap, 16);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("version 5: device piece 1 holds bytes [12, 16)"), std::string::npos)
        << s.to_string();
    const DevicePiece odd{x, 0, 6};
    EXPECT_FALSE(check_device_pieces(5, std::span(&odd, 1), 6).ok());
    s = check_device_pieces(5, std::span(&whole, 1), 32);
    EXPECT_NE(s.message().find("cover 16 of the layout's 32 bytes"), std::string::npos)
        << s.to_string();
}

}  // namespace
}  // namespace tandem::rollout
