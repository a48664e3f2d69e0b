// Background KV compression: a block is read entirely before or entirely after its swap, a stale
// result never lands on a freed or reused slot, and decode with the compressor running stays
// within the drift of the compressed format. No sleeps: the hook and drain() order the cases.
#include "common/model/kv_compressor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/model_weights.h"
#include "tests/unit/model/kv_test_util.h"

namespace tandem::model {
namespace {

using kernels::KvDType;
using kernels::KvPageFormat;
using kernels::KvScheme;

constexpr int kLayers = 2;

KvPageFormat fmt(KvDType dt) {
    KvPageFormat f;
    f.dtype = dt;
    f.scheme = dt == KvDType::kInt2 ? KvScheme::kKivi : KvScheme::kPerToken;
    f.hkv = 2;
    f.d = 16;
    f.page_tokens = 8;
    f.value_group = 8;
    return f;
}

std::shared_ptr<const KvSealedBlock> random_block(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> k(kLayers * 8 * 32), v(k.size());
    for (auto& x : k) x = u(rng);
    for (auto& x : v) x = u(rng);
    auto b = seal_block(
        fmt(KvDType::kInt8), kLayers, 8, [&](int l) { return k.data() + l * 256; },
        [&](int l) { return v.data() + l * 256; });
    EXPECT_TRUE(b.ok());
    return std::move(b).value();
}

std::vector<float> dequant(const KvSealedBlock& b) {
    std::vector<float> out(static_cast<size_t>(kLayers * 2 * 256));
    for (int l = 0; l < kLayers; ++l) {
        EXPECT_TRUE(kernels::kv_dequantize_page(b.format, b.page(l), 0, b.rows,
                                                out.data() + l * 512, out.data() + l * 512 + 256)
                        .ok());
    }
    return out;
}

TEST(KvCompressor, AReaderSeesTheOldBlockUntilTheSwapAndTheNewOneAfter) {
    KvCompressor comp(fmt(KvDType::kInt2), kLayers);
    KvBlockSlot slot;
    const auto old = random_block(1);
    slot.store(old, std::memory_order_release);
    std::promise<void> reached, go;
    auto go_f = go.get_future().share();
    comp.set_before_publish([&] {
        reached.set_value();
        go_f.wait();
    });
    comp.submit(&slot, old);
    reached.get_future().wait();  // the result is built, not yet published
    auto seen = slot.load(std::memory_order_acquire);
    EXPECT_EQ(seen, old);
    go.set_value();
    comp.drain();
    auto now = slot.load(std::memory_order_acquire);
    ASSERT_NE(now, old);
    EXPECT_EQ(now->format, fmt(KvDType::kInt2));
    // The reader that loaded before the swap still holds an intact old block.
    EXPECT_EQ(dequant(*seen), dequant(*old));
    auto expect = requantize_block(*old, fmt(KvDType::kInt2), kLayers);
    ASSERT_TRUE(expect.ok());
    EXPECT_EQ(dequant(*now), dequant(**expect));
    EXPECT_EQ(comp.swapped(), 1);
}

TEST(KvCompressor, AResultForAFreedOrReusedSlotIsDropped) {
    KvCompressor comp(fmt(KvDType::kInt2), kLayers);
    KvBlockSlot freed, reused;
    const auto a = random_block(2), b = random_block(3), fresh = random_block(4);
    freed.store(a, std::memory_order_release);
    reused.store(b, std::memory_order_release);
    std::promise<void> reached, go;
    auto go_f = go.get_future().share();
    std::atomic<int> calls{0};
    comp.set_before_publish([&] {
        if (calls.fetch_add(1, std::memory_order_relaxed) == 0) {  // counter only
            reached.set_value();
            go_f.wait();
        }
    });
    comp.submit(&freed, a);
    comp.submit(&reused, b);
    reached.get_future().wait();
    freed.store(nullptr, std::memory_order_release);  // the block was freed meanwhile
    reused.store(fresh, std::memory_order_release);   // and this one reused
    go.set_value();
    comp.drain();
    EXPECT_EQ(freed.load(std::memory_order_acquire), nullptr);
    EXPECT_EQ(reused.load(std::memory_order_acquire), fresh);
    EXPECT_EQ(comp.discarded(), 2);
    EXPECT_EQ(comp.swapped(), 0);
}

// Many slots, the owner thread reading, freeing, reusing and resubmitting while the worker
// compresses: every read is exactly the old block's values or exactly the requantized ones.
TEST(KvCompressor, StressEveryReadIsWholeBeforeOrAfterTheSwap) {
    constexpr int kSlots = 32, kRounds = 400;
    KvCompressor comp(fmt(KvDType::kInt2), kLayers);
    std::vector<KvBlockSlot> slots(kSlots);
    struct Expect {
        std::shared_ptr<const KvSealedBlock> block;
        std::vector<float> before, after;
    };
    std::vector<Expect> ex(kSlots);
    auto fill = [&](int i, uint64_t seed) {
        ex[i].block = random_block(seed);
        ex[i].before = dequant(*ex[i].block);
        ex[i].after = dequant(**requantize_block(*ex[i].block, fmt(KvDType::kInt2), kLayers));
        slots[i].store(ex[i].block, std::memory_order_release);
        comp.submit(&slots[i], ex[i].block);
    };
    for (int i = 0; i < kSlots; ++i) fill(i, 100 + i);
    int64_t before = 0, after = 0;
    for (int round = 0; round < kRounds; ++round) {
        const int i = round % kSlots;
        const auto got = slots[i].load(std::memory_order_acquire);
        ASSERT_NE(got, nullptr);
        const auto values = dequant(*got);
        if (values == ex[i].before) {
            ++before;
        } else {
            ASSERT_EQ(values, ex[i].after) << "slot " << i << " round " << round;
            ++after;
        }
        if (round % 7 == 0) fill(i, 1000 + round);  // reuse: a stale result must not land
    }
    comp.drain();
    for (int i = 0; i < kSlots; ++i) {
        EXPECT_EQ(dequant(*slots[i].load(std::memory_order_acquire)), ex[i].after);
    }
    EXPECT_EQ(before + after, kRounds);
    RecordProperty("reads_before_swap", std::to_string(before));
    RecordProperty("reads_after_swap", std::to_string(after));
}

ModelConfig cfg() { return testing::kv_test_config(128); }

// Decode of 8 sequences for 100 steps with int8 blocks compressed to int2 once 16 tokens old,
// the worker running freely: logits stay finite and within int2 drift of a run that drains the
// compressor after every step (every swap before the next read).
TEST(KvCompressor, DecodeWithTheWorkerRunningStaysWithinCompressedDrift) {
    const ModelConfig c = cfg();
    auto w = ModelWeights::random(c, 5, 0.1);
    ASSERT_TRUE(w.ok());
    auto run = [&](bool drain_each_step, std::vector<float>& all, int64_t& swapped) {
        KvCacheOptions o;
        o.dtype = KvDType::kInt8;
        o.block_tokens = 8;
        o.value_group = 8;
        o.compress_after_tokens = 16;
        o.compress_dtype = KvDType::kInt2;
        auto cache = PagedKvCache::create(c, o);
        ASSERT_TRUE(cache.ok()) << cache.status().to_string();
        auto engine = InferenceEngine::create(c);
        ASSERT_TRUE(engine.ok());
        std::vector<PagedKvCache::SeqId> seqs;
        for (int s = 0; s < 8; ++s) seqs.push_back(cache->create());
        std::vector<float> logits(static_cast<size_t>(8 * c.vocab_size));
        std::vector<int32_t> tok(8);
        for (int step = 0; step < 100; ++step) {
            std::vector<ForwardItem> items;
            for (int s = 0; s < 8; ++s) {
                tok[s] = (step * 7 + s * 3) % 15;
                items.push_back({seqs[s], std::span(tok).subspan(s, 1)});
            }
            ASSERT_TRUE(engine->forward(w->data(), *cache, items, logits.data()).ok());
            for (float x : logits) ASSERT_TRUE(std::isfinite(x));
            all.insert(all.end(), logits.begin(), logits.end());
            if (drain_each_step) cache->drain_compressor();
        }
        cache->drain_compressor();
        const KvCacheStats st = cache->stats();
        EXPECT_GT(st.sealed_blocks[static_cast<int>(KvDType::kInt2)], 0);
        swapped = st.compressed;
    };
    std::vector<float> free_run, ordered;  // logits of both runs
    int64_t s1 = 0, s2 = 0;
    run(false, free_run, s1);
    run(true, ordered, s2);
    EXPECT_EQ(s1, s2);  // the same blocks were compressed in the end
    double worst = 0;
    for (size_t i = 0; i < ordered.size(); ++i) {
        worst = std::max(worst, static_cast<double>(std::fabs(free_run[i] - ordered[i])));
    }
    RecordProperty("max_logit_difference_free_vs_ordered", std::to_string(worst));
    std::printf("max |logit difference| free-running vs ordered worker: %.4g\n", worst);
    EXPECT_LE(worst, 1.0);
}

}  // namespace
}  // namespace tandem::model
