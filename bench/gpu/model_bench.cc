// tandem-bench-gpu-model: the device decoder's forward (log-probs of every position), its training
// pass (forward with saved activations + backward to fp32 gradients) and its GEMMs at the shapes
// of Qwen2.5-0.5B and Llama-3.2-1B with random weights, one JSON object per line (--case
// forward), and the whole GRPO training step (--case train_step): gpu::DeviceTrainer::step,
// forward + backward + AdamW on fp32 masters with clipping, on `batch` trajectories of `seq`
// tokens (an 8-token prompt per group of 4, not shared in packing so every sequence is full
// length; no KL term), tokens/s and MFU (model FLOPs below / the device's dense bf16 peak).
// bench/gpu/torch_forward_baseline.py and torch_train_baseline.py measure PyTorch (transformers,
// bf16, eager) on the same shapes in the same run (deploy/gpu/run.sh pairs them). Without a device
// it prints one line {"bench": "gpu_model", "skipped": true, "reason": ...}.
//
//   tandem-bench-gpu-model [--model qwen2.5-0.5b|llama-3.2-1b|all] [--batch 8] [--seq 512]
//                          [--iters 5] [--case forward|train_step|all]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/model_shapes.h"
#include "common/gpu/device_model.h"
#include "common/gpu/device_trainer.h"
#include "common/model/model_weights.h"
#include "common/model/trajectory.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device.h"

namespace {

using namespace tandem;
using Clock = std::chrono::steady_clock;

using Shape = bench::ModelShape;

// Fast deterministic fill (xorshift), N(0, ~0.02)-like uniform values; norms at 1.
void fill(float* p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (static_cast<float>(x >> 40) / static_cast<float>(1 << 24) - 0.5f) * 0.07f;
    }
}
void fill(std::vector<float>& p, uint64_t seed) { fill(p.data(), p.size(), seed); }

// Dense bf16 tensor-core peak of the device, for MFU: H100 / H200 SXM 989.4 TFLOP/s; 0 when the
// device is not one of these (MFU is then null).
double peak_bf16_flops(const std::string& device) {
    if (device.find("H100") != std::string::npos || device.find("H200") != std::string::npos)
        return 989.4e12;
    return 0.0;
}

// Model FLOPs of one training step (forward + backward = 3 x forward) on batch x seq tokens:
// 6 x the GEMM parameters (q, k, v, o, gate, up, down of every layer and the LM head) per token
// plus 3 x the causal attention forward (2 products of 2 d FLOPs per attended query-key entry and
// query head). bench/gpu/torch_train_baseline.py uses the same formula.
double train_flops(const model::ModelConfig& c, int batch, int seq) {
    const double h = c.hidden_size, q = static_cast<double>(c.q_dim()),
                 kv = static_cast<double>(c.kv_dim()), ff = c.intermediate_size;
    const double gemm_params =
        c.num_layers * (h * (q + 2 * kv) + q * h + 3 * h * ff) + h * c.vocab_size;
    const double tokens = static_cast<double>(batch) * seq;
    const double attention = 4.0 * c.num_layers * q * batch * seq * (seq + 1.0) / 2.0;
    return 6.0 * gemm_params * tokens + 3.0 * attention;
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

// The whole GRPO step: DeviceTrainer::step (forward, loss weights, backward, AdamW) on `batch`
// trajectories of `seq` tokens; one warm-up step, then `iters` timed ones.
int train_step(const Shape& sh, int batch, int seq, int iters, const std::string& device) {
    using namespace kernels::cuda;
    const model::ModelConfig& c = sh.config;
    constexpr int kPrompt = 8, kGroup = 4;
    if (seq <= kPrompt) {
        std::fprintf(stderr, "tandem-bench-gpu-model: train_step needs --seq > %d\n", kPrompt);
        return 2;
    }
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
    auto initial = model::ModelWeights::zeros(c);
    if (!initial.ok()) {
        std::fprintf(stderr, "%s\n", initial.status().to_string().c_str());
        return 1;
    }
    fill(initial->data(), initial->index().elements, 2);
    std::vector<model::Trajectory> trajectories(static_cast<size_t>(batch));
    uint64_t x = 777;
    auto token = [&]() {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        return static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(c.vocab_size));
    };
    // Behaviour log-probs near a random policy's (-log V), so ratios sit near 1.
    const float uniform_logp = -std::log(static_cast<float>(c.vocab_size));
    for (int i = 0; i < batch; ++i) {
        model::Trajectory& t = trajectories[static_cast<size_t>(i)];
        if (i % kGroup == 0) {
            t.prompt.resize(kPrompt);
            for (auto& v : t.prompt) v = token();
        } else {
            t.prompt = trajectories[static_cast<size_t>(i - 1)].prompt;
        }
        t.completion.resize(static_cast<size_t>(seq - kPrompt));
        for (auto& v : t.completion) v = token();
        t.behaviour_logprobs.assign(t.completion.size(), uniform_logp);
        t.reward = 0.5 * (i % 3);
        t.group = static_cast<uint64_t>(i / kGroup);
    }
    model::TrainerOptions opt;
    opt.micro_batch = batch;    // one forward/backward pass per step
    opt.share_prompts = false;  // every sequence full length, as the PyTorch baseline's
    opt.algorithm.steps = 1 << 20;
    opt.algorithm.kl_coef = 0.0;  // no reference model forward
    opt.algorithm.optimizer.lr = 1e-6;
    auto trainer = gpu::DeviceTrainer::create(*initial, opt, **alloc, **gemm, s);
    if (!trainer.ok()) {
        std::fprintf(stderr, "%s\n", trainer.status().to_string().c_str());
        return 1;
    }
    auto warm = (*trainer)->step(s, trajectories);
    if (!warm.ok()) {
        std::fprintf(stderr, "%s\n", warm.status().to_string().c_str());
        return 1;
    }
    (*alloc)->reset_peak();
    double forward = 0, backward = 0, optimizer = 0, loss = 0;
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
        auto r = (*trainer)->step(s, trajectories);
        if (!r.ok()) {
            std::fprintf(stderr, "%s\n", r.status().to_string().c_str());
            return 1;
        }
        forward += r->forward_s;
        backward += r->backward_s;
        optimizer += r->optimizer_s;
        loss = r->loss;
    }
    const double sec = seconds(t0, Clock::now()) / iters;
    const double flops = train_flops(c, batch, seq), peak = peak_bf16_flops(device);
    char mfu[32] = "null";
    if (peak > 0) std::snprintf(mfu, sizeof(mfu), "%.4f", flops / sec / peak);
    std::printf(
        "{\"bench\": \"gpu_train_step\", \"model\": \"%s\", \"device\": \"%s\", \"batch\": "
        "%d, \"seq\": %d, \"tokens_per_s\": %.1f, \"seconds_per_step\": %.5f, \"forward_s\": "
        "%.5f, \"backward_s\": %.5f, \"optimizer_s\": %.5f, \"model_tflops\": %.1f, "
        "\"mfu\": %s, \"loss\": %.6g, \"peak_device_mib\": %.1f, \"gemm\": \"%s\", "
        "\"gemm_fallback_calls\": %lld}\n",
        sh.name, device.c_str(), batch, seq, static_cast<double>(batch) * seq / sec, sec,
        forward / iters, backward / iters, optimizer / iters, flops / sec / 1e12, mfu, loss,
        static_cast<double>((*alloc)->peak_bytes()) / (1 << 20), (*gemm)->description().c_str(),
        static_cast<long long>((*gemm)->fallback_calls()));
    std::fflush(stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string which = "all", which_case = "all";
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
        else if (k == "--case")
            which_case = argv[i + 1];
        else {
            std::fprintf(stderr, "tandem-bench-gpu-model: unknown flag %s\n", k.c_str());
            return 2;
        }
    }
    if (batch < 1 || seq < 2 || iters < 1) {
        std::fprintf(stderr, "tandem-bench-gpu-model: --batch, --seq, --iters must be positive\n");
        return 2;
    }
    if (which_case != "all" && which_case != "forward" && which_case != "train_step") {
        std::fprintf(stderr,
                     "tandem-bench-gpu-model: --case must be forward, train_step or all, not %s\n",
                     which_case.c_str());
        return 2;
    }
    std::string why;
    const auto devices = tandem::kernels::cuda_devices(&why);
    if (devices.empty()) {
        skip(why);
        return 0;
    }
    int rc = 0;
    for (const Shape& sh : bench::reference_model_shapes()) {
        if (which != "all" && which != sh.name) continue;
        if (which_case != "train_step") rc |= run(sh, batch, seq, iters);
        if (which_case != "forward") rc |= train_step(sh, batch, seq, iters, devices[0].name);
    }
    return rc;
}
