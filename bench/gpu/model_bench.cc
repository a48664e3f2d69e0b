// tandem-bench-gpu-model: the device decoder's forward (log-probs of every position), its training
// pass (forward with saved activations + backward to fp32 gradients) and its GEMMs at the shapes
// of Qwen2.5-0.5B and Llama-3.2-1B with random weights, one JSON object per line.
// bench/gpu/torch_forward_baseline.py measures PyTorch (transformers, bf16, eager) on the same
// shapes in the same run (deploy/gpu/run.sh pairs them). Without a device it prints one line
// {"bench": "gpu_model", "skipped": true, "reason": ...}.
//
//   tandem-bench-gpu-model [--model qwen2.5-0.5b|llama-3.2-1b|all] [--batch 8] [--seq 512]
//                          [--iters 5]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/gpu/device_model.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device.h"

namespace {

using namespace tandem;
using Clock = std::chrono::steady_clock;

struct Shape {
    const char* name;
    model::ModelConfig config;
};

std::vector<Shape> shapes() {
    model::ModelConfig q;  // Qwen2.5-0.5B
    q.architecture = model::Architecture::kQwen2;
    q.vocab_size = 151936;
    q.hidden_size = 896;
    q.num_layers = 24;
    q.num_heads = 14;
    q.num_kv_heads = 2;
    q.intermediate_size = 4864;
    q.max_seq_len = 32768;
    q.rope_theta = 1000000.0;
    q.rms_norm_eps = 1e-6;
    q.qkv_bias = true;
    q.tie_embeddings = true;
    model::ModelConfig l;  // Llama-3.2-1B
    l.architecture = model::Architecture::kLlama;
    l.vocab_size = 128256;
    l.hidden_size = 2048;
    l.num_layers = 16;
    l.num_heads = 32;
    l.num_kv_heads = 8;
    l.intermediate_size = 8192;
    l.max_seq_len = 131072;
    l.rope_theta = 500000.0;
    l.rms_norm_eps = 1e-5;
    l.tie_embeddings = true;
    l.rope_scaling.type = model::RopeScaling::Type::kLlama3;
    l.rope_scaling.factor = 32.0;
    l.rope_scaling.original_max_position_embeddings = 8192;
    return {{"qwen2.5-0.5b", q}, {"llama-3.2-1b", l}};
}

// Fast deterministic fill (xorshift), N(0, ~0.02)-like uniform values; norms at 1.
void fill(std::vector<float>& p, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& v : p) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v = (static_cast<float>(x >> 40) / static_cast<float>(1 << 24) - 0.5f) * 0.07f;
    }
}

double seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

void skip(const std::string& why) {
    std::printf("{\"bench\": \"gpu_model\", \"skipped\": true, \"reason\": \"%s\"}\n", why.c_str());
}

int run(const Shape& sh, int batch, int seq, int iters) {
    using namespace kernels::cuda;
    auto stream = Stream::create(0);
    auto alloc = DeviceAllocator::create(0);
    if (!stream.ok() || !alloc.ok()) {
        skip(stream.ok() ? alloc.status().to_string() : stream.status().to_string());
        return 0;
    }
    const Stream& s = **stream;
    auto gemm = Gemm::create(**alloc);
    if (!gemm.ok()) {
        skip(gemm.status().to_string());
        return 1;
    }
    const model::ModelConfig& c = sh.config;
    auto dm = gpu::DeviceModel::create(c, **alloc, **gemm, s);
    if (!dm.ok()) {
        std::fprintf(stderr, "%s\n", dm.status().to_string().c_str());
        return 1;
    }
    {
        std::vector<float> params((*dm)->index().elements);
        fill(params, 1);
        const Status st = (*dm)->load(s, params.data());
        if (!st.ok()) {
            std::fprintf(stderr, "%s\n", st.to_string().c_str());
            return 1;
        }
    }
    model::PackedBatch b;
    uint64_t x = 12345;
    for (int i = 0; i < batch; ++i) {
        std::vector<int32_t> toks(static_cast<size_t>(seq));
        for (auto& t : toks) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            t = static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(c.vocab_size));
        }
        b.add_sequence(toks, 1);
    }
    const int64_t n = b.num_tokens();
    std::vector<float> lp(static_cast<size_t>(n)), ent(static_cast<size_t>(n));
    // Warm-up (plans, cached blocks), then timed iterations.
    Status st = (*dm)->logprobs(s, b, 1.0, lp.data(), ent.data());
    if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.to_string().c_str());
        return 1;
    }
    (*alloc)->reset_peak();
    const auto t0 = Clock::now();
    for (int i = 0; i < iters && st.ok(); ++i)
        st = (*dm)->logprobs(s, b, 1.0, lp.data(), ent.data());
    const auto t1 = Clock::now();
    if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.to_string().c_str());
        return 1;
    }
    const double sec = seconds(t0, t1) / iters;
    std::printf(
        "{\"bench\": \"gpu_model_forward\", \"model\": \"%s\", \"batch\": %d, \"seq\": %d, "
        "\"tokens_per_s\": %.1f, \"seconds_per_batch\": %.5f, \"peak_device_mib\": %.1f, "
        "\"gemm\": \"%s\", \"gemm_fallback_calls\": %lld}\n",
        sh.name, batch, seq, static_cast<double>(n) / sec, sec,
        static_cast<double>((*alloc)->peak_bytes()) / (1 << 20), (*gemm)->description().c_str(),
        static_cast<long long>((*gemm)->fallback_calls()));
    std::fflush(stdout);

    // The training pass as DeviceTrainer runs it per micro-batch: the forward keeping every
    // layer's activations, then the backward into fp32 gradients (loss weight 1 / n per token).
    {
        auto grads = (*alloc)->allocate((*dm)->index().elements * sizeof(float), "bench gradients");
        if (!grads.ok()) {
            std::fprintf(stderr, "%s\n", grads.status().to_string().c_str());
            return 1;
        }
        const std::vector<float> weight(static_cast<size_t>(n), 1.0f / static_cast<float>(n));
        auto pass = [&]() {
            Status r = (*dm)->train_forward(s, b, 1.0, lp.data(), ent.data());
            if (r.ok()) r = (*dm)->backward(s, weight.data(), grads->as<float>());
            if (r.ok()) r = s.synchronize("bench training pass");
            return r;
        };
        st = pass();  // warm-up
        (*alloc)->reset_peak();
        const auto a = Clock::now();
        for (int i = 0; i < iters && st.ok(); ++i) st = pass();
        const auto e = Clock::now();
        (*dm)->release_activations();
        if (!st.ok()) {
            std::fprintf(stderr, "%s\n", st.to_string().c_str());
            return 1;
        }
        const double t = seconds(a, e) / iters;
        std::printf(
            "{\"bench\": \"gpu_train_pass\", \"model\": \"%s\", \"batch\": %d, \"seq\": %d, "
            "\"tokens_per_s\": %.1f, \"seconds_per_batch\": %.5f, \"peak_device_mib\": %.1f}\n",
            sh.name, batch, seq, static_cast<double>(n) / t, t,
            static_cast<double>((*alloc)->peak_bytes()) / (1 << 20));
        std::fflush(stdout);
    }

    // The model's GEMMs alone at n rows: TFLOP/s of y = x W^T.
    const int64_t h = c.hidden_size;
    struct G {
        const char* what;
        int64_t in, out;
    };
    const G gs[] = {{"qkv", h, c.q_dim() + 2 * c.kv_dim()},
                    {"o", c.q_dim(), h},
                    {"gate_up", h, 2 * int64_t{c.intermediate_size}},
                    {"down", c.intermediate_size, h},
                    {"lm_head_4k_rows", h, c.vocab_size}};
    for (const G& g : gs) {
        const int64_t rows = std::strcmp(g.what, "lm_head_4k_rows") == 0 ? 4096 : n;
        auto xb = (*alloc)->allocate(rows * g.in * 2, "bench x");
        auto wb = (*alloc)->allocate(g.out * g.in * 2, "bench w");
        auto yb = (*alloc)->allocate(rows * g.out * 4, "bench y");
        if (!xb.ok() || !wb.ok() || !yb.ok()) return 1;
        (void)fill_zero(s, xb->as(), xb->bytes());
        (void)fill_zero(s, wb->as(), wb->bytes());
        Status gst = (*gemm)->linear(s, rows, g.in, g.out, xb->as<Bf16>(), wb->as<Bf16>(),
                                     yb->as<float>(), false);
        if (gst.ok()) gst = s.synchronize("bench gemm warm-up");
        const int reps = 20;
        const auto a = Clock::now();
        for (int r = 0; r < reps && gst.ok(); ++r) {
            gst = (*gemm)->linear(s, rows, g.in, g.out, xb->as<Bf16>(), wb->as<Bf16>(),
                                  yb->as<float>(), false);
        }
        if (gst.ok()) gst = s.synchronize("bench gemm");
        const auto e = Clock::now();
        if (!gst.ok()) {
            std::fprintf(stderr, "%s\n", gst.to_string().c_str());
            return 1;
        }
        const double t = seconds(a, e) / reps;
        std::printf(
            "{\"bench\": \"gpu_gemm\", \"model\": \"%s\", \"gemm\": \"%s\", \"m\": %lld, "
            "\"n\": %lld, \"k\": %lld, \"tflops\": %.1f}\n",
            sh.name, g.what, static_cast<long long>(rows), static_cast<long long>(g.out),
            static_cast<long long>(g.in), 2.0 * rows * g.out * g.in / t / 1e12);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string which = "all";
    int batch = 8, seq = 512, iters = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        if (k == "--model")
            which = argv[i + 1];
        else if (k == "--batch")
            batch = std::atoi(argv[i + 1]);
        else if (k == "--seq")
            seq = std::atoi(argv[i + 1]);
        else if (k == "--iters")
            iters = std::atoi(argv[i + 1]);
        else {
            std::fprintf(stderr, "tandem-bench-gpu-model: unknown flag %s\n", k.c_str());
            return 2;
        }
    }
    if (batch < 1 || seq < 2 || iters < 1) {
        std::fprintf(stderr, "tandem-bench-gpu-model: --batch, --seq, --iters must be positive\n");
        return 2;
    }
    std::string why;
    if (tandem::kernels::cuda_devices(&why).empty()) {
        skip(why);
        return 0;
    }
    int rc = 0;
    for (const Shape& sh : shapes()) {
        if (which == "all" || which == sh.name) rc |= run(sh, batch, seq, iters);
    }
    return rc;
}
