#include "common/weights/descriptor.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/weights/device_staging.h"

namespace tandem::weights {
namespace {

std::vector<std::byte> bytes_of(std::string_view s) {
    std::vector<std::byte> v;
    for (char c : s) v.push_back(std::byte(static_cast<unsigned char>(c)));
    return v;
}

VersionDescriptor two_shards() {
    VersionDescriptor d;
    d.job = JobId(42);
    d.version = 7;
    d.layout_fingerprint = 0x0123456789abcdefull;
    d.shard_count = 2;
    for (uint32_t i = 0; i < 2; ++i) {
        ShardDescriptor s;
        s.index = i;
        s.range = {i * 1024ull, (i + 1) * 1024ull};
        s.publisher = "job-000042/trainer-" + std::to_string(i);
        s.worker_address = bytes_of(std::string("\x00\x01worker\xff", 9) + std::to_string(i));
        s.remote_address = 0x7f0000001000ull + i;
        s.rkey = bytes_of("rkey-bytes-" + std::to_string(i));
        s.bytes = 1024;
        s.manifest_digest = 0xfeedfacecafebeefull + i;
        s.chunk_bytes = 4096;
        s.slot = i;
        s.host = "host/boot";
        s.pid = 1234;
        s.shm_path = "/proc/1234/fd/9";
        d.shards.push_back(s);
    }
    return d;
}

void expect_same(const VersionDescriptor& a, const VersionDescriptor& b) {
    EXPECT_EQ(a.job, b.job);
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.layout_fingerprint, b.layout_fingerprint);
    EXPECT_EQ(a.shard_count, b.shard_count);
    ASSERT_EQ(a.shards.size(), b.shards.size());
    for (size_t i = 0; i < a.shards.size(); ++i) {
        const auto& x = a.shards[i];
        const auto& y = b.shards[i];
        EXPECT_EQ(x.index, y.index);
        EXPECT_EQ(x.range, y.range);
        EXPECT_EQ(x.publisher, y.publisher);
        EXPECT_EQ(x.worker_address, y.worker_address);
        EXPECT_EQ(x.remote_address, y.remote_address);
        EXPECT_EQ(x.rkey, y.rkey);
        EXPECT_EQ(x.manifest_digest, y.manifest_digest);
        EXPECT_EQ(x.chunk_bytes, y.chunk_bytes);
        EXPECT_EQ(x.slot, y.slot);
        EXPECT_EQ(x.shm_path, y.shm_path);
        EXPECT_EQ(x.pid, y.pid);
        EXPECT_EQ(x.cuda_ipc_handle, y.cuda_ipc_handle);
        EXPECT_EQ(x.device_rkey, y.device_rkey);
        EXPECT_EQ(x.device_remote_address, y.device_remote_address);
    }
}

TEST(Base64, RoundTripsEveryLength) {
    for (size_t n = 0; n < 20; ++n) {
        std::vector<std::byte> v;
        for (size_t i = 0; i < n; ++i) v.push_back(std::byte(i * 37 + 200));
        auto back = base64_decode(base64_encode(v));
        ASSERT_TRUE(back.ok());
        EXPECT_EQ(*back, v);
    }
    EXPECT_EQ(base64_encode(bytes_of("Man")), "TWFu");
    EXPECT_EQ(base64_encode(bytes_of("Ma")), "TWE=");
    EXPECT_FALSE(base64_decode("TWF").ok());
    EXPECT_FALSE(base64_decode("T*Fu").ok());
}

TEST(VersionDescriptor, JsonRoundTrip) {
    const VersionDescriptor d = two_shards();
    EXPECT_TRUE(d.complete());
    const nlohmann::json j = to_json(d);
    EXPECT_EQ(j["job"], "job-000042");
    EXPECT_EQ(j["layout_fingerprint"], "fp:0123456789abcdef");
    EXPECT_TRUE(j["complete"].get<bool>());
    auto back = descriptor_from_json(nlohmann::json::parse(j.dump()));
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same(d, *back);
}

TEST(VersionDescriptor, WireFormKeepsBinaryFieldsInFrames) {
    const VersionDescriptor d = two_shards();
    WireDescriptor w = encode_wire(d);
    EXPECT_EQ(w.frames.size(), 4u);
    EXPECT_FALSE(w.body["shards"][0].contains("rkey"));
    EXPECT_EQ(w.body["shards"][1]["rkey_frame"], 3);
    auto back = decode_wire(nlohmann::json::parse(w.body.dump()), w.frames);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same(d, *back);
    w.frames.pop_back();
    EXPECT_FALSE(decode_wire(w.body, w.frames).ok());
}

// Shard 1 of two_shards() with a device slot: a 64-byte CUDA IPC handle whose bytes spell a
// marker that must not show up where capabilities may not go.
VersionDescriptor with_ipc_handle() {
    VersionDescriptor d = two_shards();
    std::string marker = "IPCSECRET-";
    while (marker.size() < kIpcHandleBytes) marker += char('a' + marker.size() % 26);
    d.shards[1].cuda_ipc_handle = bytes_of(marker);
    return d;
}

TEST(VersionDescriptor, CudaIpcHandleRoundTripsInBothFormsAndIsOptional) {
    const VersionDescriptor d = with_ipc_handle();
    const nlohmann::json j = to_json(d);
    EXPECT_FALSE(j["shards"][0].contains("cuda_ipc_handle"));  // absent, not empty
    EXPECT_TRUE(j["shards"][1].contains("cuda_ipc_handle"));
    auto back = descriptor_from_json(nlohmann::json::parse(j.dump()));
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same(d, *back);
    EXPECT_TRUE(back->shards[0].cuda_ipc_handle.empty());

    WireDescriptor w = encode_wire(d);
    EXPECT_EQ(w.frames.size(), 5u);  // 2 x (worker address, rkey) + one handle
    EXPECT_EQ(w.body["shards"][1]["cuda_ipc_handle_frame"], 4);
    EXPECT_FALSE(w.body["shards"][0].contains("cuda_ipc_handle_frame"));
    auto wire_back = decode_wire(nlohmann::json::parse(w.body.dump()), w.frames);
    ASSERT_TRUE(wire_back.ok()) << wire_back.status().to_string();
    expect_same(d, *wire_back);

    // Without any handle the forms are what they were before device slots existed.
    EXPECT_EQ(encode_wire(two_shards()).frames.size(), 4u);
}

TEST(VersionDescriptor, MalformedCudaIpcHandleIsRefusedNamingTheShard) {
    nlohmann::json j = to_json(with_ipc_handle());
    j["shards"][1]["cuda_ipc_handle"] = base64_encode(bytes_of("short"));
    auto r = descriptor_from_json(j);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("shard 1: cuda_ipc_handle has 5 bytes, expected 64"),
              std::string::npos)
        << r.status().message();
    j["shards"][1]["cuda_ipc_handle"] = "not base64!";
    EXPECT_FALSE(descriptor_from_json(j).ok());

    WireDescriptor w = encode_wire(with_ipc_handle());
    w.body["shards"][1]["cuda_ipc_handle_frame"] = 9;
    auto bad_frame = decode_wire(w.body, w.frames);
    ASSERT_FALSE(bad_frame.ok());
    EXPECT_NE(bad_frame.status().message().find("cuda_ipc_handle_frame 9"), std::string::npos)
        << bad_frame.status().message();
}

TEST(VersionDescriptor, UcxDeviceSlotRoundTripsInBothFormsAndNeedsBothFields) {
    VersionDescriptor d = two_shards();
    d.shards[1].device_rkey = bytes_of("DEVRKEY-bytes");
    d.shards[1].device_remote_address = 0x7e0000002000ull;
    nlohmann::json j = to_json(d);
    EXPECT_FALSE(j["shards"][0].contains("device_rkey"));  // absent, not empty
    auto back = descriptor_from_json(j);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    expect_same(d, *back);
    WireDescriptor w = encode_wire(d);
    EXPECT_FALSE(w.body["shards"][0].contains("device_rkey_frame"));
    auto wired = decode_wire(w.body, w.frames);
    ASSERT_TRUE(wired.ok()) << wired.status().to_string();
    expect_same(d, *wired);
    const std::string line = describe_for_log(d);
    EXPECT_NE(line.find("+ucx_device"), std::string::npos) << line;
    EXPECT_EQ(line.find("DEVRKEY"), std::string::npos) << line;
    EXPECT_EQ(line.find("7e0000002000"), std::string::npos) << line;

    j["shards"][1].erase("device_remote_address");
    auto half = descriptor_from_json(j);
    ASSERT_FALSE(half.ok());
    EXPECT_NE(half.status().message().find("shard 1: a device slot needs both device_rkey"),
              std::string::npos)
        << half.status().message();
    w.body["shards"][1]["device_rkey_frame"] = 11;
    auto bad_frame = decode_wire(w.body, w.frames);
    ASSERT_FALSE(bad_frame.ok());
    EXPECT_NE(bad_frame.status().message().find("device_rkey_frame 11"), std::string::npos)
        << bad_frame.status().message();
}

TEST(VersionDescriptor, LogFormOmitsEveryCapability) {
    const VersionDescriptor d = with_ipc_handle();
    const std::string line = describe_for_log(d);
    EXPECT_NE(line.find("job-000042 version 7"), std::string::npos) << line;
    EXPECT_NE(line.find("shard 1 [1024, 2048) from job-000042/trainer-1"), std::string::npos)
        << line;
    EXPECT_NE(line.find("+ipc"), std::string::npos) << line;  // says a device slot exists
    for (const std::string& secret :
         {std::string("IPCSECRET"), base64_encode(d.shards[1].cuda_ipc_handle).substr(0, 12),
          std::string("rkey-bytes"), base64_encode(d.shards[0].rkey), std::string("worker"),
          std::string("/proc/1234/fd/9"), fmt::format("{}", d.shards[0].remote_address),
          fmt::format("{:x}", d.shards[0].remote_address)}) {
        EXPECT_EQ(line.find(secret), std::string::npos) << secret << " in: " << line;
    }
}

TEST(VersionDescriptor, MalformedJsonIsRefused) {
    nlohmann::json j = to_json(two_shards());
    j["layout_fingerprint"] = "0123";
    EXPECT_FALSE(descriptor_from_json(j).ok());
    j = to_json(two_shards());
    j["shards"][0]["manifest_digest"] = "xyz";
    EXPECT_FALSE(descriptor_from_json(j).ok());
    j = to_json(two_shards());
    j.erase("version");
    EXPECT_FALSE(descriptor_from_json(j).ok());
}

TEST(VersionDirectory, AVersionIsCompleteWhenEveryShardIsAnnounced) {
    VersionDirectory dir;
    const VersionDescriptor full = two_shards();
    VersionDescriptor first = full;
    first.shards = {full.shards[1]};
    ASSERT_TRUE(dir.announce(first).ok());
    EXPECT_FALSE(dir.get(full.job, 7).has_value());
    EXPECT_FALSE(dir.newest(full.job).has_value());
    VersionDescriptor second = full;
    second.shards = {full.shards[0]};
    ASSERT_TRUE(dir.announce(second).ok());
    auto got = dir.get(full.job, 7);
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(got->complete());
    EXPECT_EQ(got->shards[0].index, 0u);  // ordered by index

    // A shard from a different layout is refused, naming both fingerprints.
    VersionDescriptor other = second;
    other.layout_fingerprint = 1;
    Status s = dir.announce(other);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("fp:0000000000000001"), std::string::npos) << s.message();

    dir.retire(full.job, 7, 1);
    EXPECT_FALSE(dir.get(full.job, 7).has_value());
    dir.mark_publisher_gone("job-000042/trainer-0");
    EXPECT_FALSE(dir.newest(full.job).has_value());
}

TEST(VersionDirectory, WaitForTimesOutWithoutAVersion) {
    VersionDirectory dir;
    auto r = dir.wait_for(JobId(1), 0, std::chrono::steady_clock::now());
    EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
}

TEST(RelayPlan, TreeWithConfigurableFanOut) {
    const std::vector<std::string> readers = {"r0", "r1", "r2", "r3", "r4", "r5", "r6"};
    auto two = plan_relay_tree(readers, 2);
    EXPECT_FALSE(two[0].source.has_value());
    EXPECT_FALSE(two[1].source.has_value());
    EXPECT_EQ(two[2].source, size_t{0});
    EXPECT_EQ(two[3].source, size_t{0});
    EXPECT_EQ(two[4].source, size_t{1});
    EXPECT_EQ(two[6].source, size_t{2});
    EXPECT_EQ(two[6].depth, 3u);
    auto chain = plan_relay_tree({"a", "b", "c", "d"}, 1);
    for (size_t i = 1; i < chain.size(); ++i) EXPECT_EQ(chain[i].source, i - 1);
    EXPECT_EQ(chain[3].depth, 4u);
    // Every reader's source appears before it, so fetches can start in order.
    for (size_t i = 0; i < two.size(); ++i) {
        if (two[i].source) {
            EXPECT_LT(*two[i].source, i);
        }
    }
}

TEST(RelaySource, JsonRoundTrip) {
    RelaySource r{"job-000001/rollout-3", bytes_of("addr"), "h/b", 77};
    auto back = relay_source_from_json(to_json(r));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->reader, r.reader);
    EXPECT_EQ(back->worker_address, r.worker_address);
    EXPECT_EQ(back->pid, 77);
}

}  // namespace
}  // namespace tandem::weights
