// Sharded decode over the in-process ring against the double reference on the whole cache.
// Tolerance: o and lse |err| <= 1e-5 + 1e-5 |ref| (fp32).
#include "kernels/ring/sharded_decode.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/ring/in_process_transport.h"
#include "kernels/ring/ring_layout.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::random_floats;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_double;

constexpr std::chrono::milliseconds kShardedDecodeTimeout{20000};

DecodeConfig decode_config(int64_t block) {
    DecodeConfig c;
    c.hq = 4;
    c.hkv = 2;
    c.d = 8;
    c.scale = default_softmax_scale(8);
    c.block_tokens = block;
    return c;
}

// A sequence decoded on P ranks, checked step by step against the reference.
class DecodeRun {
public:
    DecodeRun(int ranks, int64_t block) : cfg_(decode_config(block)), ranks_(ranks) {
        transports_ = make_in_process_ring(ranks);
        for (int r = 0; r < ranks; ++r) {
            auto s = DecodeShard::create(cfg_, r, ranks);
            EXPECT_TRUE(s.ok());
            shards_.push_back(std::move(s).value());
        }
    }

    // Prefill: every rank stores its zigzag shard of `t` tokens.
    void prefill(int64_t t, uint64_t seed) {
        const int64_t row = cfg_.hkv * cfg_.d;
        k_ = random_floats(static_cast<size_t>(t * row), seed);
        v_ = random_floats(static_cast<size_t>(t * row), seed + 1);
        for (int r = 0; r < ranks_; ++r) {
            const RingShard sh = ring_shard(RingLayout::kZigzag, t, ranks_, r);
            for (const auto& seg : sh.segments) {
                ASSERT_TRUE(shards_[r]
                                .store(seg.pos0, seg.rows, k_.data() + seg.pos0 * row,
                                       v_.data() + seg.pos0 * row)
                                .ok());
            }
        }
        len_ = t;
    }

    // Appends n tokens, attends n queries at their positions, checks every rank's result.
    void step(int64_t n, uint64_t seed) {
        const int64_t row = cfg_.hkv * cfg_.d;
        const auto nk = random_floats(static_cast<size_t>(n * row), seed);
        const auto nv = random_floats(static_cast<size_t>(n * row), seed + 1);
        const auto q = random_floats(static_cast<size_t>(n * cfg_.hq * cfg_.d), seed + 2);
        for (int r = 0; r < ranks_; ++r) {
            ASSERT_TRUE(shards_[r].append(len_, n, nk.data(), nv.data()).ok());
        }
        k_.insert(k_.end(), nk.begin(), nk.end());
        v_.insert(v_.end(), nv.begin(), nv.end());
        const int64_t q_pos0 = len_;
        len_ += n;

        std::vector<std::vector<float>> o(ranks_), lse(ranks_);
        std::vector<Status> status(ranks_);
        std::vector<std::thread> threads;
        for (int r = 0; r < ranks_; ++r) {
            o[r].resize(static_cast<size_t>(n * cfg_.hq * cfg_.d));
            lse[r].resize(static_cast<size_t>(n * cfg_.hq));
            threads.emplace_back([&, r] {
                status[r] =
                    sharded_decode_attend(shards_[r], *transports_[r], q.data(), n, q_pos0,
                                          o[r].data(), lse[r].data(), kShardedDecodeTimeout);
            });
        }
        for (auto& t : threads) t.join();

        AttentionParams p;
        p.tq = n;
        p.tk = len_;
        p.hq = cfg_.hq;
        p.hkv = cfg_.hkv;
        p.d = cfg_.d;
        p.scale = cfg_.scale;
        p.causal = true;
        p.q_pos0 = q_pos0;
        const auto ref = reference_forward(p, to_double(q), to_double(k_), to_double(v_));
        int64_t total = 0;
        for (const auto& s : shards_) total += s.tokens();
        EXPECT_EQ(total, len_);
        for (int r = 0; r < ranks_; ++r) {
            ASSERT_TRUE(status[r].ok()) << status[r].to_string();
            EXPECT_TRUE(all_close(o[r], ref.o, 1e-5, 1e-5, "o"));
            EXPECT_TRUE(all_close(lse[r], ref.lse, 1e-5, 1e-5, "lse"));
            // Every rank merged the same partials in the same order.
            EXPECT_EQ(0, std::memcmp(o[r].data(), o[0].data(), o[0].size() * 4));
        }
    }

    const std::vector<DecodeShard>& shards() const { return shards_; }

private:
    DecodeConfig cfg_;
    int ranks_;
    std::vector<std::unique_ptr<RingTransport>> transports_;
    std::vector<DecodeShard> shards_;
    std::vector<float> k_, v_;
    int64_t len_ = 0;
};

TEST(ShardedDecode, MatchesReferenceAfterPrefillForOneToEightNewTokens) {
    for (int ranks : {1, 2, 3, 4}) {
        SCOPED_TRACE("P=" + std::to_string(ranks));
        DecodeRun run(ranks, 4);
        run.prefill(29, test_seed());
        uint64_t seed = test_seed() + 10;
        for (int64_t n : {1, 3, 8, 1, 2, 5}) run.step(n, seed += 3);
    }
}

TEST(ShardedDecode, EmptyShardsContributeNothingAndNoNan) {
    DecodeRun run(4, 16);  // 3 tokens: all in block 0, owned by rank 0
    run.step(3, test_seed());
    EXPECT_EQ(run.shards()[0].tokens(), 3);
    for (int r = 1; r < 4; ++r) EXPECT_EQ(run.shards()[r].tokens(), 0);
    run.step(1, test_seed() + 5);
}

TEST(ShardedDecode, AnEmptyShardAloneGivesMinusInfinityAndZero) {
    auto shard = DecodeShard::create(decode_config(8), 1, 2);
    ASSERT_TRUE(shard.ok());
    const auto q = random_floats(2 * 4 * 8, test_seed());
    std::vector<float> o(q.size(), 5.0f), lse(2 * 4, 5.0f);
    ASSERT_TRUE(shard->attend(q.data(), 2, 0, o.data(), lse.data()).ok());
    for (float x : o) EXPECT_EQ(x, 0.0f);
    for (float x : lse) EXPECT_TRUE(std::isinf(x) && x < 0);
}

TEST(ShardedDecode, AppendPolicyIsBlockRoundRobin) {
    auto shard = DecodeShard::create(decode_config(4), 0, 3);
    ASSERT_TRUE(shard.ok());
    const int owners[] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0};
    for (int pos = 0; pos < 13; ++pos) EXPECT_EQ(shard->owner(pos), owners[pos]) << pos;
    // Appending 13 tokens keeps positions 0..3 and 12 on rank 0.
    const auto kv = random_floats(13 * 2 * 8, 1);
    ASSERT_TRUE(shard->append(0, 13, kv.data(), kv.data()).ok());
    EXPECT_EQ(shard->tokens(), 5);
}

TEST(ShardedDecode, StoringOverlappingPositionsIsRejected) {
    auto shard = DecodeShard::create(decode_config(4), 0, 1);
    ASSERT_TRUE(shard.ok());
    const auto kv = random_floats(10 * 2 * 8, 1);
    ASSERT_TRUE(shard->store(0, 5, kv.data(), kv.data()).ok());
    EXPECT_EQ(shard->store(4, 2, kv.data(), kv.data()).code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace tandem::kernels
