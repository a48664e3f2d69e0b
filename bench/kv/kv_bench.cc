// tandem-bench-kv: KV-cache memory and speed per dtype (docs/kv-cache.md). One JSON object per
// line; the f32 cache is the baseline, measured in the same process.
//
//   bytes_per_token   the engine's PagedKvCache after 4096 positions appended one at a time
//                     (R = 128, group 32), scales and the f32 window included, vs f32; per layer
//                     (every layer is the same), for the Qwen3-0.6B KV shape (8 kv heads of 128),
//                     a 64-wide head shape (8 kv heads of 64, as Llama-3.2-1B) and the default
//                     task's (2 of 16)
//   sequences_at_budget  4096-token sequences of Qwen3-0.6B (28 layers) that fit 1 GiB
//   attention_decode  one query token over a 4096-token cache (16 query heads, 8 kv heads of 128)
//                     through kv_paged_attention_cpu: tokens/s of the attention of one layer
//   engine_decode     GroupGenerator on the default task's model shape (random weights): 8
//                     prompts x 8 samples x --new tokens, generated tokens/s
//   drift             teacher-forced next-token distributions against the f32 cache over
//                     --drift_tokens positions: mean KL and max |dlogprob|, on the default
//                     task's shape and on a 2-layer Qwen3-shaped model (vocab cut to 4096),
//                     random weights (scale 0.1)
//   prefix_shift      reuse of a cached 256-token prefix shifted by 16 positions (keys
//                     re-rotated) vs a full recompute, Qwen3 shape
//   system_prompt     8 prompts sharing a 2048-token system prompt (+16 tokens each), 4 samples
//                     x 4 new tokens: generate time (first batch, and second with the cache
//                     warm) and peak KV bytes with the system-prompt cache and without
//
// BLAS runs on one thread.
//   drift_trained     (--trained STEPS, alone) the default job's policy after STEPS supervised
//                     steps, teacher-forced over 256 held-out examples: mean KL, max |dlogprob|
//                     and greedy exact match per dtype against the f32 cache (group 4, R = 4);
//                     --model_config trains that architecture instead (configs/models/
//                     qwen3-kv-drift.json: Qwen3 with 128-wide heads)
//
// Usage: tandem-bench-kv [--quick] [--bytes_only] [--new N] [--drift_tokens N]
//                        [--trained STEPS [--job FILE] [--model_config CONFIG_JSON]]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config/loader.h"
#include "common/model/config.h"
#include "common/model/generate.h"
#include "common/model/inference.h"
#include "common/model/job_setup.h"
#include "common/model/kv_cache.h"
#include "common/model/kv_prefix_cache.h"
#include "common/model/model_weights.h"
#include "common/model/trainer.h"
#include "kernels/kv_quant.h"
#include "kernels/kv_sequence.h"

namespace {

using namespace tandem;
using namespace tandem::model;
using kernels::KvDType;
using Clock = std::chrono::steady_clock;

struct Dt {
    const char* name;
    KvDType dtype;
    bool kivi;
};
const Dt kDtypes[] = {{"f32", KvDType::kF32, false},       {"bf16", KvDType::kBF16, false},
                      {"int8", KvDType::kInt8, false},     {"int4", KvDType::kInt4, false},
                      {"int4-kivi", KvDType::kInt4, true}, {"int2", KvDType::kInt2, true}};

KvCacheOptions kv_options(const Dt& dt, int64_t residual = 128, int group = 32) {
    KvCacheOptions o;
    o.dtype = dt.dtype;
    o.kivi = dt.kivi;
    o.residual_tokens = residual;
    o.block_tokens = group;
    o.value_group = group;
    return o;
}

ModelConfig default_task_config(int max_seq_len) {  // configs/jobs/grpo-reverse.yaml's model
    ModelConfig c;
    c.vocab_size = 16;
    c.hidden_size = 64;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 176;
    c.max_seq_len = max_seq_len;
    return c;
}

ModelConfig qwen3_config(int layers, int vocab, int max_seq_len) {  // Qwen3-0.6B's shape
    ModelConfig c;
    c.architecture = Architecture::kQwen3;
    c.vocab_size = vocab;
    c.hidden_size = 1024;
    c.intermediate_size = 3072;
    c.num_layers = layers;
    c.num_heads = 16;
    c.num_kv_heads = 8;
    c.explicit_head_dim = 128;
    c.qk_norm = true;
    c.max_seq_len = max_seq_len;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = true;
    return c;
}

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Exits with the failed step's error (a bench has no partial result worth keeping).
[[noreturn]] void fail(const Status& s, const char* what) {
    std::fprintf(stderr, "tandem-bench-kv: %s: %s\n", what, s.to_string().c_str());
    std::exit(1);
}

void emit(const nlohmann::json& j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
}

// Bytes per token of one layer's cache after `tokens` positions appended one at a time.
KvCacheStats fill_cache(const ModelConfig& c, const Dt& dt, int64_t tokens) {
    auto cache = PagedKvCache::create(c, kv_options(dt));
    if (!cache.ok()) {
        std::fprintf(stderr, "%s\n", cache.status().to_string().c_str());
        std::exit(1);
    }
    std::mt19937 rng(1);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<float> k(static_cast<size_t>(c.kv_dim())), v(k.size());
    const auto s = cache->create();
    for (int64_t t = 0; t < tokens; ++t) {
        for (auto& x : k) x = n(rng);
        for (auto& x : v) x = n(rng);
        if (!cache
                 ->append_kv(
                     s, 1, [&](int) { return k.data(); }, [&](int) { return v.data(); })
                 .ok()) {
            std::exit(1);
        }
    }
    return cache->stats();
}

void bench_bytes(bool quick) {
    const int64_t tokens = 4096;
    struct Shape {
        const char* name;
        ModelConfig c;
    };
    ModelConfig head64 = qwen3_config(1, 16, 8192);
    head64.explicit_head_dim = 64;
    const Shape shapes[] = {{"qwen3-0.6b", qwen3_config(1, 16, 8192)},
                            {"head_dim-64", head64},
                            {"default-task", default_task_config(8192)}};
    for (const Shape& sh : shapes) {
        ModelConfig c = sh.c;
        c.num_layers = 1;
        const KvCacheStats base = fill_cache(c, kDtypes[0], tokens);
        for (const Dt& dt : kDtypes) {
            const KvCacheStats st = fill_cache(c, dt, tokens);
            nlohmann::json j{{"case", "bytes_per_token"},
                             {"shape", sh.name},
                             {"kv_heads", c.num_kv_heads},
                             {"head_dim", c.head_dim()},
                             {"dtype", dt.name},
                             {"tokens", st.tokens},
                             {"residual_tokens", 128},
                             {"group", 32},
                             {"bytes_per_token_per_layer", st.bytes_per_token()},
                             {"ratio_vs_f32", st.bytes_per_token() / base.bytes_per_token()},
                             {"f32_blocks", st.f32_blocks},
                             {"sealed_blocks", st.tokens / 32 - st.f32_blocks}};
            emit(j);
            if (std::string(sh.name) == "qwen3-0.6b") {
                const double per_seq = st.bytes_per_token() * 28 * tokens;  // 28 layers
                emit({{"case", "sequences_at_budget"},
                      {"shape", "qwen3-0.6b (28 layers)"},
                      {"dtype", dt.name},
                      {"budget_bytes", int64_t{1} << 30},
                      {"tokens_per_sequence", tokens},
                      {"bytes_per_sequence", per_seq},
                      {"sequences", std::floor(static_cast<double>(int64_t{1} << 30) / per_seq)}});
            }
        }
        if (quick) break;
    }
}

void bench_attention(bool quick) {
    const int hq = 16, hkv = 8, d = 128, T = 32;
    const int64_t tokens = 4096, R = 128;
    std::mt19937 rng(2);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const int64_t E = hkv * d;
    std::vector<float> k(static_cast<size_t>(tokens * E)), v(k.size()), q(hq * d);
    for (auto& x : k) x = n(rng);
    for (auto& x : v) x = n(rng);
    for (auto& x : q) x = n(rng);
    for (const Dt& dt : kDtypes) {
        kernels::KvSequenceConfig cfg;
        cfg.sealed.dtype = dt.dtype;
        cfg.sealed.scheme = dt.kivi ? kernels::KvScheme::kKivi : kernels::KvScheme::kPerToken;
        cfg.sealed.hkv = hkv;
        cfg.sealed.d = d;
        cfg.sealed.page_tokens = T;
        cfg.sealed.value_group = 32;
        cfg.residual_tokens = R;
        auto seq = kernels::KvPagedSequence::create(cfg);
        if (!seq.ok() || !seq->append(0, tokens, k.data(), v.data()).ok()) std::exit(1);
        std::vector<float> o(q.size()), lse(hq);
        const float scale = kernels::default_softmax_scale(d);
        int reps = quick ? 5 : 30;
        (void)seq->attend(hq, scale, q.data(), 1, tokens - 1, o.data(), lse.data());  // warm-up
        double best = 1e30;
        for (int r = 0; r < reps; ++r) {
            const auto t0 = Clock::now();
            (void)seq->attend(hq, scale, q.data(), 1, tokens - 1, o.data(), lse.data());
            best = std::min(best, seconds_since(t0));
        }
        emit({{"case", "attention_decode"},
              {"dtype", dt.name},
              {"context", tokens},
              {"hq", hq},
              {"hkv", hkv},
              {"d", d},
              {"seconds_per_token", best},
              {"tokens_per_s", 1.0 / best},
              {"bytes", seq->bytes()}});
    }
}

void bench_engine_decode(int new_tokens) {
    const ModelConfig c = default_task_config(new_tokens + 64);
    auto w = ModelWeights::random(c, 7, 0.1);
    if (!w.ok()) std::exit(1);
    std::vector<std::vector<int32_t>> prompts;
    for (int p = 0; p < 8; ++p) {
        std::vector<int32_t> t;
        for (int i = 0; i < 16; ++i) t.push_back((p * 5 + i * 3) % 13 + 3);
        prompts.push_back(t);
    }
    SamplingOptions so;
    so.max_new_tokens = new_tokens;
    so.seed = 1;
    for (const Dt& dt : kDtypes) {
        GeneratorOptions o;
        o.kv = kv_options(dt);
        o.block_tokens = 32;  // the f32 baseline in blocks of the same size
        o.eos_token = -1;     // every sample runs to new_tokens
        auto gen = GroupGenerator::create(c, o);
        if (!gen.ok()) std::exit(1);
        GenerateStats st;
        const auto t0 = Clock::now();
        auto out = gen->generate(w->data(), prompts, 8, so, &st);
        const double s = seconds_since(t0);
        if (!out.ok()) std::exit(1);
        emit({{"case", "engine_decode"},
              {"shape", "default-task"},
              {"dtype", dt.name},
              {"sequences", 64},
              {"new_tokens", new_tokens},
              {"generated_tokens", st.generated_tokens},
              {"seconds", s},
              {"tokens_per_s", static_cast<double>(st.generated_tokens) / s},
              {"kv_peak_bytes", st.kv_peak_bytes},
              {"kv_bytes_per_token", st.kv_bytes_per_token},
              {"kv_f32_blocks", st.kv_f32_blocks}});
    }
}

std::vector<double> log_softmax(const float* x, int n) {
    double mx = -1e300, sum = 0;
    for (int j = 0; j < n; ++j) mx = std::max<double>(mx, x[j]);
    for (int j = 0; j < n; ++j) sum += std::exp(x[j] - mx);
    std::vector<double> out(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) out[j] = x[j] - mx - std::log(sum);
    return out;
}

// Next-token log-probs at every position of `tokens` (prefill 16, then one at a time).
std::vector<std::vector<double>> teacher_forced(const ModelConfig& c, const float* w,
                                                PagedKvCache& cache,
                                                const std::vector<int32_t>& tokens) {
    auto engine = InferenceEngine::create(c);
    if (!engine.ok()) std::exit(1);
    std::vector<float> logits(static_cast<size_t>(c.vocab_size));
    std::vector<std::vector<double>> out;
    const auto s = cache.create();
    const ForwardItem first{s, std::span(tokens).subspan(0, 16)};
    if (!engine->forward(w, cache, std::span(&first, 1), logits.data()).ok()) std::exit(1);
    out.push_back(log_softmax(logits.data(), c.vocab_size));
    for (size_t p = 16; p < tokens.size(); ++p) {
        const ForwardItem it{s, std::span(tokens).subspan(p, 1)};
        if (!engine->forward(w, cache, std::span(&it, 1), logits.data()).ok()) std::exit(1);
        out.push_back(log_softmax(logits.data(), c.vocab_size));
    }
    return out;
}

void drift_row(const char* shape, const char* name, const std::vector<std::vector<double>>& ref,
               const std::vector<std::vector<double>>& got, int64_t positions) {
    double worst = 0, kl = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        for (size_t j = 0; j < ref[i].size(); ++j) {
            worst = std::max(worst, std::fabs(got[i][j] - ref[i][j]));
            kl += std::exp(ref[i][j]) * (ref[i][j] - got[i][j]);
        }
    }
    emit({{"case", "drift"},
          {"shape", shape},
          {"dtype", name},
          {"positions", positions},
          {"residual_tokens", 128},
          {"group", 32},
          {"mean_kl", kl / static_cast<double>(ref.size())},
          {"max_abs_dlogprob", worst}});
}

void bench_drift(int positions, bool quick) {
    struct Shape {
        const char* name;
        ModelConfig c;
    };
    std::vector<Shape> shapes{{"default-task", default_task_config(positions + 32)}};
    if (!quick) shapes.push_back({"qwen3-shaped-2-layers", qwen3_config(2, 4096, positions + 32)});
    for (const Shape& sh : shapes) {
        auto w = ModelWeights::random(sh.c, 3, 0.1);
        if (!w.ok()) std::exit(1);
        std::vector<int32_t> tokens;
        std::mt19937 rng(9);
        for (int i = 0; i < positions + 16; ++i) {
            tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(sh.c.vocab_size)));
        }
        PagedKvCache base(sh.c, 32);
        const auto ref = teacher_forced(sh.c, w->data(), base, tokens);
        for (const Dt& dt : kDtypes) {
            if (dt.dtype == KvDType::kF32) continue;
            auto cache = PagedKvCache::create(sh.c, kv_options(dt));
            if (!cache.ok()) std::exit(1);
            drift_row(sh.name, dt.name, ref, teacher_forced(sh.c, w->data(), *cache, tokens),
                      positions);
        }
    }
}

// The default task's policy trained by `steps` supervised steps from random weights (the job's
// warm start: prompts_per_step x group_size examples a step at warm_start_lr), then teacher-forced
// over 256 held-out examples: the prompt prefilled, the answer fed one token at a time, the
// distributions at the answer positions compared with the f32 cache. Group 4 and R = 4: the
// sequences are about 19 tokens, so group 32 / R = 128 would quantize nothing.
// With `model_config` (an HF config.json), that architecture and shape replace the job's model
// (random weights from model.seed, the task's vocabulary): e.g. a small Qwen3-shaped policy with
// q/k norms and 128-wide heads.
void bench_trained_drift(const std::string& job_file, int steps, const std::string& model_config) {
    auto job = config::load_job_file(job_file);
    if (!job.ok()) {
        std::fprintf(stderr, "%s\n", job.status().to_string().c_str());
        std::exit(1);
    }
    auto setup = make_job_setup(*job);
    if (!setup.ok()) fail(setup.status(), "job setup");
    const Task& task = *setup->task;
    std::string shape = "default-task";
    if (!model_config.empty()) {
        auto hf = read_hf_config(model_config);
        if (!hf.ok()) fail(hf.status(), "--model_config");
        hf->model.vocab_size = task.vocab().size();
        auto w = ModelWeights::random(hf->model, job->model.seed);
        if (!w.ok()) fail(w.status(), "--model_config");
        setup->initial = std::move(*w);
        shape = model_config;
    }
    TrainerOptions to = TrainerOptions::from_job(*job);
    to.algorithm.steps = steps;
    to.algorithm.optimizer.lr = job->algorithm.warm_start_lr;
    auto trainer = GrpoTrainer::create(std::move(setup->initial), to);
    if (!trainer.ok()) fail(trainer.status(), "trainer");
    auto answer = [&](const Example& ex) {
        auto ids = task.vocab().encode(ex.answer);
        if (!ids.ok()) std::exit(1);
        ids->push_back(Vocabulary::kEos);
        return *ids;
    };
    const auto t0 = Clock::now();
    uint64_t cursor = uint64_t{1} << 40;
    std::vector<Trajectory> batch(static_cast<size_t>(job->algorithm.prompts_per_step) *
                                  static_cast<size_t>(job->algorithm.group_size));
    double nll = 0;
    for (int k = 0; k < steps; ++k) {
        for (auto& t : batch) {
            const Example ex = task.example(cursor++);
            t.prompt = *task.prompt_tokens(ex);
            t.completion = answer(ex);
            t.behaviour_logprobs.assign(t.completion.size(), 0.0f);
        }
        auto st = (*trainer)->supervised_step(batch);
        if (!st.ok()) fail(st.status(), "supervised step");
        nll = st->loss;
    }
    const double train_s = seconds_since(t0);
    const ModelWeights& w = (*trainer)->weights();
    const ModelConfig& c = w.config();
    auto engine = InferenceEngine::create(c);
    if (!engine.ok()) fail(engine.status(), "inference engine");
    // Answer-position log-probs of held-out examples with `kv`; also the greedy exact-match rate.
    auto run = [&](const KvCacheOptions& kv, double* exact) {
        std::vector<std::vector<double>> out;
        std::vector<float> logits(static_cast<size_t>(c.vocab_size));
        int right = 0;
        for (uint64_t i = 0; i < 256; ++i) {
            auto cache = PagedKvCache::create(c, kv);
            if (!cache.ok()) fail(cache.status(), "kv cache");
            const Example ex = task.example(uint64_t{1} << 50 | i);
            const auto prompt = *task.prompt_tokens(ex);
            const auto ans = answer(ex);
            const auto s = cache->create();
            const ForwardItem first{s, prompt};
            if (Status st = engine->forward(w.data(), *cache, std::span(&first, 1), logits.data());
                !st.ok())
                fail(st, "prefill");
            bool ok = true;
            for (size_t j = 0; j < ans.size(); ++j) {
                out.push_back(log_softmax(logits.data(), c.vocab_size));
                const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
                ok = ok && best == ans[j];
                if (j + 1 == ans.size()) break;
                const ForwardItem it{s, std::span(ans).subspan(j, 1)};
                if (Status st = engine->forward(w.data(), *cache, std::span(&it, 1), logits.data());
                    !st.ok())
                    fail(st, "decode");
            }
            right += ok ? 1 : 0;
        }
        *exact = right / 256.0;
        return out;
    };
    KvCacheOptions f32o;
    f32o.block_tokens = 4;
    double exact_f32 = 0;
    const auto ref = run(f32o, &exact_f32);
    for (const Dt& dt : kDtypes) {
        double exact = exact_f32;
        const auto got = dt.dtype == KvDType::kF32 ? ref : run(kv_options(dt, 4, 4), &exact);
        double worst = 0, kl = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            for (size_t j = 0; j < ref[i].size(); ++j) {
                worst = std::max(worst, std::fabs(got[i][j] - ref[i][j]));
                kl += std::exp(ref[i][j]) * (ref[i][j] - got[i][j]);
            }
        }
        emit({{"case", "drift_trained"},
              {"shape", shape},
              {"job", job_file},
              {"supervised_steps", steps},
              {"train_s", train_s},
              {"final_nll", nll},
              {"dtype", dt.name},
              {"answer_positions", ref.size()},
              {"residual_tokens", 4},
              {"group", 4},
              {"mean_kl", kl / static_cast<double>(ref.size())},
              {"max_abs_dlogprob", worst},
              {"greedy_exact_match", exact}});
    }
}

void bench_prefix_shift() {
    const ModelConfig c = qwen3_config(2, 4096, 512);
    auto w = ModelWeights::random(c, 4, 0.1);
    auto engine = InferenceEngine::create(c);
    if (!w.ok() || !engine.ok()) std::exit(1);
    std::mt19937 rng(5);
    auto rnd = [&](int n) {
        std::vector<int32_t> t;
        for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>(rng() % 4096));
        return t;
    };
    const auto system = rnd(256);
    const int shift = 16;
    auto prompt = rnd(shift);
    prompt.insert(prompt.end(), system.begin(), system.end());
    const auto tail = rnd(16);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    std::vector<float> ref(static_cast<size_t>(c.vocab_size)), got(ref.size());
    PagedKvCache full(c, 32);
    const auto fs = full.create();
    const ForwardItem fi{fs, prompt};
    if (!engine->forward(w->data(), full, std::span(&fi, 1), ref.data()).ok()) std::exit(1);
    for (const Dt& dt : {kDtypes[0], kDtypes[2]}) {
        PagedKvCache cache(c, 32);
        PrefixCacheOptions po;
        po.auto_tokens = 256;
        po.dtype = dt.dtype;
        SystemPromptCache pc(po);
        pc.set(system, 1, cache);
        if (!pc.ensure(*engine, w->data(), cache).ok()) std::exit(1);
        auto s = pc.start(*engine, w->data(), cache, prompt, shift);
        if (!s.ok()) std::exit(1);
        const ForwardItem ri{*s, std::span(prompt).subspan(shift + 256)};
        if (!engine->forward(w->data(), cache, std::span(&ri, 1), got.data()).ok()) std::exit(1);
        const auto lr = log_softmax(ref.data(), c.vocab_size);
        const auto lg = log_softmax(got.data(), c.vocab_size);
        double worst = 0, kl = 0;
        for (int j = 0; j < c.vocab_size; ++j) {
            worst = std::max(worst, std::fabs(lr[j] - lg[j]));
            kl += std::exp(lr[j]) * (lr[j] - lg[j]);
        }
        emit({{"case", "prefix_shift"},
              {"shape", "qwen3-shaped-2-layers"},
              {"prefix_dtype", dt.name},
              {"prefix_tokens", 256},
              {"shift", shift},
              {"kl_vs_recompute", kl},
              {"max_abs_dlogprob_vs_recompute", worst}});
    }
}

void bench_system_prompt() {
    const ModelConfig c = default_task_config(2048 + 64);
    auto w = ModelWeights::random(c, 6, 0.1);
    if (!w.ok()) std::exit(1);
    std::mt19937 rng(8);
    std::vector<int32_t> system;
    for (int i = 0; i < 2048; ++i) system.push_back(static_cast<int32_t>(rng() % 13 + 3));
    std::vector<std::vector<int32_t>> prompts;
    for (int p = 0; p < 8; ++p) {
        auto t = system;
        for (int i = 0; i < 16; ++i) t.push_back(static_cast<int32_t>(rng() % 13 + 3));
        prompts.push_back(t);
    }
    SamplingOptions so;
    so.max_new_tokens = 4;
    for (const bool cached : {false, true}) {
        for (const Dt& dt : {kDtypes[0], kDtypes[2]}) {
            GeneratorOptions o;
            o.eos_token = -1;
            if (cached) {
                o.prefix.auto_tokens = 2048;
                o.prefix.dtype = dt.dtype;
            } else if (dt.dtype != KvDType::kF32) {
                continue;
            }
            auto gen = GroupGenerator::create(c, o);
            if (!gen.ok()) std::exit(1);
            gen->set_weights_version(1);
            GenerateStats st;
            const auto t_first = Clock::now();
            if (!gen->generate(w->data(), prompts, 4, so, &st).ok()) std::exit(1);
            const double first = seconds_since(t_first);  // with the prefix prefill, if cached
            const auto t0 = Clock::now();
            if (!gen->generate(w->data(), prompts, 4, so, &st).ok()) std::exit(1);
            const double s = seconds_since(t0);
            nlohmann::json j{{"case", "system_prompt"},
                             {"system_tokens", 2048},
                             {"prompts", 8},
                             {"samples", 4},
                             {"cached", cached},
                             {"prompt_tokens_prefilled", st.prompt_tokens},
                             {"first_generate_seconds", first},
                             {"generate_seconds", s},
                             {"kv_peak_bytes", st.kv_peak_bytes}};
            if (cached) {
                j["prefix_dtype"] = dt.name;
                j["prefix_bytes"] = gen->prefix_stats()->bytes;
                j["prefix_prefills"] = gen->prefix_stats()->prefills;
            }
            emit(j);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false, bytes_only = false;
    int new_tokens = 256, drift_tokens = 512, trained_steps = 0;
    std::string job_file = "configs/jobs/grpo-reverse.yaml", model_config;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") {
            quick = true;
            new_tokens = 64;
            drift_tokens = 192;
        } else if (a == "--bytes_only") {
            bytes_only = true;
        } else if (a == "--trained" && i + 1 < argc) {
            trained_steps = std::atoi(argv[++i]);
        } else if (a == "--job" && i + 1 < argc) {
            job_file = argv[++i];
        } else if (a == "--model_config" && i + 1 < argc) {
            model_config = argv[++i];
        } else if (a == "--new" && i + 1 < argc) {
            new_tokens = std::atoi(argv[++i]);
        } else if (a == "--drift_tokens" && i + 1 < argc) {
            drift_tokens = std::atoi(argv[++i]);
        } else {
            std::fprintf(stderr,
                         "usage: tandem-bench-kv [--quick] [--bytes_only] [--new N] "
                         "[--drift_tokens N] [--trained STEPS [--job FILE] "
                         "[--model_config CONFIG_JSON]]\n");
            return 2;
        }
    }
    openblas_set_num_threads(1);  // one core, as a rollout actor on a shared machine
    if (trained_steps > 0) {      // only the trained-policy drift
        bench_trained_drift(job_file, trained_steps, model_config);
        return 0;
    }
    bench_bytes(quick);
    if (bytes_only) return 0;
    bench_attention(quick);
    bench_engine_decode(new_tokens);
    bench_drift(drift_tokens, quick);
    if (!quick) bench_prefix_shift();
    bench_system_prompt();
    return 0;
}
