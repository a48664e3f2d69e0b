// Weight-plane tests with the publisher(s) and the reader in one process: still real UCX (each has
// its own context and worker), once with shared memory and once with TCP.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "common/weights/reader_mismatch.h"
#include "common/weights/safetensors.h"
#include "common/weights/source_client.h"
#include "common/weights/ucx_loop.h"
#include "tests/integration/weights/test_support.h"

namespace tandem::weights::testing {
namespace {

class WeightsInProcess : public ::testing::TestWithParam<std::string> {
protected:
    PublisherOptions publisher_options(uint32_t shard = 0, uint32_t shards = 1) {
        PublisherOptions o;
        o.job = JobId(1);
        o.publisher_id = "job-000001/trainer-" + std::to_string(shard);
        o.chunk_bytes = 256 << 10;
        o.shard_index = shard;
        o.shard_count = shards;
        o.ucx.transports = GetParam();
        return o;
    }
    ReaderOptions reader_options() {
        ReaderOptions o;
        o.job = JobId(1);
        o.ucx.transports = GetParam();
        o.stall_timeout_ms = std::chrono::milliseconds(3000);
        o.request_timeout_ms = std::chrono::milliseconds(3000);
        return o;
    }
    HostBuffer contents(const Layout& layout, uint64_t seed, Version v) {
        auto b = *HostBuffer::allocate(layout.total_bytes());
        fill_version(b.span(), seed, v);
        return b;
    }

    VersionDirectory directory_;
};

TEST_P(WeightsInProcess, LayoutMismatchIsRefusedNamingBothFingerprints) {
    const Layout published = random_layout(21, 2 << 20);
    const Layout expected = random_layout(22, 2 << 20);
    auto publisher = Publisher::create(publisher_options(), published, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    auto data = contents(published, 21, 1);
    ASSERT_TRUE((*publisher)->publish(1, data.span()).ok());
    auto reader = Reader::create(reader_options(), expected);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    Status s = (*reader)->fetch(*directory_.newest(JobId(1)));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(published.fingerprint_text()), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(expected.fingerprint_text()), std::string::npos) << s.message();
    EXPECT_FALSE((*reader)->fetched_version().has_value());

    // A safetensors file of the other layout is refused by the publisher the same way.
    TempDir dir;
    const std::string path = dir.path() + "/other.safetensors";
    auto other = contents(expected, 22, 0);
    ASSERT_TRUE(write_safetensors(path, expected, other.span()).ok());
    Status p = (*publisher)->publish_safetensors(path, 2);
    EXPECT_NE(p.message().find(published.fingerprint_text()), std::string::npos) << p.message();
    EXPECT_NE(p.message().find(expected.fingerprint_text()), std::string::npos) << p.message();
    EXPECT_EQ(directory_.newest(JobId(1))->version, 1u);
}

// A rollout reading a publisher of another layout (a Python trainer leaves its tensors in the
// job's layouts directory) is told which tensor differs first, besides both fingerprints.
TEST_P(WeightsInProcess, LayoutMismatchNamesTheFirstDifferingTensorFromThePublishersLayoutFile) {
    auto specs = [](int64_t rows) {
        return std::vector<TensorSpec>{{"model.embed_tokens.weight", DType::kF32, {64, 32}},
                                       {"model.norm.weight", DType::kF32, {rows}},
                                       {"lm_head.weight", DType::kF32, {64, 32}}};
    };
    const Layout published = *Layout::create(specs(48));
    const Layout expected = *Layout::create(specs(32));
    TempDir dir;
    ASSERT_TRUE(write_layout_file(dir.path(), published).ok());
    auto publisher = Publisher::create(publisher_options(), published, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    auto data = contents(published, 23, 1);
    ASSERT_TRUE((*publisher)->publish(1, data.span()).ok());
    ReaderOptions o = reader_options();
    o.layouts_dir = dir.path();
    auto reader = Reader::create(o, expected);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    Status s = (*reader)->fetch(*directory_.newest(JobId(1)));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(published.fingerprint_text()), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(expected.fingerprint_text()), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("first difference at tensor 1 model.norm.weight: shape [32] "
                               "expected, [48] published"),
              std::string::npos)
        << s.message();
    EXPECT_FALSE((*reader)->fetched_version().has_value());
}

TEST_P(WeightsInProcess, TruncatedSafetensorsPublishesNothing) {
    const Layout layout = random_layout(23, 1 << 20);
    TempDir dir;
    const std::string path = dir.path() + "/model.safetensors";
    auto data = contents(layout, 23, 0);
    ASSERT_TRUE(write_safetensors(path, layout, data.span()).ok());
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
    auto publisher = Publisher::create(publisher_options(), layout, directory_);
    ASSERT_TRUE(publisher.ok());
    Status s = (*publisher)->publish_safetensors(path);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
    EXPECT_FALSE(directory_.newest(JobId(1)).has_value());
    EXPECT_FALSE((*publisher)->newest().has_value());
}

TEST_P(WeightsInProcess, SafetensorsPublishedAsVersionZeroRoundTrips) {
    const Layout layout = random_layout(24, 3 << 20);
    TempDir dir;
    const std::string in = dir.path() + "/in.safetensors";
    const std::string out = dir.path() + "/out.safetensors";
    auto data = contents(layout, 24, 0);
    ASSERT_TRUE(write_safetensors(in, layout, data.span()).ok());
    auto publisher = Publisher::create(publisher_options(), layout, directory_);
    ASSERT_TRUE(publisher.ok());
    ASSERT_TRUE((*publisher)->publish_safetensors(in).ok());
    auto reader = Reader::create(reader_options(), layout);
    ASSERT_TRUE(reader.ok());
    auto v0 = directory_.get(JobId(1), 0);
    ASSERT_TRUE(v0.has_value());
    ASSERT_TRUE((*reader)->fetch(*v0).ok());
    ASSERT_TRUE((*reader)->swap());
    auto view = (*reader)->current();
    ASSERT_EQ(view->version(), 0u);
    ASSERT_TRUE(write_safetensors(out, view->layout(), view->bytes()).ok());
    auto back = read_safetensors(out);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->layout.fingerprint(), layout.fingerprint());
    for (const auto& t : layout.tensors()) {
        EXPECT_EQ(std::memcmp(back->data.data() + t.offset, data.data() + t.offset, t.bytes), 0)
            << t.name;
    }
}

TEST_P(WeightsInProcess, CorruptChunkIsReadAgainThenRefusedNamingChunkAndOffset) {
    const Layout layout = random_layout(25, 2 << 20);
    auto publisher = Publisher::create(publisher_options(), layout, directory_);
    ASSERT_TRUE(publisher.ok());
    auto data = contents(layout, 25, 1);
    ASSERT_TRUE((*publisher)->publish(1, data.span()).ok());
    auto d = *directory_.newest(JobId(1));

    // Flip a byte of chunk 3 in the published slot, from outside, through its shared memory.
    const SlotFormat format = SlotFormat::create({{0, layout.total_bytes()}}, 256 << 10);
    const std::string& share = d.shards[0].shm_path;
    std::byte* slot = nullptr;
    if (share.rfind("sysv:", 0) == 0) {  // UCX's System V segment
        void* p = shmat(std::atoi(share.c_str() + 5), nullptr, 0);
        ASSERT_NE(p, reinterpret_cast<void*>(-1)) << share;
        slot = static_cast<std::byte*>(p);
    } else {  // a memfd or UCX's posix segment, through /proc/<pid>/fd
        const int fd = ::open(share.c_str(), O_RDWR);
        ASSERT_GE(fd, 0) << share;
        void* p = mmap(nullptr, format.region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        ASSERT_NE(p, MAP_FAILED);
        slot = static_cast<std::byte*>(p);
    }
    const uint64_t corrupt_at = 3 * (256 << 10) + 1000;
    slot[format.data_offset + corrupt_at] ^= std::byte{0x40};

    auto reader = Reader::create(reader_options(), layout);
    ASSERT_TRUE(reader.ok());
    Status s = (*reader)->fetch(d);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
    EXPECT_NE(s.message().find("chunk 3 of shard 0 at offset 786432"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("twice"), std::string::npos) << s.message();
    EXPECT_FALSE((*reader)->fetched_version().has_value());
    EXPECT_FALSE((*reader)->swap());
    EXPECT_EQ((*reader)->current(), nullptr);

    // Repaired, the same version reads fine.
    slot[format.data_offset + corrupt_at] ^= std::byte{0x40};
    EXPECT_TRUE((*reader)->fetch(d).ok());
    if (share.rfind("sysv:", 0) == 0) {
        shmdt(slot);
    } else {
        munmap(slot, format.region_bytes);
    }
}

TEST_P(WeightsInProcess, ShardedVersionIsCompleteOnceEveryShardIsCommitted) {
    const Layout layout = random_layout(26, 6 << 20);
    auto p0 = Publisher::create(publisher_options(0, 2), layout, directory_);
    auto p1 = Publisher::create(publisher_options(1, 2), layout, directory_);
    ASSERT_TRUE(p0.ok() && p1.ok());
    auto data = contents(layout, 26, 5);
    const ByteRange r0 = (*p0)->shard_range();
    const ByteRange r1 = (*p1)->shard_range();
    EXPECT_EQ(r0.end, r1.begin);
    EXPECT_EQ(r1.end, layout.total_bytes());
    ASSERT_TRUE((*p0)->publish(5, data.span().subspan(r0.begin, r0.size())).ok());
    EXPECT_FALSE(directory_.get(JobId(1), 5).has_value());  // half a version is not a version
    ASSERT_TRUE((*p1)->publish(5, data.span().subspan(r1.begin, r1.size())).ok());
    auto d = directory_.get(JobId(1), 5);
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->complete());

    auto reader = Reader::create(reader_options(), layout);
    ASSERT_TRUE(reader.ok());
    ASSERT_TRUE((*reader)->fetch(*d).ok());
    ASSERT_TRUE((*reader)->swap());
    EXPECT_EQ(std::memcmp((*reader)->current()->bytes().data(), data.data(), layout.total_bytes()),
              0);

    auto mapped = (*reader)->map(*d);
    ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
    for (const auto& t : layout.tensors()) {
        auto bytes = (*mapped)->tensor(t.name);
        ASSERT_EQ(bytes.size(), t.bytes) << t.name;
        EXPECT_EQ(std::memcmp(bytes.data(), data.data() + t.offset, t.bytes), 0) << t.name;
    }
    EXPECT_TRUE((*mapped)->still_valid());
}

TEST_P(WeightsInProcess, GenerationKeepsTheOldViewUntilTheSwap) {
    const Layout layout = random_layout(27, 2 << 20);
    auto publisher = Publisher::create(publisher_options(), layout, directory_);
    auto reader = Reader::create(reader_options(), layout);
    ASSERT_TRUE(publisher.ok() && reader.ok());
    for (Version v = 1; v <= 4; ++v) {
        auto data = contents(layout, 27, v);
        ASSERT_TRUE((*publisher)->publish(v, data.span()).ok());
        auto in_use = (*reader)->current();  // what "generation" holds during the fetch
        ASSERT_TRUE((*reader)->fetch(*directory_.newest(JobId(1))).ok());
        if (in_use) {
            EXPECT_EQ(in_use->version(), v - 1);
            EXPECT_FALSE(first_mismatch(in_use->bytes(), 27, v - 1).has_value());
        }
        ASSERT_TRUE((*reader)->swap());
        EXPECT_EQ((*reader)->current()->version(), v);
        EXPECT_FALSE(first_mismatch((*reader)->current()->bytes(), 27, v).has_value());
    }
    // Holding two old views pins both buffers: a third copy is refused, not made.
    auto held = (*reader)->current();
    auto data = contents(layout, 27, 5);
    ASSERT_TRUE((*publisher)->publish(5, data.span()).ok());
    ASSERT_TRUE((*reader)->fetch(*directory_.newest(JobId(1))).ok());
    ASSERT_TRUE((*reader)->swap());
    auto also_held = (*reader)->current();
    data = contents(layout, 27, 6);
    ASSERT_TRUE((*publisher)->publish(6, data.span()).ok());
    Status s = (*reader)->fetch(*directory_.newest(JobId(1)));
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.to_string();
    // Dropping a view unpins its buffer before any later fetch starts (both go through the
    // reader's loop in order).
    held.reset();
    Status again = (*reader)->fetch(*directory_.newest(JobId(1)));
    EXPECT_TRUE(again.ok()) << again.to_string();
}

// A reader that asks a publisher for bytes outside the slot it leased (past the region's end, an
// offset that would wrap, a lease it does not hold) is refused with an error naming the slot, the
// version and the publisher, and nothing is read; the publisher keeps serving that reader's good
// requests and other readers. The misbehaving reader speaks the protocol directly (a real Reader
// checks a lease's offsets before it reads).
TEST_P(WeightsInProcess, ReadsOutsideTheLeasedSlotAreRefusedAndServingGoesOn) {
    const Layout layout = random_layout(25, 1 << 20);
    auto publisher = Publisher::create(publisher_options(), layout, directory_);
    ASSERT_TRUE(publisher.ok()) << publisher.status().to_string();
    auto data = contents(layout, 25, 1);
    ASSERT_TRUE((*publisher)->publish(1, data.span()).ok());

    ucx::UcxOptions uo;
    uo.transports = GetParam();
    auto context = ucx::Context::create(uo);
    ASSERT_TRUE(context.ok()) << context.status().to_string();
    auto loop = UcxLoop::start(*context, {.name = "raw-reader"});
    ASSERT_TRUE(loop.ok()) << loop.status().to_string();
    std::unique_ptr<SourceClient> client;
    std::shared_ptr<SourceConnection> conn;
    ASSERT_TRUE((*loop)
                    ->call([&]() -> Status {
                        client = std::make_unique<SourceClient>(**loop, SystemClock::instance(),
                                                                0x5eed, Logger("weights-test"));
                        TANDEM_RETURN_IF_ERROR(client->start());
                        TANDEM_ASSIGN_OR_RETURN(
                            conn,
                            client->connect((*publisher)->worker_address(), "publisher", "", 0));
                        return Status();
                    })
                    .ok());
    // Sends `rq` and waits for its reply (bytes land in `dest`).
    auto round_trip = [&](wire::Request rq, std::vector<std::byte> payload = {},
                          std::byte* dest = nullptr, size_t length = 0) {
        auto call = (*loop)->call(
            [&] { return client->call(*conn, rq, std::move(payload), dest, length); });
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!(*loop)->call([&] { return call->done(); })) {
            if (std::chrono::steady_clock::now() > deadline) {
                ADD_FAILURE() << wire::request_type_name(rq.type) << ": no reply in 10 s";
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return call;
    };
    wire::Request hello;
    hello.type = wire::RequestType::kHello;
    ASSERT_TRUE(round_trip(hello, (*loop)->address())->status.ok());
    wire::Request acquire;
    acquire.type = wire::RequestType::kAcquire;
    acquire.job = 1;
    acquire.version = 1;
    auto lease = round_trip(acquire);
    ASSERT_TRUE(lease->status.ok()) << lease->status.to_string();
    const uint64_t region = lease->reply.region_bytes;
    ASSERT_GT(region, lease->reply.data_offset);

    std::vector<std::byte> sink(64 << 10);
    struct Bad {
        uint64_t offset, length;
        const char* what;
    };
    for (const Bad& bad : {Bad{region - 100, 4096, "past the region's end"},
                           Bad{region + 1, 0, "starting past the end"},
                           Bad{~uint64_t{0} - 10, 100, "an offset that wraps"},
                           Bad{4096, ~uint64_t{0} - 1000, "a length that wraps"}}) {
        wire::Request rq;
        rq.type = wire::RequestType::kRead;
        rq.lease_id = lease->reply.lease_id;
        rq.offset = bad.offset;
        rq.length = bad.length;
        auto r = round_trip(rq, {}, sink.data(), std::min<uint64_t>(bad.length, sink.size()));
        EXPECT_EQ(r->status.code(), StatusCode::kInvalidArgument) << bad.what;
        const std::string m = r->status.message();
        EXPECT_NE(m.find("leaves slot"), std::string::npos) << bad.what << ": " << m;
        EXPECT_NE(m.find("version 1"), std::string::npos) << bad.what << ": " << m;
        EXPECT_NE(m.find("job-000001/trainer-0"), std::string::npos) << bad.what << ": " << m;
    }
    wire::Request foreign;
    foreign.type = wire::RequestType::kRead;
    foreign.lease_id = lease->reply.lease_id + 1000;
    foreign.offset = lease->reply.data_offset;
    foreign.length = 4096;
    auto refused = round_trip(foreign, {}, sink.data(), 4096);
    EXPECT_EQ(refused->status.code(), StatusCode::kNotFound) << refused->status.to_string();
    EXPECT_GE((*publisher)->stats().requests_refused, 5u);

    // The same connection still gets what its lease covers: the shard's first bytes.
    wire::Request good;
    good.type = wire::RequestType::kRead;
    good.lease_id = lease->reply.lease_id;
    good.offset = lease->reply.data_offset;
    good.length = 4096;
    auto served = round_trip(good, {}, sink.data(), 4096);
    ASSERT_TRUE(served->status.ok()) << served->status.to_string();
    EXPECT_EQ(std::memcmp(sink.data(), data.data(), 4096), 0);

    // And another reader fetches the version as usual.
    auto reader = Reader::create(reader_options(), layout);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    ASSERT_TRUE((*reader)->fetch(*directory_.newest(JobId(1))).ok());
    ASSERT_TRUE((*reader)->swap());
    EXPECT_EQ(first_mismatch((*reader)->current()->bytes(), 25, 1), std::nullopt);

    (*loop)->call([&] {
        conn.reset();
        client.reset();
    });
}

INSTANTIATE_TEST_SUITE_P(Transports, WeightsInProcess, ::testing::Values("shm,self", "tcp,self"),
                         [](const auto& info) {
                             return info.param.find("shm") != std::string::npos ? "shm" : "tcp";
                         });

}  // namespace
}  // namespace tandem::weights::testing
