// Generation on the device (common/gpu/device_generate.h and its kernels), against references on
// the host. Skips with a reason without a device. Observed errors are printed so the first device
// run can tighten the tolerances (first estimates):
//   paged_decode_attention vs attention in double on the same bf16 q/k/v: |err| <= 2e-4 + 1e-3
//   |ref| paged_kv_write / paged_copy_blocks: bit exact sample_tokens vs sampling_reference.h:
//   greedy tokens exact; sampled tokens equal in >= 99% of
//     rows (the float sums differ in the last bits, which moves a pick only when u lands on a
//     boundary); log-probs |err| <= 1e-4 (the device's expf against the host's); every token in
//     the kept set; bitwise reproducible; frequencies on a fixed row vs the truncated softmax:
//     chi-square below its 0.1% critical value
//   greedy generation vs the CPU engine (model::GroupGenerator, same bf16-rounded weights) on the
//     four test architectures: the same tokens, or a first divergence at a near tie (the CPU's
//     logit gap between its token and the device's <= 0.16 x rms of the row: twice the device
//     model's max logit error in tandem_gpu_model); behaviour log-probs on the common prefix
//     |err| <= 3e-2 + 1e-2 |ref|
//   CUDA graphs on and off: the same tokens and log-probs, bit for bit
//   the system-prompt cache (prefix_tokens) and a KV budget (admission waves), each alone and
//   both, against the same generator without them: the same greedy tokens, or a first
//   divergence at a near tie as above (the cached prefix is computed alone and the prompts'
//   rows attend over its pages with the decode kernel, waves change the GEMM batch); log-probs
//   on the common prefix |err| <= 2e-2 + 1e-2 |ref|; after a new weights version the cached
//   generator's tokens against a fresh one on the new weights, the same way
//   quantized KV pages (rollout.kv_cache int8 and int4 per token, with background compression
//   to int2 KIVI; int2 KIVI sealed from a bf16 window of 8 tokens) against the CPU engine with
//   the same rollout.kv_cache: the same greedy tokens or a first divergence at a near tie
//   (gap <= 0.3 x rms: both quantize the same page format, from keys that differ by the bf16
//   path, so a code can differ by one step); log-probs |err| <= 1e-1 + 1e-2 |ref|; forced 3-way
//   split-K against the automatic choice: the same greedy tokens, log-probs |err| <= 1e-3 +
//   1e-2 |ref|; the pool's bytes per block below the bf16 rows' and compressions counted
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "common/gpu/device_generate.h"
#include "common/gpu/paged_plan.h"
#include "common/gpu/sampling_reference.h"
#include "common/model/generate.h"
#include "common/model/kv_admission.h"
#include "common/model/transformer.h"
#include "kernels/cuda/paged_kv.h"
#include "kernels/cuda/sampling.h"
#include "kernels/device.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/gpu/model_test_util.h"

namespace tandem::gpu {
namespace {

using kernels::cuda::Bf16;
using kernels::cuda::testing::CudaFixture;
namespace ops = kernels::cuda;

class PagedKvTest : public CudaFixture {};

struct DecodeCase {
    int hq, hkv, d, block_tokens;
    std::vector<int> lens;
};

TEST_F(PagedKvTest, DecodeAttentionOverShuffledPagesMatchesDouble) {
    std::mt19937_64 rng(1234);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (const DecodeCase& dc : std::vector<DecodeCase>{{8, 2, 64, 16, {1, 17, 33, 100, 257}},
                                                        {4, 1, 128, 8, {5, 64}},
                                                        {14, 2, 64, 16, {300}},
                                                        {6, 6, 80, 4, {9, 10}}}) {
        SCOPED_TRACE(::testing::Message() << "hq " << dc.hq << " hkv " << dc.hkv << " d " << dc.d);
        const int n = static_cast<int>(dc.lens.size()), bt = dc.block_tokens;
        int width = 0, total_blocks = 1;
        for (int len : dc.lens) {
            width = std::max(width, (len + bt - 1) / bt);
            total_blocks += (len + bt - 1) / bt;
        }
        // Blocks handed out in a shuffled order, so a wrong table lookup shows.
        std::vector<int32_t> ids(static_cast<size_t>(total_blocks - 1));
        std::iota(ids.begin(), ids.end(), 1);
        std::shuffle(ids.begin(), ids.end(), rng);
        ops::PagedKvShape shape{total_blocks, bt, dc.hkv, dc.d};
        std::vector<int32_t> table(static_cast<size_t>(n * width), 0), slots;
        std::vector<float> k, v;
        size_t next = 0;
        for (int r = 0; r < n; ++r) {
            for (int i = 0; i < dc.lens[r]; ++i) {
                if (i % bt == 0) table[r * width + i / bt] = ids[next++];
                slots.push_back(table[r * width + i / bt] * bt + i % bt);
            }
        }
        const int64_t rows = std::ssize(slots), kvd = int64_t{dc.hkv} * dc.d;
        k.resize(static_cast<size_t>(rows * kvd));
        v.resize(k.size());
        for (auto& x : k) x = dist(rng);
        for (auto& x : v) x = dist(rng);
        std::vector<float> q(static_cast<size_t>(n) * dc.hq * dc.d);
        for (auto& x : q) x = dist(rng);
        Bf16* dk = upload_bf16(k);
        Bf16* dv = upload_bf16(v);
        Bf16* dq = upload_bf16(q);
        Bf16* pool = device<Bf16>(static_cast<size_t>(shape.layer_elems()));
        ASSERT_TRUE(ops::fill_zero(s(), pool, shape.layer_elems() * 2).ok());
        Bf16* kp = pool;
        Bf16* vp = pool + shape.block_elems() * shape.num_blocks;
        ASSERT_TRUE(ops::paged_kv_write(s(), shape, rows, upload(slots), dk, dv, kp, vp).ok());
        // The pool holds each row at its slot, bit for bit.
        const std::vector<float> kpool = download_bf16(kp, shape.block_elems() * total_blocks);
        for (int64_t i = 0; i < rows; ++i) {
            for (int64_t c = 0; c < kvd; ++c) {
                ASSERT_EQ(kpool[slots[i] * kvd + c], k[i * kvd + c]) << "row " << i;
            }
        }
        std::vector<int32_t> lens(dc.lens.begin(), dc.lens.end());
        ops::PagedDecode pd;
        pd.shape = shape;
        pd.n = n;
        pd.hq = dc.hq;
        pd.scale = 1.0f / std::sqrt(static_cast<float>(dc.d));
        pd.block_table = upload(table);
        pd.table_width = width;
        pd.context_lens = upload(lens);
        pd.k_pool = kp;
        pd.v_pool = vp;
        float* o = device<float>(q.size());
        ASSERT_TRUE(ops::paged_decode_attention(s(), pd, dq, o).ok());
        const std::vector<float> got = download(o, q.size());
        double worst = 0;
        int64_t row0 = 0;
        for (int r = 0; r < n; ++r) {
            for (int h = 0; h < dc.hq; ++h) {
                const int kvh = h / (dc.hq / dc.hkv);
                std::vector<double> sc(static_cast<size_t>(dc.lens[r]));
                double mx = -INFINITY;
                for (int j = 0; j < dc.lens[r]; ++j) {
                    double dot = 0;
                    for (int c = 0; c < dc.d; ++c) {
                        dot += double{q[(r * dc.hq + h) * dc.d + c]} *
                               k[(row0 + j) * kvd + kvh * dc.d + c];
                    }
                    sc[j] = dot * pd.scale;
                    mx = std::max(mx, sc[j]);
                }
                double den = 0;
                for (auto& x : sc) den += x = std::exp(x - mx);
                for (int c = 0; c < dc.d; ++c) {
                    double ref = 0;
                    for (int j = 0; j < dc.lens[r]; ++j) {
                        ref += sc[j] * v[(row0 + j) * kvd + kvh * dc.d + c];
                    }
                    ref /= den;
                    const float g = got[(r * dc.hq + h) * dc.d + c];
                    ASSERT_TRUE(std::isfinite(g));
                    const double e = std::abs(g - ref);
                    worst = std::max(worst, e);
                    EXPECT_LE(e, 2e-4 + 1e-3 * std::abs(ref))
                        << "row " << r << " head " << h << " channel " << c;
                }
            }
            row0 += dc.lens[r];
        }
        std::printf("paged decode: max |err| %.3g\n", worst);
    }
}

TEST_F(PagedKvTest, CopyBlocksCopiesEveryLayersKeysAndValues) {
    const ops::PagedKvShape shape{6, 16, 2, 64};
    const int layers = 3;
    std::vector<float> init(static_cast<size_t>(shape.layer_elems() * layers));
    std::mt19937_64 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (auto& x : init) x = dist(rng);
    Bf16* pool = upload_bf16(init);
    const std::vector<int32_t> pairs{2, 5, 1, 3};
    ASSERT_TRUE(ops::paged_copy_blocks(s(), shape, layers, 2, upload(pairs), pool).ok());
    const std::vector<float> got = download_bf16(pool, init.size());
    const int64_t be = shape.block_elems();
    for (int part = 0; part < 2 * layers; ++part) {
        const int64_t base = part * be * shape.num_blocks;
        for (int64_t b = 0; b < shape.num_blocks; ++b) {
            const int64_t src = b == 5 ? 2 : b == 3 ? 1 : b;
            for (int64_t i = 0; i < be; ++i) {
                ASSERT_EQ(got[base + b * be + i], init[base + src * be + i])
                    << "part " << part << " block " << b;
            }
        }
    }
}

class SamplingTest : public CudaFixture {
protected:
    // Samples each row of `x` [rows, vocab] on the device: step = row, one stream.
    void run(const std::vector<float>& x, int64_t rows, int64_t vocab,
             const model::SamplingOptions& o, const std::vector<int32_t>* logit_row,
             std::vector<int32_t>& tok, std::vector<float>& lp) {
        std::vector<uint64_t> streams(static_cast<size_t>(rows), sample_stream(o.seed, 1, 2));
        std::vector<int32_t> steps(static_cast<size_t>(rows));
        std::iota(steps.begin(), steps.end(), 0);
        ops::SampleRows r;
        r.n = rows;
        r.vocab = vocab;
        r.logits = upload(x);
        r.logit_row = logit_row ? upload(*logit_row) : nullptr;
        r.stream = upload(streams);
        r.step = upload(steps);
        r.token = device<int32_t>(rows);
        r.logp = device<float>(rows);
        ops::DeviceSampling ds;
        ds.temperature = static_cast<float>(o.temperature);
        ds.top_p = static_cast<float>(o.top_p);
        ds.top_k = o.top_k;
        ds.seed = o.seed;
        ASSERT_TRUE(ops::sample_tokens(s(), ds, r).ok());
        tok = download(r.token, rows);
        lp = download(r.logp, rows);
    }
};

TEST_F(SamplingTest, MatchesTheReferenceStaysInTheKeptSetAndReproduces) {
    std::mt19937_64 rng(99);
    std::normal_distribution<float> dist(0.0f, 3.0f);
    struct Opt {
        double t, p;
        int k;
    };
    for (const int64_t V : {1000, 151936}) {
        for (const Opt& op : std::vector<Opt>{
                 {0.0, 1.0, 0}, {1.0, 1.0, 0}, {0.7, 0.9, 0}, {1.0, 1.0, 50}, {0.6, 0.8, 20}}) {
            SCOPED_TRACE(::testing::Message() << "vocab " << V << " temperature " << op.t
                                              << " top_p " << op.p << " top_k " << op.k);
            model::SamplingOptions o;
            o.temperature = op.t;
            o.top_p = op.p;
            o.top_k = op.k;
            o.seed = 31;
            const int64_t rows = V > 10000 ? 16 : 200;
            std::vector<float> x(static_cast<size_t>(rows * V));
            for (auto& e : x) e = dist(rng);
            std::vector<int32_t> tok, tok2;
            std::vector<float> lp, lp2;
            run(x, rows, V, o, nullptr, tok, lp);
            run(x, rows, V, o, nullptr, tok2, lp2);
            EXPECT_EQ(tok, tok2) << "not reproducible";
            EXPECT_EQ(0, std::memcmp(lp.data(), lp2.data(), lp.size() * 4)) << "not reproducible";
            int same = 0;
            double worst_lp = 0;
            for (int64_t r = 0; r < rows; ++r) {
                const float* row = x.data() + r * V;
                const auto kept = kept_tokens(row, static_cast<int>(V), o);
                ASSERT_TRUE(std::binary_search(kept.begin(), kept.end(), tok[r]))
                    << "row " << r << " token " << tok[r] << " outside the kept set";
                const auto ref =
                    sample_reference(row, static_cast<int>(V), o, sample_stream(o.seed, 1, 2),
                                     static_cast<int32_t>(r));
                same += ref.token == tok[r];
                if (op.t == 0.0) {
                    EXPECT_EQ(ref.token, tok[r]) << "greedy row " << r;
                }
                // The log-prob of the device's token on the host.
                const auto at = [&](int32_t t) {
                    const double it = 1.0 / o.logprob_temperature();
                    double m = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < V; ++j) m = std::max(m, row[j] * it);
                    for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] * it - m);
                    return row[t] * it - m - std::log(sum);
                };
                const double e = std::abs(lp[r] - at(tok[r]));
                worst_lp = std::max(worst_lp, e);
                EXPECT_LE(e, 1e-4) << "row " << r;
            }
            std::printf(
                "vocab %ld T %.1f p %.2f k %d: %d of %ld tokens equal the reference, "
                "log-prob max |err| %.3g\n",
                static_cast<long>(V), op.t, op.p, op.k, same, static_cast<long>(rows), worst_lp);
            EXPECT_GE(same, static_cast<int>(0.99 * rows));
        }
    }
}

TEST_F(SamplingTest, FrequenciesOnAFixedRowFollowTheTruncatedSoftmax) {
    const int V = 12, draws = 40000;
    std::vector<float> x(V);
    for (int j = 0; j < V; ++j) x[j] = 0.35f * static_cast<float>((j * 7) % V);
    model::SamplingOptions o;
    o.temperature = 1.3;
    o.top_k = 8;
    o.top_p = 0.9;
    o.seed = 21;
    const std::vector<int32_t> rows(draws, 0);  // every draw reads row 0
    std::vector<int32_t> tok;
    std::vector<float> lp;
    run(x, draws, V, o, &rows, tok, lp);
    std::vector<int64_t> count(V, 0);
    for (const int32_t t : tok) {
        ASSERT_TRUE(t >= 0 && t < V) << "token " << t;
        ++count[t];
    }
    const ChiSquare chi = chi_square_against_kept(x.data(), V, o, count);
    std::printf("device sampling chi-square %.2f, %d degrees of freedom (0.1%% critical %.2f)\n",
                chi.value, chi.dof, chi.critical);
    EXPECT_EQ(chi.outside, 0) << "draws outside the kept set";
    EXPECT_LT(chi.value, chi.critical);
}

// The generator owns its device; this fixture only checks there is one.
class DeviceGenerateTest : public ::testing::Test {
protected:
    void SetUp() override {
        std::string why;
        if (kernels::cuda_devices(&why).empty()) GTEST_SKIP() << why;
    }
};

std::vector<std::vector<int32_t>> test_prompts(int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    return {testing::random_tokens(5, vocab, rng), testing::random_tokens(16, vocab, rng),
            testing::random_tokens(23, vocab, rng)};
}

TEST_F(DeviceGenerateTest, GreedyTokensMatchTheCpuEngineForEachArchitecture) {
    int salt = 0;
    for (const testing::Case& cs : testing::cases()) {
        SCOPED_TRACE(cs.name);
        const model::ModelConfig& c = cs.config;
        DeviceGenerateOptions dopt;
        dopt.eos_token = -1;  // no stop: every sample runs max_new_tokens
        auto gen = DeviceGenerator::create(c, dopt);
        ASSERT_TRUE(gen.ok()) << gen.status().to_string();
        auto idx = model::ParamIndex::create(c, model::make_param_layout(c).value());
        ASSERT_TRUE(idx.ok());
        const std::vector<float> params = testing::random_params(idx.value(), c, 500 + ++salt);
        ASSERT_TRUE((*gen)->load(params.data()).ok());
        const auto prompts = test_prompts(c.vocab_size, 77 + salt);
        model::SamplingOptions o;
        o.temperature = 0.0;
        o.max_new_tokens = 32;
        DeviceGenerateStats st;
        auto got = (*gen)->generate(prompts, 2, o, &st);
        ASSERT_TRUE(got.ok()) << got.status().to_string();
        model::GeneratorOptions copt;
        copt.eos_token = -1;
        auto cpu = model::GroupGenerator::create(c, copt);
        ASSERT_TRUE(cpu.ok());
        auto want = cpu->generate(params.data(), prompts, 2, o);
        ASSERT_TRUE(want.ok()) << want.status().to_string();
        ASSERT_EQ(got->size(), want->size());
        const double worst_lp =
            testing::expect_same_greedy(cs.name, c, params, prompts, *got, *want, 3e-2)
                .worst_logprob_error;
        std::printf(
            "%s: greedy log-prob max |err| %.3g, %ld decode steps, %ld graph launches, "
            "peak %ld blocks, device peak %.1f MiB %s\n",
            cs.name, worst_lp, static_cast<long>(st.decode_steps),
            static_cast<long>(st.graph_launches), static_cast<long>(st.peak_blocks),
            st.device_peak_bytes / 1048576.0, st.graph_note.c_str());
    }
}

TEST_F(DeviceGenerateTest, CudaGraphsChangeNothingAndStopTokensEndSamples) {
    const testing::Case cs = testing::cases()[2];  // qwen2
    const model::ModelConfig& c = cs.config;
    auto idx = model::ParamIndex::create(c, model::make_param_layout(c).value());
    ASSERT_TRUE(idx.ok());
    const std::vector<float> params = testing::random_params(idx.value(), c, 808);
    const auto prompts = test_prompts(c.vocab_size, 5);
    model::SamplingOptions o;
    o.temperature = 1.0;
    o.top_p = 0.95;
    o.top_k = 40;
    o.max_new_tokens = 30;
    o.seed = 12;
    std::vector<model::Completion> out[2];
    for (int graphs = 0; graphs < 2; ++graphs) {
        DeviceGenerateOptions dopt;
        dopt.cuda_graphs = graphs == 1;
        dopt.eos_token = 7;
        dopt.stop_tokens = {11, 13};
        auto gen = DeviceGenerator::create(c, dopt);
        ASSERT_TRUE(gen.ok()) << gen.status().to_string();
        ASSERT_TRUE((*gen)->load(params.data()).ok());
        DeviceGenerateStats st;
        auto r = (*gen)->generate(prompts, 4, o, &st);
        ASSERT_TRUE(r.ok()) << r.status().to_string();
        out[graphs] = std::move(r).value();
        std::printf("graphs %d: %ld steps, %ld graph launches, %ld captures %s\n", graphs,
                    static_cast<long>(st.decode_steps), static_cast<long>(st.graph_launches),
                    static_cast<long>(st.graph_captures), st.graph_note.c_str());
        if (graphs == 1) {
            EXPECT_GT(st.graph_launches, 0) << st.graph_note;
        }
    }
    ASSERT_EQ(out[0].size(), out[1].size());
    for (size_t i = 0; i < out[0].size(); ++i) {
        EXPECT_EQ(out[0][i].tokens, out[1][i].tokens) << "sample " << i;
        EXPECT_EQ(0, std::memcmp(out[0][i].logprobs.data(), out[1][i].logprobs.data(),
                                 out[0][i].logprobs.size() * 4))
            << "sample " << i;
        const auto& t = out[1][i].tokens;
        const bool stopped = t.back() == 7 || t.back() == 11 || t.back() == 13;
        EXPECT_EQ(out[1][i].finished, stopped);
        if (!stopped) {
            EXPECT_EQ(std::ssize(t), o.max_new_tokens);
        }
        for (size_t j = 0; j + 1 < t.size(); ++j) {
            EXPECT_TRUE(t[j] != 7 && t[j] != 11 && t[j] != 13)
                << "sample " << i << " went on past a stop";
        }
    }
}

TEST_F(DeviceGenerateTest, SystemPromptCacheAndKvBudgetKeepTheGreedyCompletions) {
    for (const size_t which : {size_t{0}, size_t{3}}) {  // llama3, qwen3
        const testing::Case cs = testing::cases()[which];
        SCOPED_TRACE(cs.name);
        const model::ModelConfig& c = cs.config;
        auto idx = model::ParamIndex::create(c, model::make_param_layout(c).value());
        ASSERT_TRUE(idx.ok());
        const std::vector<float> params = testing::random_params(idx.value(), c, 900 + which);
        // A 21-token system prompt (one full block of 16 and a partial one) in three prompts,
        // one prompt without it.
        std::mt19937_64 rng(31 + which);
        const std::vector<int32_t> system = testing::random_tokens(21, c.vocab_size, rng);
        std::vector<std::vector<int32_t>> prompts;
        for (const int tail : {3, 11, 19}) {
            prompts.push_back(system);
            const auto t = testing::random_tokens(tail, c.vocab_size, rng);
            prompts.back().insert(prompts.back().end(), t.begin(), t.end());
        }
        prompts.push_back(testing::random_tokens(9, c.vocab_size, rng));
        model::SamplingOptions o;
        o.temperature = 0.0;
        o.max_new_tokens = 20;
        const int group = 2;
        const auto run = [&](int64_t prefix_tokens, bool budget, int calls,
                             DeviceGenerateStats* st) -> std::vector<model::Completion> {
            DeviceGenerateOptions dopt;
            dopt.eos_token = -1;
            dopt.prefix_tokens = prefix_tokens;
            auto probe = DeviceGenerator::create(c, dopt);
            EXPECT_TRUE(probe.ok()) << probe.status().to_string();
            if (!probe.ok()) return {};
            if (budget) {
                // Room for the longest prompt's group (and the prefix), not for all of them.
                const int64_t block = (*probe)->block_bytes();
                const model::KvBlockBytes sizes{dopt.block_tokens, block, block, 0};
                dopt.kv_budget_bytes =
                    2 * block + model::worst_case_kv_bytes(sizes, 40, group, o.max_new_tokens);
            }
            auto gen = DeviceGenerator::create(c, dopt);
            EXPECT_TRUE(gen.ok()) << gen.status().to_string();
            if (!gen.ok()) return {};
            EXPECT_TRUE((*gen)->load(params.data()).ok());
            (*gen)->set_weights_version(1);
            std::vector<model::Completion> out;
            for (int k = 0; k < calls; ++k) {
                auto r = (*gen)->generate(prompts, group, o, st);
                EXPECT_TRUE(r.ok()) << r.status().to_string();
                if (!r.ok()) return {};
                if (k > 0) {
                    EXPECT_EQ(out.size(), r->size());
                    for (size_t i = 0; i < out.size() && i < r->size(); ++i) {
                        EXPECT_EQ(out[i].tokens, (*r)[i].tokens) << "call " << k << " sample " << i;
                    }
                }
                out = std::move(r).value();
            }
            EXPECT_EQ((*gen)->prefix_stats().prefills, prefix_tokens > 0 ? 1 : 0)
                << "one prefill of the system prompt for every call of one version";
            return out;
        };
        DeviceGenerateStats base, cached, waves, both;
        const auto want = run(0, false, 1, &base);
        ASSERT_FALSE(want.empty());
        const auto got_cached = run(21, false, 2, &cached);
        const auto got_waves = run(0, true, 1, &waves);
        const auto got_both = run(21, true, 2, &both);
        EXPECT_EQ(cached.prefix_hits, 3);
        EXPECT_EQ(both.prefix_hits, 3);
        EXPECT_GT(waves.waves, 1);
        EXPECT_GT(both.waves, 1);
        EXPECT_LT(cached.prompt_tokens, base.prompt_tokens);
        const double e1 = testing::expect_same_greedy("system-prompt cache", c, params, prompts,
                                                      got_cached, want, 2e-2)
                              .worst_logprob_error;
        const double e2 =
            testing::expect_same_greedy("kv budget", c, params, prompts, got_waves, want, 2e-2)
                .worst_logprob_error;
        const double e3 =
            testing::expect_same_greedy("both", c, params, prompts, got_both, want, 2e-2)
                .worst_logprob_error;
        std::printf(
            "%s: prefix cache / budget greedy log-prob max |err| %.3g / %.3g / %.3g (cache, "
            "%ld waves, both: %ld waves), prompt rows %ld vs %ld, peak blocks %ld vs %ld\n",
            cs.name, e1, e2, e3, static_cast<long>(waves.waves), static_cast<long>(both.waves),
            static_cast<long>(cached.prompt_tokens), static_cast<long>(base.prompt_tokens),
            static_cast<long>(waves.peak_blocks), static_cast<long>(base.peak_blocks));

        // A new weights version drops the cached prefix: the next call's tokens are the new
        // weights' (a stale prefix would give the old weights' KV to every hit prompt).
        const std::vector<float> params2 = testing::random_params(idx.value(), c, 950 + which);
        DeviceGenerateOptions dopt;
        dopt.eos_token = -1;
        auto plain = DeviceGenerator::create(c, dopt);
        dopt.prefix_tokens = 21;
        auto gen = DeviceGenerator::create(c, dopt);
        ASSERT_TRUE(gen.ok() && plain.ok());
        ASSERT_TRUE((*gen)->load(params.data()).ok());
        (*gen)->set_weights_version(1);
        ASSERT_TRUE((*gen)->generate(prompts, group, o).ok());
        ASSERT_TRUE((*gen)->load(params2.data()).ok());
        (*gen)->set_weights_version(2);
        DeviceGenerateStats next;
        auto got2 = (*gen)->generate(prompts, group, o, &next);
        ASSERT_TRUE(got2.ok()) << got2.status().to_string();
        EXPECT_EQ(next.evictions, 1);
        EXPECT_EQ((*gen)->prefix_stats().prefills, 2);
        ASSERT_TRUE((*plain)->load(params2.data()).ok());
        auto want2 = (*plain)->generate(prompts, group, o);
        ASSERT_TRUE(want2.ok()) << want2.status().to_string();
        const double e4 =
            testing::expect_same_greedy("new version", c, params2, prompts, *got2, *want2, 2e-2)
                .worst_logprob_error;
        std::printf("%s: prefix cache after a new version: greedy log-prob max |err| %.3g\n",
                    cs.name, e4);
    }
}

TEST_F(DeviceGenerateTest, QuantizedKvPagesAndCompressionKeepTheCpuEnginesGreedyCompletions) {
    int salt = 0;
    for (const int arch : {0, 2}) {
        const testing::Case cs = testing::cases()[static_cast<size_t>(arch)];
        const model::ModelConfig& c = cs.config;
        auto idx = model::ParamIndex::create(c, model::make_param_layout(c).value());
        ASSERT_TRUE(idx.ok());
        const std::vector<float> params = testing::random_params(idx.value(), c, 900 + ++salt);
        const auto prompts = test_prompts(c.vocab_size, 177 + salt);
        model::SamplingOptions o;
        o.temperature = 0.0;
        o.max_new_tokens = 40;
        for (const auto dtype : {config::KvCacheDType::kInt8, config::KvCacheDType::kInt4,
                                 config::KvCacheDType::kInt2}) {
            config::KvCacheSpec spec;
            spec.dtype = dtype;
            spec.group = 8;
            spec.compress_after_tokens = 16;  // int2 KIVI behind the newest 16 tokens
            spec.residual_tokens = 8;         // int2: bf16 pages until 8 tokens follow a block
            const bool kivi = dtype == config::KvCacheDType::kInt2;
            const std::string what = std::string(cs.name) + " " +
                                     std::string(config::enum_name(dtype)) +
                                     (kivi ? " (bf16 window of 8)" : " + int2 compression");
            SCOPED_TRACE(what);
            // A generator with this rollout.kv_cache and `splits` (0: automatic), its completions.
            auto run = [&](int splits,
                           DeviceGenerateStats* st) -> Result<std::vector<model::Completion>> {
                DeviceGenerateOptions dopt;
                dopt.eos_token = -1;
                dopt.kv_cache = model::KvCacheOptions::from_spec(spec, dopt.block_tokens);
                dopt.decode_splits = splits;
                TANDEM_ASSIGN_OR_RETURN(auto gen, DeviceGenerator::create(c, dopt));
                TANDEM_RETURN_IF_ERROR(gen->load(params.data()));
                return gen->generate(prompts, 2, o, st);
            };
            DeviceGenerateStats st, split_st;
            auto got = run(0, &st);
            ASSERT_TRUE(got.ok()) << got.status().to_string();
            auto split = run(3, &split_st);
            ASSERT_TRUE(split.ok()) << split.status().to_string();
            model::GeneratorOptions copt;
            copt.eos_token = -1;
            copt.kv = model::KvCacheOptions::from_spec(spec, copt.block_tokens);
            auto cpu = model::GroupGenerator::create(c, copt);
            ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
            auto want = cpu->generate(params.data(), prompts, 2, o);
            ASSERT_TRUE(want.ok()) << want.status().to_string();
            // Both sides quantize, from keys and values that differ by the bf16 path, so codes
            // near a rounding boundary can differ by one step: looser than bf16 rows (first
            // estimates, the observed errors are printed).
            const double e_cpu =
                testing::expect_same_greedy(what, c, params, prompts, *got, *want, 1e-1, 0.3)
                    .worst_logprob_error;
            const double e_split = testing::expect_same_greedy(what + " split-K 3", c, params,
                                                               prompts, *split, *got, 1e-3)
                                       .worst_logprob_error;
            EXPECT_EQ(split_st.kv.last_splits, 3);
            EXPECT_GT(st.kv.compressions, 0);
            EXPECT_EQ(st.kv.block_tokens, 8);
            const int64_t bf16_rows = int64_t{2} * c.num_layers * 8 * c.kv_dim() * 2;
            EXPECT_LT(kivi ? st.kv.compressed_block_bytes : st.kv.block_bytes, bf16_rows);
            std::printf(
                "quantized kv %s: greedy log-prob max |err| vs CPU %.3g, split-K 3 vs auto %.3g; "
                "%s block %ld bytes (bf16 rows %ld), %s block %ld, %ld compressions, pool %.2f "
                "MiB\n",
                what.c_str(), e_cpu, e_split, st.kv.dtype, static_cast<long>(st.kv.block_bytes),
                static_cast<long>(bf16_rows), st.kv.compressed_dtype,
                static_cast<long>(st.kv.compressed_block_bytes),
                static_cast<long>(st.kv.compressions), st.kv.pool_bytes / 1048576.0);
        }
    }
}

TEST_F(DeviceGenerateTest, KiviPagesCompressedFurtherAreRefusedNamingTheField) {
    const model::ModelConfig c = testing::base_config();
    config::KvCacheSpec spec;
    spec.dtype = config::KvCacheDType::kInt4;
    spec.kivi = true;
    spec.compress_after_tokens = 32;  // to int2
    DeviceGenerateOptions dopt;
    dopt.job = "job-8";
    dopt.kv_cache = model::KvCacheOptions::from_spec(spec, dopt.block_tokens);
    auto gen = DeviceGenerator::create(c, dopt);
    ASSERT_FALSE(gen.ok());
    EXPECT_NE(gen.status().message().find("job job-8: device generation: "
                                          "rollout.kv_cache.compress_dtype int2 with dtype int4"),
              std::string::npos)
        << gen.status().message();
}

TEST_F(DeviceGenerateTest, BadPromptsAreNamed) {
    const model::ModelConfig c = testing::base_config();
    DeviceGenerateOptions dopt;
    dopt.job = "job-7";
    auto gen = DeviceGenerator::create(c, dopt);
    ASSERT_TRUE(gen.ok()) << gen.status().to_string();
    model::SamplingOptions o;
    const std::vector<std::vector<int32_t>> bad{{1, 2}, {3, 999}};
    auto r = (*gen)->generate(bad, 2, o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("job job-7: device generation: prompt 1 token 1 is 999"),
              std::string::npos)
        << r.status().message();
}

}  // namespace
}  // namespace tandem::gpu
