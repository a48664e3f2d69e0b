// tandem-bench-model-forward: forward throughput of the built-in engine (CPU, fp32) on the shapes
// of real models with random weights: Qwen2.5-0.5B and Llama-3.2-1B. Prints one JSON object per
// model and phase:
//   {"case":"model_forward","model":"qwen2.5-0.5b","phase":"prefill","tokens":128,
//    "tokens_per_s":..,"gflops":..,"gemm_gflops":..,"efficiency":..,"resident_bytes":..,...}
// prefill: one sequence of --prompt tokens through the paged-KV engine (logits of the last row);
// decode: --batch sequences, each at --prompt tokens of context, one new token each per step
// (logits of every new token). tokens_per_s is the best of --repeat runs after a warm-up.
// gflops counts 2 x (matrix parameters touched) per token plus attention; the baseline
// gemm_gflops is one sgemm of the model's MLP shape ([tokens, hidden] x [hidden, intermediate])
// in the same process, and efficiency = gflops / gemm_gflops.
//
// Usage: tandem-bench-model-forward [--quick] [--threads N] [--layers N] [--repeat N]
//          [--prompt T] [--batch B] [--model qwen2.5-0.5b|llama-3.2-1b]
//   --layers keeps the first N layers (the per-token figures then cover those layers only; the
//   JSON says so); the full models need about 2 GB and 5 GB of memory.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/model_shapes.h"
#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/layers.h"
#include "common/model/model_weights.h"

namespace {

using namespace tandem;
using namespace tandem::model;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Uniform [-0.05, 0.05) weights, 1 for norms, from a xorshift stream (fast for 1e9 values).
void fill(ModelWeights& w) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (const auto& t : w.layout().tensors()) {
        float* p = w.data() + t.offset / 4;
        const bool norm = t.shape.size() == 1 && t.name.find("norm") != std::string::npos;
        for (uint64_t i = 0; i < t.elements(); ++i) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            p[i] = norm ? 1.0f : static_cast<float>((s >> 40) * (0.1 / 16777216.0) - 0.05);
        }
    }
}

// FLOPs of `tokens` new tokens at `context` earlier positions each, with `head_rows` rows through
// the LM head.
double forward_flops(const ModelConfig& c, double tokens, double context, double head_rows) {
    const double h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), in = c.intermediate_size;
    const double per_layer = 2.0 * (h * q + 2 * h * kv + q * h + 3 * h * in);
    const double attention = 4.0 * q * (context + tokens / 2.0);  // QK^T and PV per token
    return tokens * c.num_layers * (per_layer + attention) + head_rows * 2.0 * h * c.vocab_size;
}

double gemm_gflops(const ModelConfig& c, int64_t rows, int repeat) {
    const int64_t h = c.hidden_size, in = c.intermediate_size;
    std::vector<float> a(static_cast<size_t>(rows * h), 0.01f),
        w(static_cast<size_t>(in * h), 0.02f), y(static_cast<size_t>(rows * in));
    double best = 1e30;
    for (int r = 0; r < repeat + 1; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        linear_forward<float>(rows, h, in, a.data(), w.data(), y.data());
        if (r > 0) best = std::min(best, seconds_since(t0));
    }
    return 2.0 * rows * h * in / best / 1e9;
}

struct Options {
    bool quick = false;
    int threads = 1;
    int layers = 0;  // 0: all
    int repeat = 3;
    int prompt = 128;
    int batch = 8;
    std::string only;
};

int run_model(const std::string& name, ModelConfig c, const Options& o) {
    const int full_layers = c.num_layers;
    if (o.layers > 0) c.num_layers = std::min(o.layers, c.num_layers);
    auto zeros = ModelWeights::zeros(c);
    if (!zeros.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), zeros.status().to_string().c_str());
        return 1;
    }
    ModelWeights w = std::move(zeros).value();
    fill(w);
    auto engine = InferenceEngine::create(c);
    if (!engine.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), engine.status().to_string().c_str());
        return 1;
    }
    const int64_t V = c.vocab_size;
    std::vector<int32_t> prompt(static_cast<size_t>(o.prompt));
    for (int i = 0; i < o.prompt; ++i) prompt[i] = (i * 7919 + 13) % c.vocab_size;
    std::vector<float> logits(static_cast<size_t>(std::max(o.batch, 1) * V));
    nlohmann::json base{{"case", "model_forward"},
                        {"model", name},
                        {"threads", o.threads},
                        {"layers", c.num_layers},
                        {"full_layers", full_layers},
                        {"resident_bytes", w.layout().total_bytes()},
                        {"parameters", w.layout().total_bytes() / 4}};

    // Prefill: a fresh cache each run.
    double best = 1e30;
    for (int r = 0; r < o.repeat + 1; ++r) {
        PagedKvCache cache(c, 16);
        const ForwardItem item{cache.create(), prompt};
        const auto t0 = std::chrono::steady_clock::now();
        Status s = engine->forward(w.data(), cache, std::span(&item, 1), logits.data());
        const double t = seconds_since(t0);
        if (!s.ok()) {
            std::fprintf(stderr, "%s prefill: %s\n", name.c_str(), s.to_string().c_str());
            return 1;
        }
        if (r > 0) best = std::min(best, t);
    }
    const double gemm = gemm_gflops(c, o.prompt, o.repeat);
    const double pf = forward_flops(c, o.prompt, 0, 1) / best / 1e9;
    nlohmann::json j = base;
    j.update({{"phase", "prefill"},
              {"tokens", o.prompt},
              {"seconds", best},
              {"tokens_per_s", o.prompt / best},
              {"gflops", pf},
              {"gemm_gflops", gemm},
              {"efficiency", pf / gemm}});
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);

    // Decode: `batch` sequences with `prompt` tokens of context each, one token per step.
    PagedKvCache cache(c, 16);
    std::vector<ForwardItem> items;
    std::vector<PagedKvCache::SeqId> seqs;
    for (int b = 0; b < o.batch; ++b) {
        seqs.push_back(cache.create());
        const ForwardItem item{seqs.back(), prompt};
        if (Status s = engine->forward(w.data(), cache, std::span(&item, 1), logits.data());
            !s.ok()) {
            std::fprintf(stderr, "%s decode prefill: %s\n", name.c_str(), s.to_string().c_str());
            return 1;
        }
    }
    const int32_t next = 42;
    for (int b = 0; b < o.batch; ++b) {
        items.push_back({seqs[b], std::span<const int32_t>(&next, 1)});
    }
    best = 1e30;
    for (int r = 0; r < o.repeat + 1; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        Status s = engine->forward(w.data(), cache, items, logits.data());
        const double t = seconds_since(t0);
        if (!s.ok()) {
            std::fprintf(stderr, "%s decode: %s\n", name.c_str(), s.to_string().c_str());
            return 1;
        }
        if (r > 0) best = std::min(best, t);
    }
    const double dg = gemm_gflops(c, o.batch, o.repeat);
    const double df = forward_flops(c, o.batch, o.prompt + o.repeat / 2.0, o.batch) / best / 1e9;
    j = base;
    j.update({{"phase", "decode"},
              {"batch", o.batch},
              {"context", o.prompt},
              {"seconds_per_step", best},
              {"tokens_per_s", o.batch / best},
              {"gflops", df},
              {"gemm_gflops", dg},
              {"efficiency", df / dg}});
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--quick") {
            o.quick = true;
        } else if (a == "--threads") {
            o.threads = std::stoi(next());
        } else if (a == "--layers") {
            o.layers = std::stoi(next());
        } else if (a == "--repeat") {
            o.repeat = std::stoi(next());
        } else if (a == "--prompt") {
            o.prompt = std::stoi(next());
        } else if (a == "--batch") {
            o.batch = std::stoi(next());
        } else if (a == "--model") {
            o.only = next();
        } else {
            std::fprintf(stderr,
                         "usage: tandem-bench-model-forward [--quick] [--threads N] [--layers N] "
                         "[--repeat N] [--prompt T] [--batch B] [--model NAME]\n");
            return 2;
        }
    }
    if (o.quick) {
        o.layers = o.layers > 0 ? o.layers : 4;
        o.repeat = 1;
        o.prompt = std::min(o.prompt, 64);
    }
    set_blas_threads(o.threads);
    int rc = 0;
    if (o.only.empty() || o.only == "qwen2.5-0.5b")
        rc |= run_model("qwen2.5-0.5b", bench::qwen25_05b_config(), o);
    if (o.only.empty() || o.only == "llama-3.2-1b")
        rc |= run_model("llama-3.2-1b", bench::llama32_1b_config(), o);
    return rc;
}
