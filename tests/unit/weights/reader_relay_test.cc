// Relay serve (common/weights/reader_relay.h): what a relaying reader offers downstream readers
// from its two buffers while a pull fills them: waits for versions and chunks not there yet,
// refusals naming the relay and the version, reads bounded by the leased shard. Real registered
// memory (a UCX context on the "self" transport: no network); the pull is played by the test.

#include "common/weights/reader_relay.h"

#include <gtest/gtest.h>

#include "common/weights/ucx.h"
#include "tests/fakes/fake_clock.h"

namespace tandem::weights {
namespace {

constexpr uint64_t kMeta = 4096;
constexpr uint64_t kChunk = 4096;

class RelayServeTest : public ::testing::Test {
protected:
    void SetUp() override {
        ucx::UcxOptions o;
        o.transports = "self";
        auto context = ucx::Context::create(o);
        ASSERT_TRUE(context.ok()) << context.status().to_string();
        for (uint32_t b = 0; b < 2; ++b) {
            auto memory = SlotMemory::create(*context, kMeta + 4 * kChunk,
                                             "tandem-relay-test" + std::to_string(b));
            ASSERT_TRUE(memory.ok()) << memory.status().to_string();
            buffers_[b].memory = std::move(*memory);
        }
    }
    // What a pull does when it claims a buffer for `version` (one shard of 4 chunks) and has
    // read its manifest.
    uint32_t start_pull(Version version) {
        auto claim = table_.claim_for_write();
        EXPECT_TRUE(claim.ok() && claim->slot.has_value());
        const uint32_t slot = *claim->slot;
        ReaderBuffer& b = buffers_[slot];
        b.version = version;
        b.filling = true;
        b.failed = Status();
        b.shards.assign(1, {});
        table_.mark_published(slot, version);
        relay_.pull_started(version);
        auto& st = b.shards[0];
        st.range = {0, 4 * kChunk};
        st.manifest_offset = 64;
        st.chunk_count = 4;
        st.chunk_bytes = kChunk;
        st.manifest_digest = 0xabc;
        st.verified.assign(4, 0);
        st.manifest_ready = true;
        return slot;
    }
    void verify(uint32_t slot, size_t chunk) {
        auto& st = buffers_[slot].shards[0];
        st.verified[chunk] = 1;
        while (st.prefix < st.chunk_count && st.verified[st.prefix] != 0) ++st.prefix;
    }

    testing::FakeClock clock_;
    ReaderBuffers buffers_;
    LeaseTable table_{clock_, 2, std::chrono::milliseconds(1000)};
    RelayServe relay_{
        {JobId(3), "job-000003/rollout-1", std::chrono::milliseconds(1000), 0xf00, kMeta},
        buffers_,
        table_};
};

TEST_F(RelayServeTest, AVersionNotStartedYetWaitsAndAnotherJobIsRefused) {
    auto early = relay_.acquire(JobId(3), 5, 0, "reader-a");
    ASSERT_TRUE(early.ok()) << early.status().to_string();
    EXPECT_FALSE(early->has_value());  // asked again once the pull starts
    auto other = relay_.acquire(JobId(4), 5, 0, "reader-a");
    EXPECT_EQ(other.status().code(), StatusCode::kNotFound);
    EXPECT_NE(other.status().message().find("job-000003/rollout-1"), std::string::npos)
        << other.status().message();
}

TEST_F(RelayServeTest, OffersWhatIsVerifiedAndServesOnlyVerifiedChunksOfTheShard) {
    const uint32_t slot = start_pull(5);
    auto offer = relay_.acquire(JobId(3), 5, 0, "reader-a");
    ASSERT_TRUE(offer.ok() && offer->has_value()) << offer.status().to_string();
    const LeaseOffer& o = **offer;
    EXPECT_EQ(o.chunks_ready, 0u);
    EXPECT_EQ(o.data_offset, kMeta);
    EXPECT_EQ(o.layout_fingerprint, 0xf00u);
    EXPECT_EQ(o.region_bytes, buffers_[slot].memory->size());
    const LeaseId lease = o.grant.id;

    // The header and manifest are readable once the manifest is in; chunk 1 only once verified.
    auto header = relay_.readable(lease, 0, 64);
    ASSERT_TRUE(header.ok());
    EXPECT_EQ(*header, buffers_[slot].memory->data());
    auto chunk1 = relay_.readable(lease, kMeta + kChunk, kChunk);
    ASSERT_TRUE(chunk1.ok());
    EXPECT_EQ(*chunk1, nullptr);  // not yet: the request waits
    verify(slot, 1);
    chunk1 = relay_.readable(lease, kMeta + kChunk, kChunk);
    ASSERT_TRUE(chunk1.ok());
    EXPECT_EQ(*chunk1, buffers_[slot].memory->data() + kMeta + kChunk);
    EXPECT_EQ(*relay_.chunks_ready(lease), 0u);  // chunk 0 still missing
    verify(slot, 0);
    EXPECT_EQ(*relay_.chunks_ready(lease), 2u);
    // A read spanning a verified and an unverified chunk waits.
    EXPECT_EQ(*relay_.readable(lease, kMeta + kChunk, 2 * kChunk), nullptr);

    // Outside the shard or the buffer: refused, naming the relay and the version.
    for (auto [offset, length] : {std::pair<uint64_t, uint64_t>{kMeta + 3 * kChunk, 2 * kChunk},
                                  {kMeta + 4 * kChunk + 1, 1},
                                  {~uint64_t{0} - 5, 10}}) {
        auto bad = relay_.readable(lease, offset, length);
        EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << offset;
        EXPECT_NE(bad.status().message().find("version 5"), std::string::npos)
            << bad.status().message();
        EXPECT_NE(bad.status().message().find("job-000003/rollout-1"), std::string::npos)
            << bad.status().message();
    }

    relay_.release(lease);
    EXPECT_EQ(relay_.readable(lease, 0, 64).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(relay_.chunks_ready(lease).status().code(), StatusCode::kNotFound);
}

TEST_F(RelayServeTest, AFailedPullIsReportedToLeaseHoldersAndNewcomers) {
    const uint32_t slot = start_pull(6);
    auto offer = relay_.acquire(JobId(3), 6, 0, "reader-a");
    ASSERT_TRUE(offer.ok() && offer->has_value());
    const LeaseId lease = (**offer).grant.id;
    buffers_[slot].failed = data_loss("chunk 2 failed its checksum twice");
    auto read = relay_.readable(lease, kMeta, kChunk);
    EXPECT_EQ(read.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(read.status().message().find("chunk 2 failed"), std::string::npos)
        << read.status().message();
    EXPECT_EQ(relay_.chunks_ready(lease).status().code(), StatusCode::kUnavailable);
    auto late = relay_.acquire(JobId(3), 6, 0, "reader-b");
    EXPECT_EQ(late.status().code(), StatusCode::kUnavailable);
    // A version older than the newest pull started, and no longer held, is gone for good.
    auto gone = relay_.acquire(JobId(3), 2, 0, "reader-b");
    EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
    EXPECT_NE(gone.status().message().find("no longer holds version 2"), std::string::npos);
}

}  // namespace
}  // namespace tandem::weights
