#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/weights/slot_format.h"

namespace tandem::weights {
namespace {

TEST(Seqlock, FreshHeaderIsNotClosed) {
    SlotHeader h;
    init_header(h);
    EXPECT_FALSE(read_header(h).closed());
}

TEST(Seqlock, WriteCycleOddThenEven) {
    SlotHeader h;
    init_header(h);
    begin_write(h);
    HeaderSnapshot during = read_header(h, 1);
    EXPECT_EQ(during.seq % 2, 1u);
    EXPECT_FALSE(during.closed());
    end_write(h, {7, 100, 0xabc, 0xdef, 4096});
    HeaderSnapshot after = read_header(h);
    EXPECT_TRUE(after.closed());
    EXPECT_EQ(after.fields.version, 7u);
    EXPECT_EQ(after.fields.bytes, 100u);
    EXPECT_EQ(after.fields.manifest_digest, 0xabcu);

    begin_write(h);
    end_write(h, {8, 100, 0xabc, 0xdef, 4096});
    HeaderSnapshot next = read_header(h);
    EXPECT_TRUE(next.closed());
    EXPECT_FALSE(next.same_write_as(after));
    EXPECT_TRUE(next.same_write_as(next));
}

TEST(Seqlock, RemoteCopyRoundTripsAndTornCopiesFailTheCheck) {
    SlotHeader h;
    init_header(h);
    begin_write(h);
    end_write(h, {3, 64, 1, 2, 3});
    std::byte copy[kSlotHeaderBytes];
    std::memcpy(copy, static_cast<const void*>(&h), sizeof(copy));
    HeaderSnapshot s = decode_header(copy);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.fields.version, 3u);
    std::byte encoded[kSlotHeaderBytes];
    encode_header(s, encoded);
    EXPECT_EQ(std::memcmp(encoded, copy, sizeof(copy)), 0);

    // A copy that mixes two writes: the version word of a later write.
    const uint64_t later_version = 4;
    std::memcpy(copy + 16, &later_version, sizeof(later_version));
    EXPECT_FALSE(decode_header(copy).closed());
    EXPECT_FALSE(decode_header(std::span(copy).first(10)).closed());
}

// A writer rewrites a buffer under the seqlock while a reader copies it; every copy the seqlock
// accepts must be one consistent write (all words equal its version). The writer goes on until
// the reader has looked at 50 closed headers (at least 20'000 writes, at most 2'000'000), and
// yields after each write until then: with both threads on one core (ctest -j2 beside another
// suite) the reader was otherwise only ever scheduled while a write was open, saw no closed
// header, and the test failed.
TEST(Seqlock, AcceptedCopiesAreNeverTorn) {
    constexpr size_t kWords = 4096;
    constexpr size_t kLooks = 50;
    SlotHeader h;
    init_header(h);
    std::vector<std::atomic<uint64_t>> data(kWords);
    std::atomic<bool> stop{false};
    std::atomic<size_t> looks{0};
    std::thread writer([&] {
        for (uint64_t v = 1; v < 2'000'000; ++v) {
            begin_write(h);
            // Relaxed data stores: published by end_write's release store of seq.
            for (auto& w : data) w.store(v, std::memory_order_relaxed);
            end_write(h, {v, kWords * 8, 0, 0, 0});
            // Relaxed: a progress count that only decides when to yield and stop.
            const bool enough = looks.load(std::memory_order_relaxed) >= kLooks;
            if (enough && v >= 20'000) break;
            if (!enough) std::this_thread::yield();
        }
        stop.store(true, std::memory_order_relaxed);  // relaxed: only ends the reader's loop
    });
    std::vector<uint64_t> copy(kWords);
    size_t accepted = 0;
    size_t rejected = 0;
    while (!stop.load(std::memory_order_relaxed)) {  // relaxed: a loop flag
        HeaderSnapshot before = read_header(h);
        if (!before.closed()) continue;
        for (size_t i = 0; i < kWords; ++i) copy[i] = data[i].load(std::memory_order_relaxed);
        // Acquire fence: the data loads above happen before the header re-read.
        std::atomic_thread_fence(std::memory_order_acquire);
        HeaderSnapshot after = read_header(h);
        looks.fetch_add(1, std::memory_order_relaxed);  // relaxed: see the writer
        if (!after.same_write_as(before)) {
            ++rejected;
            continue;
        }
        ++accepted;
        for (size_t i = 0; i < kWords; ++i) {
            ASSERT_EQ(copy[i], before.fields.version) << "torn copy accepted at word " << i;
        }
    }
    writer.join();
    EXPECT_GE(accepted + rejected, kLooks);
}

TEST(SlotFormat, PlacesManifestsThenPageAlignedData) {
    SlotFormat f = SlotFormat::create({{0, 10'000}, {10'000, 30'000}}, 4096);
    ASSERT_EQ(f.chunk_counts.size(), 2u);
    EXPECT_EQ(f.chunk_counts[0], 3u);
    EXPECT_EQ(f.chunk_counts[1], 5u);
    EXPECT_EQ(f.manifest_offsets[0], kSlotHeaderBytes);
    EXPECT_EQ(f.manifest_offsets[1], kSlotHeaderBytes + 3 * 8);
    EXPECT_EQ(f.data_offset % 4096, 0u);
    EXPECT_GE(f.data_offset, kSlotHeaderBytes + 8 * 8);
    EXPECT_EQ(f.data_bytes, 30'000u);
    EXPECT_GE(f.region_bytes, f.data_offset + 30'000);
}

}  // namespace
}  // namespace tandem::weights
