// Quantized KV pages of device generation, the host side, without a device: the formats and
// bytes per block a job's rollout.kv_cache gives the device cache, the fields its errors name,
// the compression schedule against the CPU cache's compressor and sealing (the same blocks at the
// same step) and inside the generation loop (never a block still written or copied from), the
// split-K choice, and the split decode's math emulated on the host (each split's
// partial over its range of int8 pages, merged by log-sum-exp) against the whole attention and
// a double reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "common/gpu/generate_loop.h"
#include "common/gpu/kv_pages.h"
#include "common/model/kv_cache.h"
#include "kernels/cuda/paged_kv.h"
#include "kernels/kv_sequence.h"
#include "kernels/merge.h"
#include "tests/fakes/fake_generation_backend.h"
#include "tests/unit/model/kv_test_util.h"

namespace tandem::gpu {
namespace {

using kernels::KvDType;
using model::testing::kv_test_config;

model::KvCacheOptions options_for(config::KvCacheDType dtype, int compress_after = 0,
                                  config::KvCacheDType compress = config::KvCacheDType::kInt2) {
    config::KvCacheSpec spec;
    spec.dtype = dtype;
    spec.group = 8;
    spec.compress_after_tokens = compress_after;
    spec.compress_dtype = compress;
    return model::KvCacheOptions::from_spec(spec, 16);
}

TEST(DeviceKvPlan, PerTokenDtypesArePagesOfTheCpuFormatWithTheirBytesPerBlock) {
    const model::ModelConfig c = kv_test_config(256);  // 2 layers, 2 kv heads of 16
    auto f32 = device_kv_plan(c, options_for(config::KvCacheDType::kF32), "job-1");
    ASSERT_TRUE(f32.ok()) << f32.status().message();
    EXPECT_FALSE(f32->paged());
    EXPECT_EQ(f32->block_tokens, 16);
    // bf16 rows: 2 layers x K and V x 16 rows x 32 values x 2 bytes.
    EXPECT_EQ(device_kv_block_bytes(f32->stored, c.num_layers), 2 * 2 * 16 * 32 * 2);
    int64_t previous = 0;
    for (const auto dt :
         {config::KvCacheDType::kInt4, config::KvCacheDType::kInt8, config::KvCacheDType::kBF16}) {
        auto plan = device_kv_plan(c, options_for(dt), "job-1");
        ASSERT_TRUE(plan.ok()) << plan.status().message();
        EXPECT_TRUE(plan->paged());
        EXPECT_FALSE(plan->compresses());
        EXPECT_EQ(plan->block_tokens, 8);  // the spec's group, as the CPU cache pages
        EXPECT_EQ(plan->stored.page_tokens, 8);
        EXPECT_FALSE(plan->stored.kivi());
        const int64_t page = kernels::kv_page_bytes(plan->stored);
        EXPECT_EQ(device_kv_page_stride(plan->stored) % 16, 0);
        EXPECT_GE(device_kv_page_stride(plan->stored), page);
        EXPECT_LT(device_kv_page_stride(plan->stored), page + 16);
        const int64_t bytes = device_kv_block_bytes(plan->stored, c.num_layers);
        EXPECT_EQ(bytes, c.num_layers * device_kv_page_stride(plan->stored));
        std::printf("device kv block bytes (8 tokens, 2 layers, 2x16): %s %lld (page %lld)\n",
                    std::string(config::enum_name(dt)).c_str(), static_cast<long long>(bytes),
                    static_cast<long long>(page));
        EXPECT_GT(bytes, previous);  // int4 < int8 < bf16
        previous = bytes;
    }
    // bf16 pages of 8 tokens: half the bytes of the 16-token bf16 rows.
    EXPECT_EQ(previous, device_kv_block_bytes(f32->stored, c.num_layers) / 2);
}

TEST(DeviceKvPlan, CompressionTargetsTheCpuCompressorsFormat) {
    const model::ModelConfig c = kv_test_config(256);
    auto plan = device_kv_plan(c, options_for(config::KvCacheDType::kInt8, 64), "job-1");
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    EXPECT_TRUE(plan->compresses());
    EXPECT_EQ(plan->compress_after_tokens, 64);
    EXPECT_EQ(plan->compressed.dtype, KvDType::kInt2);
    EXPECT_TRUE(plan->compressed.kivi());
    EXPECT_EQ(plan->compressed.page_tokens, plan->stored.page_tokens);
    EXPECT_LT(device_kv_block_bytes(plan->compressed, 2), device_kv_block_bytes(plan->stored, 2));
    auto int4 = device_kv_plan(
        c, options_for(config::KvCacheDType::kInt8, 64, config::KvCacheDType::kInt4), "job-1");
    ASSERT_TRUE(int4.ok());
    EXPECT_TRUE(int4->compressed.kivi());
    // f32 has no pages to compress: the CPU cache ignores compression there too.
    auto f32 = device_kv_plan(c, options_for(config::KvCacheDType::kF32, 64), "job-1");
    ASSERT_TRUE(f32.ok());
    EXPECT_FALSE(f32->compresses());
}

TEST(DeviceKvPlan, KiviDtypesAreABf16WindowSealedIntoTheirPagesAfterTheResidualTokens) {
    const model::ModelConfig c = kv_test_config(256);
    model::KvCacheOptions o = options_for(config::KvCacheDType::kInt2);
    o.residual_tokens = 24;
    auto plan = device_kv_plan(c, o, "job-1");
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    EXPECT_TRUE(plan->kivi_window);
    EXPECT_EQ(plan->stored.dtype, KvDType::kBF16);
    EXPECT_FALSE(plan->stored.kivi());
    EXPECT_TRUE(plan->compresses());
    EXPECT_EQ(plan->compress_after_tokens, 24);
    EXPECT_EQ(plan->compressed, model::kv_sequence_config(c, o).sealed);  // the CPU's sealed pages
    // Compression to the same format is the CPU's no-op; int8 to int8 too.
    auto same = device_kv_plan(
        c, options_for(config::KvCacheDType::kInt2, 8, config::KvCacheDType::kInt2), "job-1");
    ASSERT_TRUE(same.ok());
    EXPECT_EQ(same->compress_after_tokens, 128);  // the spec's default residual_tokens
    auto int8 = device_kv_plan(
        c, options_for(config::KvCacheDType::kInt8, 8, config::KvCacheDType::kInt8), "job-1");
    ASSERT_TRUE(int8.ok());
    EXPECT_FALSE(int8->compresses());
}

TEST(DeviceKvPlan, ErrorsNameTheJobAndTheField) {
    const model::ModelConfig c = kv_test_config(256);
    auto kivi = device_kv_plan(
        c, options_for(config::KvCacheDType::kInt2, 8, config::KvCacheDType::kInt4), "job-000007");
    ASSERT_FALSE(kivi.ok());
    EXPECT_NE(kivi.status().message().find("job-000007"), std::string::npos);
    EXPECT_NE(kivi.status().message().find("rollout.kv_cache.compress_dtype int4 with dtype int2"),
              std::string::npos)
        << kivi.status().message();
    auto wide = device_kv_plan(
        c, options_for(config::KvCacheDType::kInt8, 8, config::KvCacheDType::kF32), "job-2");
    ASSERT_FALSE(wide.ok());
    EXPECT_NE(wide.status().message().find("rollout.kv_cache.compress_dtype f32"),
              std::string::npos);

    config::KvCacheSpec spec;
    EXPECT_EQ(device_kv_unsupported(spec), "");
    spec.dtype = config::KvCacheDType::kInt8;
    spec.compress_after_tokens = 128;
    EXPECT_EQ(device_kv_unsupported(spec), "");
    spec.dtype = config::KvCacheDType::kInt4;
    EXPECT_EQ(device_kv_unsupported(spec), "");
    spec.kivi = true;  // int4 KIVI compressed to int2
    EXPECT_NE(device_kv_unsupported(spec).find("compress_dtype int2 with dtype int4 with kivi"),
              std::string::npos);
    spec.kivi = false;
    spec.dtype = config::KvCacheDType::kInt2;  // int2 compressed to int2: nothing to do
    EXPECT_EQ(device_kv_unsupported(spec), "");
    spec.compress_after_tokens = 0;
    spec.kivi = true;
    spec.dtype = config::KvCacheDType::kInt4;
    EXPECT_EQ(device_kv_unsupported(spec), "");
    spec.compress_after_tokens = 8;
    spec.dtype = config::KvCacheDType::kInt8;
    spec.kivi = false;
    spec.compress_dtype = config::KvCacheDType::kF32;
    EXPECT_NE(device_kv_unsupported(spec).find("compress_dtype f32"), std::string::npos);
}

// One sequence decoding one token a step: the blocks the device schedule of `plan` sends to its
// second pool at each step are the ones the CPU cache with the same options has `done` when it
// appends that token (compressed by its compressor, or sealed), by index in the sequence.
void expect_the_cpu_caches_steps(const model::KvCacheOptions& o,
                                 bool (*done)(const model::PagedKvCache&, int32_t block)) {
    const model::ModelConfig c = kv_test_config(256);
    auto plan = device_kv_plan(c, o, "job-1");
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    ASSERT_TRUE(plan->compresses());
    auto cpu = model::PagedKvCache::create(c, o);
    ASSERT_TRUE(cpu.ok()) << cpu.status().message();
    const auto seq = cpu->create();
    const int bt = plan->block_tokens;
    const StepLayout layout{1, 16};
    KvCompressionSchedule schedule(bt, plan->compress_after_tokens);
    schedule.resize(64, true);
    std::vector<int32_t> blocks;  // the device sequence: block i+1 at index i
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<int> device_done(16, 0), cpu_done(16, 0);
    for (int64_t w = 0; w < 120; ++w) {
        // CPU: append position w (it seals and compresses at length w), write its rows.
        std::vector<model::PagedKvCache::Slot> slots;
        ASSERT_TRUE(cpu->append(seq, 1, slots).ok());
        for (int l = 0; l < c.num_layers; ++l) {
            float* k = cpu->key(l, slots[0].block) + slots[0].slot * c.kv_dim();
            float* v = cpu->value(l, slots[0].block) + slots[0].slot * c.kv_dim();
            for (int i = 0; i < c.kv_dim(); ++i) k[i] = u(rng), v[i] = u(rng);
        }
        cpu->drain_compressor();
        const auto segs = cpu->segments(seq);
        for (size_t i = 0; i < segs.size(); ++i) cpu_done[i] = done(*cpu, segs[i].block) ? 1 : 0;
        // Device: the step writing position w (context w + 1).
        if (w % bt == 0) blocks.push_back(static_cast<int32_t>(blocks.size() + 1));
        std::vector<int32_t> step(static_cast<size_t>(layout.size()), 0);
        step[layout.context_lens()] = static_cast<int32_t>(w + 1);
        std::copy(blocks.begin(), blocks.end(), step.begin() + layout.table());
        const int32_t slot = blocks.back() * bt + static_cast<int32_t>(w % bt);
        schedule.written({&slot, 1});
        for (const int32_t b : schedule.due(layout, 1, step)) device_done[b - 1] = 1;
        ASSERT_EQ(device_done, cpu_done) << "after appending position " << w;
    }
    EXPECT_GT(schedule.compressions(), 0);
}

TEST(KvCompressionSchedule, CompressesTheBlocksTheCpuCacheCompressesAtTheSameStep) {
    const model::KvCacheOptions o = options_for(config::KvCacheDType::kInt8, 20);
    expect_the_cpu_caches_steps(o, [](const model::PagedKvCache& cpu, int32_t block) {
        return cpu.sealed(block) &&
               cpu.block_bytes(block) != cpu.sealed_block_bytes();  // swapped to int2
    });
}

TEST(KvCompressionSchedule, SealsKiviBlocksWhenTheCpuCacheSealsThem) {
    for (const int64_t residual : {0, 12, 24}) {
        SCOPED_TRACE(residual);
        model::KvCacheOptions o = options_for(config::KvCacheDType::kInt2);
        o.residual_tokens = residual;
        expect_the_cpu_caches_steps(
            o, [](const model::PagedKvCache& cpu, int32_t block) { return cpu.sealed(block); });
    }
}

TEST(KvCompressionSchedule, SharedBlocksOnceAndRewrittenBlocksAgain) {
    const int bt = 4;
    KvCompressionSchedule schedule(bt, 4);
    schedule.resize(16, true);
    EXPECT_TRUE(schedule.take_changed());
    const StepLayout layout{4, 8};
    std::vector<int32_t> step(static_cast<size_t>(layout.size()), 0);
    // Two rows sharing blocks 1, 2 (a prompt's), then their own 3 / 4; context 17 each.
    const int32_t tables[2][5] = {{1, 2, 3, 5, 7}, {1, 2, 4, 6, 8}};
    for (int r = 0; r < 2; ++r) {
        step[layout.context_lens() + r] = 17;
        std::copy(tables[r], tables[r] + 5, step.begin() + layout.table() + r * layout.width);
    }
    // 16 written, 4 behind: blocks ending at <= 12, table indices 0..2.
    EXPECT_EQ(schedule.due(layout, 2, step), (std::vector<int32_t>{1, 2, 3, 4}));
    EXPECT_TRUE(schedule.take_changed());
    EXPECT_TRUE(schedule.due(layout, 2, step).empty());
    EXPECT_FALSE(schedule.take_changed());
    EXPECT_EQ(schedule.flags()[3], 1);
    // Block 3 handed out anew: written at its first row, uncompressed until due again.
    const int32_t slot = 3 * bt;
    schedule.written({&slot, 1});
    EXPECT_EQ(schedule.flags()[3], 0);
    EXPECT_TRUE(schedule.take_changed());
    const int32_t pairs[2] = {2, 4};  // a copy into block 4
    schedule.copied(pairs);
    EXPECT_EQ(schedule.flags()[4], 0);
    EXPECT_EQ(schedule.due(layout, 2, step), (std::vector<int32_t>{3, 4}));
    EXPECT_EQ(schedule.compressions(), 6);
    // A pool that grows empty: all uncompressed; one that grows keeping its blocks: kept.
    schedule.resize(20, false);
    EXPECT_EQ(schedule.flags()[1], 1);
    schedule.resize(32, true);
    EXPECT_EQ(schedule.flags()[1], 0);
    // Off: nothing is ever due.
    KvCompressionSchedule off(bt, -1);
    off.resize(16, true);
    EXPECT_TRUE(off.due(layout, 2, step).empty());
}

// The host backend of the generation loop with the device pool's bookkeeping around it, fed as
// gpu::DeviceKvPool feeds its schedule (written slots at prefill and decode, copied pairs,
// before_decode at each step). It checks what the device relies on: a block goes to the second
// pool only when every row of it is written; no row is ever written into, and no block copied
// from, a block whose pages are in the second pool (the device would leave them stale there).
class ScheduleProbe final : public GenerationBackend {
public:
    ScheduleProbe(int bt, int64_t after) : fake_(bt, 50), bt_(bt), schedule_(bt, after) {}
    const std::vector<std::string>& errors() const { return errors_; }
    const testing::FakeGenerationBackend& fake() const { return fake_; }
    const KvCompressionSchedule& schedule() const { return schedule_; }

    Result<StepLayout> reserve(int64_t blocks, int64_t max_rows, int width) override {
        const bool grow = blocks > std::ssize(filled_);
        if (grow) filled_.assign(static_cast<size_t>(blocks), 0);
        schedule_.resize(blocks, grow);  // a grown pool starts empty
        TANDEM_ASSIGN_OR_RETURN(layout_, fake_.reserve(blocks, max_rows, width));
        return layout_;
    }
    Status prefill(const PrefillBatch& batch, std::vector<int32_t>& tokens,
                   std::vector<float>& logprobs) override {
        write(batch.slots, "prefill");
        return fake_.prefill(batch, tokens, logprobs);
    }
    Status copy_blocks(std::span<const int32_t> pairs) override {
        for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
            if (flag(pairs[i])) errors_.push_back(fmt::format("copy from block {}", pairs[i]));
            filled_[static_cast<size_t>(pairs[i + 1])] = filled_[static_cast<size_t>(pairs[i])];
        }
        schedule_.copied(pairs);
        return fake_.copy_blocks(pairs);
    }
    Status decode(int64_t rows, std::span<const int32_t> step, int64_t live,
                  std::vector<int32_t>& tokens, std::vector<float>& logprobs) override {
        write(step.subspan(static_cast<size_t>(layout_.slots()), static_cast<size_t>(live)),
              "decode");
        for (const int32_t b : schedule_.due(layout_, live, step)) {
            if (filled_[static_cast<size_t>(b)] != bt_) {
                errors_.push_back(fmt::format("block {} compressed with {} of {} rows written", b,
                                              filled_[static_cast<size_t>(b)], bt_));
            }
        }
        return fake_.decode(rows, step, live, tokens, logprobs);
    }

private:
    bool flag(int32_t block) const { return schedule_.flags()[static_cast<size_t>(block)] != 0; }
    // The slots of one prefill or step, in order (a block's first row comes before its others).
    void write(std::span<const int32_t> slots, const char* where) {
        for (const int32_t slot : slots) {
            if (slot < 0) continue;
            const int32_t b = slot / bt_, off = slot % bt_;
            schedule_.written({&slot, 1});  // a first row: the block holds new rows
            if (b > 0 && flag(b)) {
                errors_.push_back(fmt::format(
                    "{} writes row {} of block {}, which is in the second pool", where, off, b));
            }
            if (off == 0) filled_[static_cast<size_t>(b)] = 0;
            filled_[static_cast<size_t>(b)] = std::max(filled_[static_cast<size_t>(b)], off + 1);
        }
    }

    testing::FakeGenerationBackend fake_;
    int bt_;
    KvCompressionSchedule schedule_;
    std::vector<int32_t> filled_;  // rows written per block since its first row
    std::vector<std::string> errors_;
    StepLayout layout_;
};

// Generation calls with the system-prompt cache (its pages live across calls), forks, stops and
// bucket changes: the second pool's schedule never races a write or a copy. after 3: compression
// (3 rows behind); after 0: KIVI sealing with no window (every full block).
TEST(KvCompressionSchedule, NeverTakesABlockARowStillWritesOrAForkCopies) {
    for (const int64_t after : {0, 3, 9}) {
        SCOPED_TRACE(after);
        const int bt = 4;
        ScheduleProbe probe(bt, after);
        GenerationLoopOptions opt;
        opt.block_tokens = bt;
        opt.prefix_tokens = 6;  // one full block and a partial one, forked by the prompts
        opt.stop_ids = {7, 9, 11, 13, 17};
        GenerationLoop loop(opt);
        loop.set_weights_version(1);
        std::vector<std::vector<int32_t>> prompts;
        for (const int len : {9, 14, 6, 23, 3}) {
            prompts.emplace_back();
            for (int i = 0; i < len; ++i) prompts.back().push_back((i < 6 ? i : 5 * i + len) % 50);
        }
        model::ModelConfig c;
        c.vocab_size = 50;
        c.max_seq_len = 128;
        model::SamplingOptions o;
        o.max_new_tokens = 30;
        for (int call = 0; call < 2; ++call) {
            o.seed = 11 + call;
            auto out = loop.run(probe, c, prompts, 3, o);
            ASSERT_TRUE(out.ok()) << out.status().message();
        }
        for (const auto& e : probe.fake().errors()) ADD_FAILURE() << e;
        for (const auto& e : probe.errors()) ADD_FAILURE() << e;
        EXPECT_GT(probe.schedule().compressions(), 0);
    }
}

TEST(DecodeSplits, FillTheSmsOnlyWhenRowsDoNotAndLongContextsAllowIt) {
    // One row of 14 heads on 132 SMs over 32k positions: splits for about two blocks per SM.
    EXPECT_EQ(decode_splits(1, 14, 32768, 132, 0), 19);
    // Enough rows: one split.
    EXPECT_EQ(decode_splits(64, 14, 32768, 132, 0), 1);
    EXPECT_EQ(decode_splits(10, 14, 32768, 132, 0), 1);
    // Short tables: at least kMinSplitTokens a split.
    EXPECT_EQ(decode_splits(1, 14, 512, 132, 0), 2);
    EXPECT_EQ(decode_splits(1, 14, 255, 132, 0), 1);
    // At most kMaxDecodeSplits; forced wins (capped); no SM count known: one.
    EXPECT_EQ(decode_splits(1, 1, 1 << 20, 132, 0), kMaxDecodeSplits);
    EXPECT_EQ(decode_splits(64, 14, 64, 132, 5), 5);
    EXPECT_EQ(decode_splits(1, 1, 64, 132, 1000), kMaxDecodeSplits);
    EXPECT_EQ(decode_splits(1, 14, 32768, 0, 0), 1);
    // A pure function: the same arguments, the same count.
    EXPECT_EQ(decode_splits(3, 7, 9000, 78, 0), decode_splits(3, 7, 9000, 78, 0));
}

TEST(DecodeSplits, RangesCoverTheContextInOrderOnce) {
    for (const int64_t len : {1, 2, 7, 64, 1000}) {
        for (const int splits : {1, 2, 3, 7, 64}) {
            int64_t next = 0;
            for (int s = 0; s < splits; ++s) {
                int64_t b, e;
                kernels::cuda::decode_split_range(len, splits, s, &b, &e);
                EXPECT_LE(b, e);
                if (b < e) {
                    EXPECT_EQ(b, next) << len << " " << splits << " " << s;
                    next = e;
                }
            }
            EXPECT_EQ(next, len) << len << " " << splits;
        }
    }
}

// The split decode of the device (kernels/cuda/paged_kv.h) on the host: split s attends to the
// positions decode_split_range gives it, over int8 pages as the device cache holds them; the
// partials merged by log-sum-exp equal the whole attention (up to float rounding: 1e-5) and
// the double reference over the same dequantized keys (1e-5).
TEST(DecodeSplits, MergedSplitPartialsEqualTheWholeAttention) {
    const int hq = 4, hkv = 2, d = 16, bt = 8;
    kernels::KvSequenceConfig sc;
    sc.sealed = kernels::KvPageFormat{KvDType::kInt8, kernels::KvScheme::kPerToken, hkv, d, bt, 0};
    auto seq = kernels::KvPagedSequence::create(sc);
    ASSERT_TRUE(seq.ok());
    const int64_t len = 53;
    std::mt19937 rng(11);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> k(static_cast<size_t>(len * hkv * d)), v(k.size()), q(hq * d);
    for (auto& x : k) x = g(rng);
    for (auto& x : v) x = g(rng);
    for (auto& x : q) x = g(rng);
    ASSERT_TRUE(seq->append(0, len, k.data(), v.data()).ok());
    const auto pages = seq->pages();
    kernels::AttentionParams p;
    p.tq = 1;
    p.hq = hq;
    p.hkv = hkv;
    p.d = d;
    p.scale = kernels::default_softmax_scale(d);
    p.causal = true;
    p.q_pos0 = len - 1;
    std::vector<float> whole(hq * d), whole_lse(hq);
    ASSERT_TRUE(
        kernels::kv_paged_attention_cpu(p, pages, q.data(), whole.data(), whole_lse.data()).ok());
    // Double reference over the dequantized pages.
    std::vector<float> kd(k.size()), vd(v.size());
    for (const auto& ref : pages) {
        ASSERT_TRUE(kernels::kv_dequantize_page(*ref.format, ref.page, ref.row0, ref.rows,
                                                kd.data() + ref.pos0 * hkv * d,
                                                vd.data() + ref.pos0 * hkv * d)
                        .ok());
    }
    double worst_ref = 0.0;
    for (int h = 0; h < hq; ++h) {
        const int kvh = h / (hq / hkv);
        std::vector<double> s(static_cast<size_t>(len));
        double mx = -INFINITY, den = 0.0;
        for (int64_t t = 0; t < len; ++t) {
            double dot = 0.0;
            for (int c = 0; c < d; ++c) dot += double{q[h * d + c]} * kd[(t * hkv + kvh) * d + c];
            s[t] = dot * p.scale;
            mx = std::max(mx, s[t]);
        }
        for (int64_t t = 0; t < len; ++t) den += std::exp(s[t] - mx);
        for (int c = 0; c < d; ++c) {
            double num = 0.0;
            for (int64_t t = 0; t < len; ++t) {
                num += std::exp(s[t] - mx) * vd[(t * hkv + kvh) * d + c];
            }
            worst_ref = std::max(worst_ref, std::fabs(num / den - whole[h * d + c]));
        }
    }
    EXPECT_LT(worst_ref, 1e-5);
    for (const int splits : {1, 2, 3, 7, 60}) {
        std::vector<std::vector<float>> o(splits, std::vector<float>(hq * d)),
            lse(splits, std::vector<float>(hq));
        std::vector<kernels::AttentionPartial> parts;
        for (int s = 0; s < splits; ++s) {
            int64_t b, e;
            kernels::cuda::decode_split_range(len, splits, s, &b, &e);
            std::vector<kernels::KvPageRef> range;  // the rows of [b, e) page by page
            for (const auto& ref : pages) {
                const int64_t lo = std::max(b, ref.pos0), hi = std::min(e, ref.pos0 + ref.rows);
                if (lo >= hi) continue;
                kernels::KvPageRef r = ref;
                r.row0 = static_cast<int32_t>(ref.row0 + (lo - ref.pos0));
                r.rows = static_cast<int32_t>(hi - lo);
                r.pos0 = lo;
                range.push_back(r);
            }
            if (range.empty()) {
                std::fill(o[s].begin(), o[s].end(), 0.0f);
                std::fill(lse[s].begin(), lse[s].end(), -INFINITY);
            } else {
                ASSERT_TRUE(
                    kernels::kv_paged_attention_cpu(p, range, q.data(), o[s].data(), lse[s].data())
                        .ok());
            }
            parts.push_back({o[s].data(), lse[s].data()});
        }
        std::vector<float> merged(hq * d), merged_lse(hq);
        ASSERT_TRUE(
            kernels::merge_attention(parts, 1, hq, d, merged.data(), merged_lse.data()).ok());
        double worst = 0.0;
        for (int i = 0; i < hq * d; ++i) {
            ASSERT_FALSE(std::isnan(merged[i]));
            worst = std::max(worst, double{std::fabs(merged[i] - whole[i])});
        }
        for (int h = 0; h < hq; ++h) EXPECT_NEAR(merged_lse[h], whole_lse[h], 1e-5);
        std::printf("split decode (host emulation) splits %d: max |merged - whole| %.3g\n", splits,
                    worst);
        EXPECT_LT(worst, 1e-5);
    }
}

}  // namespace
}  // namespace tandem::gpu
