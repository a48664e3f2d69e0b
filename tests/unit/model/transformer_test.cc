// Whole-model gradient checks (double, finite differences), float-vs-double parity of the real
// path, and KV-cache inference against full recomputation.
#include "common/model/transformer.h"

#include <cmath>

#include <gtest/gtest.h>

#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/model_weights.h"
#include "tests/unit/model/test_util.h"

namespace tandem::model {
namespace {

using testing::check_gradient;
using testing::random_vector;
using testing::tiny_config;

PackedBatch tiny_batch() {
    PackedBatch b;
    b.add_sequence(std::vector<int32_t>{1, 3, 4, 5, 6, 2}, 2);
    b.add_sequence(std::vector<int32_t>{1, 0, 6, 6}, 1);
    b.add_sequence(std::vector<int32_t>{1, 5, 4, 3, 3, 4, 2}, 3);
    return b;
}

// Random parameters at a scale that makes every layer matter (norm weights around 1).
std::vector<double> random_params(const Transformer<double>& t, uint64_t seed) {
    std::vector<double> p(static_cast<size_t>(t.index().elements), 0.0);
    const auto r = random_vector<double>(p.size(), seed, 0.5);
    for (const auto& ti : t.layout().tensors()) {
        for (uint64_t i = ti.offset / 4; i < (ti.offset + ti.bytes) / 4; ++i) {
            p[i] = ti.shape.size() == 1 ? 1.0 + 0.3 * r[i] : r[i];
        }
    }
    return p;
}

class WholeModelGrad : public ::testing::TestWithParam<bool> {};

TEST_P(WholeModelGrad, MatchesFiniteDifferencesOnEveryParameter) {
    const ModelConfig cfg = tiny_config(/*tied=*/GetParam());
    auto t = Transformer<double>::create(cfg);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    const PackedBatch batch = tiny_batch();
    std::vector<double> params = random_params(*t, 31);
    const auto w = random_vector<double>(batch.tokens.size(), 32);
    std::vector<double> logp(batch.tokens.size());
    const double temperature = 0.8;
    auto f = [&] {
        EXPECT_TRUE(t->forward(params.data(), batch, temperature, logp.data(), nullptr).ok());
        double s = 0;
        for (size_t i = 0; i < logp.size(); ++i) s += w[i] * logp[i];
        return s;
    };
    f();
    // Unscored positions carry no log-prob.
    EXPECT_EQ(logp[0], 0.0);
    EXPECT_EQ(logp[1], 0.0);
    EXPECT_NE(logp[2], 0.0);
    std::vector<double> grads(params.size(), 0.0);
    ASSERT_TRUE(t->backward(params.data(), w.data(), grads.data()).ok());
    // Every element within 1e-8 + 1e-6 relative of its central difference (eps 1e-5).
    const double worst = check_gradient(params, grads, f, 1e-8, 1e-6, 1e-5, "param");
    RecordProperty("max_abs_error", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntied, WholeModelGrad, ::testing::Values(true, false));

TEST(WholeModelGrad, FloatPathMatchesDoubleReference) {
    // The float path (sgemm + kernels/ attention) against the double reference on the same
    // weights: log-probs within 2e-5, gradients within 1e-4 of the largest gradient.
    const ModelConfig cfg = tiny_config(false);
    auto td = Transformer<double>::create(cfg);
    auto tf = Transformer<float>::create(cfg);
    ASSERT_TRUE(td.ok() && tf.ok());
    const PackedBatch batch = tiny_batch();
    const std::vector<double> pd = random_params(*td, 33);
    const std::vector<float> pf(pd.begin(), pd.end());
    const std::vector<double> pd_rounded(pf.begin(), pf.end());
    const auto wd = random_vector<double>(batch.tokens.size(), 34);
    const std::vector<float> wf(wd.begin(), wd.end());
    std::vector<double> ld(wd.size()), gd(pd.size(), 0.0);
    std::vector<float> lf(wd.size()), gf(pd.size(), 0.0f);
    ASSERT_TRUE(td->forward(pd_rounded.data(), batch, 1.0, ld.data(), nullptr).ok());
    ASSERT_TRUE(td->backward(pd_rounded.data(), wd.data(), gd.data()).ok());
    ASSERT_TRUE(tf->forward(pf.data(), batch, 1.0, lf.data(), nullptr).ok());
    ASSERT_TRUE(tf->backward(pf.data(), wf.data(), gf.data()).ok());
    for (size_t i = 0; i < ld.size(); ++i) EXPECT_NEAR(ld[i], lf[i], 2e-5) << i;
    double gmax = 0;
    for (const double g : gd) gmax = std::max(gmax, std::abs(g));
    for (size_t i = 0; i < gd.size(); ++i) {
        ASSERT_FALSE(std::isnan(gf[i]));
        EXPECT_NEAR(gd[i], gf[i], 1e-4 * gmax) << i;
    }
}

// Two groups: prompt {1,3,4} with three completions, prompt {1,5} with two; `shared` packs each
// prompt once and continues it, otherwise every completion repeats its prompt.
struct GroupBatch {
    PackedBatch batch;
    std::vector<int64_t> completion_row;  // per completion: the row of its first token
    std::vector<std::vector<int32_t>> completions;
};

GroupBatch group_batch(bool shared) {
    const std::vector<std::vector<int32_t>> prompts{{1, 3, 4}, {1, 5}};
    const std::vector<std::pair<int, std::vector<int32_t>>> completions{
        {0, {5, 6, 2}}, {0, {6}}, {0, {4, 4, 3, 2}}, {1, {0, 6, 6}}, {1, {3, 2}}};
    GroupBatch g;
    int64_t prefix = PackedBatch::kNoPrefix;
    int last = -1;
    for (const auto& [p, c] : completions) {
        if (shared) {
            if (p != last) prefix = g.batch.add_prefix(prompts[p]);
            g.completion_row.push_back(g.batch.begin[g.batch.add_continuation(prefix, c)]);
        } else {
            g.batch.add(prompts[p], c);
            g.completion_row.push_back(g.batch.begin.back() - static_cast<int64_t>(c.size()));
        }
        last = p;
        g.completions.push_back(c);
    }
    return g;
}

TEST(SharedPrompts, ContinuationsMatchFiniteDifferences) {
    const ModelConfig cfg = tiny_config(/*tied=*/true);
    auto t = Transformer<double>::create(cfg);
    ASSERT_TRUE(t.ok());
    const GroupBatch g = group_batch(true);
    EXPECT_EQ(g.batch.num_tokens(), 3 + 2 + (3 + 1 + 4 + 3 + 2));
    std::vector<double> params = random_params(*t, 41);
    const auto w = random_vector<double>(g.batch.tokens.size(), 42);
    std::vector<double> logp(g.batch.tokens.size());
    auto f = [&] {
        EXPECT_TRUE(t->forward(params.data(), g.batch, 0.9, logp.data(), nullptr).ok());
        double s = 0;
        for (size_t i = 0; i < logp.size(); ++i) s += w[i] * logp[i];
        return s;
    };
    f();
    EXPECT_EQ(logp[0], 0.0);                                         // prompt rows are not scored
    EXPECT_NE(logp[static_cast<size_t>(g.completion_row[1])], 0.0);  // a one-token completion
    std::vector<double> grads(params.size(), 0.0);
    ASSERT_TRUE(t->backward(params.data(), w.data(), grads.data()).ok());
    check_gradient(params, grads, f, 1e-8, 1e-6, 1e-5, "param");
}

TEST(SharedPrompts, SameLogProbsAndGradientsAsRepeatedPrompts) {
    // Sharing a group's prompt changes the work, not the result: the float path with shared
    // prompts against itself with repeated prompts.
    const ModelConfig cfg = tiny_config(false);
    auto a = Transformer<float>::create(cfg);
    auto b = Transformer<float>::create(cfg);
    auto d = Transformer<double>::create(cfg);
    ASSERT_TRUE(a.ok() && b.ok() && d.ok());
    const std::vector<double> pd = random_params(*d, 43);
    const std::vector<float> params(pd.begin(), pd.end());
    const GroupBatch shared = group_batch(true), repeated = group_batch(false);
    ASSERT_LT(shared.batch.num_tokens(), repeated.batch.num_tokens());
    // The same per-token weights on both packings.
    std::vector<float> ws(shared.batch.tokens.size(), 0.0f), wr(repeated.batch.tokens.size(), 0.0f);
    const auto r = random_vector<double>(64, 44);
    size_t k = 0;
    for (size_t c = 0; c < shared.completions.size(); ++c) {
        for (size_t j = 0; j < shared.completions[c].size(); ++j, ++k) {
            ws[static_cast<size_t>(shared.completion_row[c]) + j] = static_cast<float>(r[k]);
            wr[static_cast<size_t>(repeated.completion_row[c]) + j] = static_cast<float>(r[k]);
        }
    }
    std::vector<float> ls(ws.size()), es(ws.size()), lr(wr.size()), er(wr.size());
    ASSERT_TRUE(a->forward(params.data(), shared.batch, 1.0, ls.data(), es.data()).ok());
    ASSERT_TRUE(b->forward(params.data(), repeated.batch, 1.0, lr.data(), er.data()).ok());
    for (size_t c = 0; c < shared.completions.size(); ++c) {
        for (size_t j = 0; j < shared.completions[c].size(); ++j) {
            const size_t is = static_cast<size_t>(shared.completion_row[c]) + j;
            const size_t ir = static_cast<size_t>(repeated.completion_row[c]) + j;
            EXPECT_NEAR(ls[is], lr[ir], 1e-5) << c << "," << j;
            EXPECT_NEAR(es[is], er[ir], 1e-5) << c << "," << j;
        }
    }
    std::vector<float> gs(params.size(), 0.0f), gr(params.size(), 0.0f);
    ASSERT_TRUE(a->backward(params.data(), ws.data(), gs.data()).ok());
    ASSERT_TRUE(b->backward(params.data(), wr.data(), gr.data()).ok());
    float gmax = 0;
    for (const float x : gr) gmax = std::max(gmax, std::abs(x));
    ASSERT_GT(gmax, 0.0f);
    for (size_t i = 0; i < gr.size(); ++i) EXPECT_NEAR(gs[i], gr[i], 1e-5 * gmax) << i;
}

TEST(SharedPrompts, RejectsAContinuationOfAContinuation) {
    auto t = Transformer<float>::create(tiny_config(true));
    ASSERT_TRUE(t.ok());
    PackedBatch b;
    const int64_t p = b.add_prefix(std::vector<int32_t>{1, 3});
    const int64_t c = b.add_continuation(p, std::vector<int32_t>{4});
    b.add_continuation(c, std::vector<int32_t>{5});
    std::vector<float> params(static_cast<size_t>(t->index().elements), 0.1f), logp(4);
    const Status st = t->forward(params.data(), b, 1.0, logp.data(), nullptr);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.to_string().find("sequence 2 continues sequence 1"), std::string::npos)
        << st.to_string();
}

ModelConfig small_config() {
    ModelConfig c;
    c.vocab_size = 15;
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 40;
    c.max_seq_len = 40;
    return c;
}

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
    return t;
}

TEST(KvCacheInference, DecodeEqualsFullRecomputation) {
    const ModelConfig cfg = small_config();
    auto w = ModelWeights::random(cfg, 5, 0.2);
    ASSERT_TRUE(w.ok());
    auto full = Transformer<float>::create(cfg);
    auto engine = InferenceEngine::create(cfg);
    ASSERT_TRUE(full.ok() && engine.ok());
    const int V = cfg.vocab_size;
    const std::vector<int32_t> a = random_tokens(23, V, 6), b = random_tokens(17, V, 7);
    PackedBatch batch;
    batch.add_sequence(a, 1);
    batch.add_sequence(b, 1);
    std::vector<float> ref(batch.tokens.size() * V);
    ASSERT_TRUE(full->logits(w->data(), batch, ref.data()).ok());

    // Block size 4: sequences span several blocks; prefill in uneven chunks, then decode one
    // token at a time for both sequences in the same call.
    PagedKvCache cache(cfg, 4);
    const auto sa = cache.create(), sb = cache.create();
    std::vector<float> logits(40 * V);
    auto expect_rows = [&](int64_t seq_begin, int64_t pos0, int64_t count, const float* got) {
        for (int64_t r = 0; r < count; ++r) {
            for (int j = 0; j < V; ++j) {
                ASSERT_NEAR(got[r * V + j], ref[(seq_begin + pos0 + r) * V + j], 2e-5)
                    << "position " << pos0 + r;
            }
        }
    };
    // Chunked prefill: 5 tokens, then 6 more (causal over blocks already in the cache).
    ForwardItem first[] = {{sa, std::span(a).subspan(0, 5)}, {sb, std::span(b).subspan(0, 3)}};
    ASSERT_TRUE(engine->forward(w->data(), cache, first, logits.data(), true).ok());
    expect_rows(0, 0, 5, logits.data());
    expect_rows(23, 0, 3, logits.data() + 5 * V);
    ForwardItem second[] = {{sa, std::span(a).subspan(5, 6)}};
    ASSERT_TRUE(engine->forward(w->data(), cache, second, logits.data(), true).ok());
    expect_rows(0, 5, 6, logits.data());
    int64_t pa = 11, pb = 3;
    while (pa < 23 || pb < 17) {
        std::vector<ForwardItem> items;
        if (pa < 23) items.push_back({sa, std::span(a).subspan(pa, 1)});
        if (pb < 17) items.push_back({sb, std::span(b).subspan(pb, 1)});
        ASSERT_TRUE(engine->forward(w->data(), cache, items, logits.data()).ok());
        int i = 0;
        if (pa < 23) expect_rows(0, pa++, 1, logits.data() + V * i++);
        if (pb < 17) expect_rows(23, pb++, 1, logits.data() + V * i++);
    }
    EXPECT_EQ(cache.length(sa), 23);
    EXPECT_EQ(cache.blocks_in_use(), 6 + 5);
}

TEST(KvCacheInference, ForkedSequencesShareBlocksAndMatchUnsharedAttention) {
    const ModelConfig cfg = small_config();
    auto w = ModelWeights::random(cfg, 8, 0.2);
    ASSERT_TRUE(w.ok());
    auto engine = InferenceEngine::create(cfg);
    ASSERT_TRUE(engine.ok());
    const int V = cfg.vocab_size, G = 4;
    const std::vector<int32_t> prompt = random_tokens(9, V, 9);
    std::vector<float> shared_logits, own_logits;
    for (const bool grouped : {true, false}) {
        engine->set_group_shared_attention(grouped);
        PagedKvCache cache(cfg, 4);
        const auto parent = cache.create();
        ForwardItem pre[] = {{parent, prompt}};
        std::vector<float> logits(G * V);
        ASSERT_TRUE(engine->forward(w->data(), cache, pre, logits.data()).ok());
        std::vector<PagedKvCache::SeqId> kids;
        for (int g = 0; g < G; ++g) kids.push_back(*cache.fork(parent));
        cache.release(parent);
        EXPECT_EQ(cache.blocks_in_use(), 3);  // 9 prompt tokens in blocks of 4, shared
        std::vector<float>& out = grouped ? shared_logits : own_logits;
        for (int step = 0; step < 6; ++step) {
            std::vector<int32_t> toks(G);
            std::vector<ForwardItem> items;
            for (int g = 0; g < G; ++g) {
                toks[g] = static_cast<int32_t>((g * 5 + step * 3) % V);
                items.push_back({kids[g], std::span(&toks[g], 1)});
            }
            ASSERT_TRUE(engine->forward(w->data(), cache, items, logits.data()).ok());
            out.insert(out.end(), logits.begin(), logits.end());
        }
        // 3 shared blocks plus 2 own blocks (6 tokens in blocks of 4) per sample.
        EXPECT_EQ(cache.blocks_in_use(), 3 + 2 * G);
        for (const auto k : kids) cache.release(k);
        EXPECT_EQ(cache.blocks_in_use(), 0);
    }
    ASSERT_EQ(shared_logits.size(), own_logits.size());
    for (size_t i = 0; i < own_logits.size(); ++i) {
        ASSERT_NEAR(shared_logits[i], own_logits[i], 1e-5) << i;
    }
}

TEST(KvCacheInference, RejectsSequencesPastMaxSeqLen) {
    ModelConfig cfg = small_config();
    cfg.max_seq_len = 8;
    auto w = ModelWeights::random(cfg, 1);
    auto engine = InferenceEngine::create(cfg);
    ASSERT_TRUE(w.ok() && engine.ok());
    PagedKvCache cache(cfg, 4);
    const auto s = cache.create();
    const std::vector<int32_t> toks(9, 3);
    ForwardItem items[] = {{s, toks}};
    std::vector<float> logits(9 * cfg.vocab_size);
    const Status st = engine->forward(w->data(), cache, items, logits.data());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("max_seq_len"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace tandem::model
