// tandem-bench-attention: attention kernel and ring figures, one JSON object per line, each with
// `case`, its figures and `ratio` (the figure its target is stated against).
//
//   cpu_forward / cpu_backward  blockwise CPU kernel GFLOP/s next to single-threaded OpenBLAS
//                               sgemm of the same shapes in the same run (target ratio >= 0.3)
//   ring_overhead               ring with P ranks stepped on one thread / single-device time on
//                               the same inputs (target <= 1.15 for P up to 8)
//   causal_balance              max over ranks of attended (query, key) entries / mean
//                               (target <= 1.02 with zigzag; contiguous beside it)
//   ring_parallel_p2            P = 2 ranks on two threads: stepped time / (2 x threaded time)
//   gpu_forward                 CUDA TFLOP/s at head dim 128, 4K..32K tokens, causal and not;
//                               one "skipped" line with the reason when there is no device
//   gpu_backward                CUDA attention backward (tiled tensor-core and simple kernels)
//                               TFLOP/s at Qwen2.5-0.5B / Llama-3.2-1B head shapes, T 4K and 8K,
//                               causal (gpu_backward.cc; against sdpa_baseline.py's backward)
//
// Options: --quick (smaller shapes, fewer repeats), --case NAME (run one case family).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_cuda_host.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/device.h"
#include "kernels/ring/in_process_transport.h"
#include "kernels/ring/ring_attention.h"

namespace tandem::kernels {

#if TANDEM_BENCH_GPU_BACKWARD
void gpu_backward_cases(bool quick);  // gpu_backward.cc
#endif

namespace {

using Clock = std::chrono::steady_clock;

struct Settings {
    bool quick = false;
    std::string only;
    bool wants(const char* name) const { return only.empty() || only == name; }
};

// Best wall time of `repeats` calls after one warm-up call.
double best_seconds(int repeats, const std::function<void()>& fn) {
    fn();
    double best = 1e30;
    for (int i = 0; i < repeats; ++i) {
        const auto t0 = Clock::now();
        fn();
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return best;
}

// Best wall times of a and b, timed alternately (a, b, a, b, ...) so load from other processes
// on the machine affects both alike.
std::pair<double, double> best_seconds_interleaved(int repeats, const std::function<void()>& a,
                                                   const std::function<void()>& b) {
    a();
    b();
    double best_a = 1e30, best_b = 1e30;
    for (int i = 0; i < repeats; ++i) {
        auto t0 = Clock::now();
        a();
        best_a = std::min(best_a, std::chrono::duration<double>(Clock::now() - t0).count());
        t0 = Clock::now();
        b();
        best_b = std::min(best_b, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return {best_a, best_b};
}

std::vector<float> random_vector(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> out(n);
    for (auto& x : out) x = dist(rng);
    return out;
}

AttentionParams shape(int64_t t, int hq, int hkv, int d, bool causal) {
    AttentionParams p;
    p.tq = p.tk = t;
    p.hq = hq;
    p.hkv = hkv;
    p.d = d;
    p.scale = default_softmax_scale(d);
    p.causal = causal;
    return p;
}

const char* json_bool(bool b) { return b ? "true" : "false"; }

// Single-threaded sgemm GFLOP/s for the two products of one attention head (S = Q K^T and
// O = P V at t x t x d), measured now.
double sgemm_gflops(int64_t t, int d, int repeats) {
    const auto a = random_vector(static_cast<size_t>(t * d), 1);
    const auto b = random_vector(static_cast<size_t>(t * d), 2);
    const auto pm = random_vector(static_cast<size_t>(t * t), 3);
    std::vector<float> s(static_cast<size_t>(t * t)), o(static_cast<size_t>(t * d));
    const int n = static_cast<int>(t);
    const double secs = best_seconds(repeats, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, 1.0f, a.data(), d, b.data(),
                    d, 0.0f, s.data(), n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, pm.data(), n,
                    b.data(), d, 0.0f, o.data(), d);
    });
    return 4.0 * t * t * d / secs / 1e9;
}

void cpu_cases(const Settings& st) {
    if (!st.wants("cpu_forward") && !st.wants("cpu_backward")) return;
    const int repeats = st.quick ? 1 : 3;
    const int64_t t = st.quick ? 1024 : 2048;
    const char* isa = cpu::cpu_isa_name(cpu::best_cpu_isa()).data();
    for (int d : {64, 128}) {
        const double blas = sgemm_gflops(t, d, repeats);
        for (bool causal : {false, true}) {
            const AttentionParams p = shape(t, 4, 2, d, causal);
            const auto q = random_vector(static_cast<size_t>(t * p.hq * d), 4);
            const auto k = random_vector(static_cast<size_t>(t * p.hkv * d), 5);
            const auto v = random_vector(static_cast<size_t>(t * p.hkv * d), 6);
            std::vector<float> o(q.size()), lse(static_cast<size_t>(t * p.hq));
            const double flops = attention_forward_flops(p);
            if (st.wants("cpu_forward")) {
                const double secs = best_seconds(repeats, [&] {
                    (void)attention_forward_cpu(p, q.data(), k.data(), v.data(), o.data(),
                                                lse.data());
                });
                const double gf = flops / secs / 1e9;
                std::printf(
                    "{\"case\": \"cpu_forward\", \"t\": %lld, \"hq\": %d, \"hkv\": %d, \"d\": %d, "
                    "\"causal\": %s, \"isa\": \"%s\", \"threads\": 1, \"seconds\": %.5f, "
                    "\"attention_gflops\": %.1f, \"sgemm_gflops\": %.1f, \"ratio\": %.3f, "
                    "\"target\": \">= 0.30\"}\n",
                    static_cast<long long>(t), p.hq, p.hkv, d, json_bool(causal), isa, secs, gf,
                    blas, gf / blas);
            }
            if (st.wants("cpu_backward")) {
                (void)attention_forward_cpu(p, q.data(), k.data(), v.data(), o.data(), lse.data());
                std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
                const double secs = best_seconds(repeats, [&] {
                    (void)attention_backward_cpu(p, q.data(), k.data(), v.data(), o.data(),
                                                 lse.data(), q.data(), dq.data(), dk.data(),
                                                 dv.data());
                });
                const double gf = 2.5 * flops / secs / 1e9;  // five products vs the forward's two
                std::printf(
                    "{\"case\": \"cpu_backward\", \"t\": %lld, \"hq\": %d, \"hkv\": %d, \"d\": %d, "
                    "\"causal\": %s, \"isa\": \"%s\", \"threads\": 1, \"seconds\": %.5f, "
                    "\"attention_gflops\": %.1f, \"sgemm_gflops\": %.1f, \"ratio\": %.3f}\n",
                    static_cast<long long>(t), p.hq, p.hkv, d, json_bool(causal), isa, secs, gf,
                    blas, gf / blas);
            }
            std::fflush(stdout);
        }
    }
}

// The ranks of one in-process ring with their local shards of full inputs.
struct Ring {
    std::vector<std::unique_ptr<RingTransport>> transports;
    std::vector<std::unique_ptr<RingAttention>> ranks;
    std::vector<std::vector<float>> q, k, v, o, lse;

    Ring(const RingAttentionConfig& cfg, int p, const std::vector<float>& fq,
         const std::vector<float>& fk, const std::vector<float>& fv) {
        transports = make_in_process_ring(p);
        const int64_t qrow = cfg.hq * cfg.d, kvrow = cfg.hkv * cfg.d;
        for (int r = 0; r < p; ++r) {
            ranks.push_back(std::move(RingAttention::create(cfg, *transports[r])).value());
            const RingShard& s = ranks.back()->shard();
            q.emplace_back(s.rows * qrow);
            k.emplace_back(s.rows * kvrow);
            v.emplace_back(s.rows * kvrow);
            o.emplace_back(s.rows * qrow);
            lse.emplace_back(s.rows * cfg.hq);
            gather_rows(s, fq.data(), qrow, q[r].data());
            gather_rows(s, fk.data(), kvrow, k[r].data());
            gather_rows(s, fv.data(), kvrow, v[r].data());
        }
    }

    void run_stepped() {
        std::vector<RingAttention*> ptrs;
        for (size_t r = 0; r < ranks.size(); ++r) {
            (void)ranks[r]->prepare_forward(q[r].data(), k[r].data(), v[r].data(), o[r].data(),
                                            lse[r].data());
            ptrs.push_back(ranks[r].get());
        }
        (void)run_ring_stepped(ptrs);
    }

    void run_threads() {
        std::vector<std::thread> threads;
        for (size_t r = 0; r < ranks.size(); ++r) {
            threads.emplace_back([this, r] {
                (void)ranks[r]->forward(q[r].data(), k[r].data(), v[r].data(), o[r].data(),
                                        lse[r].data());
            });
        }
        for (auto& t : threads) t.join();
    }
};

RingAttentionConfig ring_config(const AttentionParams& p, RingLayout layout) {
    RingAttentionConfig cfg;
    cfg.seq_len = p.tq;
    cfg.hq = p.hq;
    cfg.hkv = p.hkv;
    cfg.d = p.d;
    cfg.scale = p.scale;
    cfg.causal = p.causal;
    cfg.layout = layout;
    return cfg;
}

void ring_cases(const Settings& st) {
    const int repeats = st.quick ? 1 : 3;
    const int64_t t = st.quick ? 2048 : 8192;
    struct Variant {
        bool causal;
        RingLayout layout;
    };
    for (const Variant var :
         {Variant{true, RingLayout::kZigzag}, Variant{false, RingLayout::kContiguous}}) {
        const AttentionParams p = shape(t, 2, 1, 128, var.causal);
        const auto q = random_vector(static_cast<size_t>(t * p.hq * p.d), 7);
        const auto k = random_vector(static_cast<size_t>(t * p.hkv * p.d), 8);
        const auto v = random_vector(static_cast<size_t>(t * p.hkv * p.d), 9);
        std::vector<float> o(q.size()), lse(static_cast<size_t>(t * p.hq));
        auto run_single = [&] {
            (void)attention_forward_cpu(p, q.data(), k.data(), v.data(), o.data(), lse.data());
        };
        if (st.wants("ring_overhead")) {
            for (int ranks : {2, 4, 8}) {
                Ring ring(ring_config(p, var.layout), ranks, q, k, v);
                const auto [single, stepped] =
                    best_seconds_interleaved(repeats, run_single, [&] { ring.run_stepped(); });
                std::printf(
                    "{\"case\": \"ring_overhead\", \"ranks\": %d, \"layout\": \"%s\", "
                    "\"causal\": %s, \"t\": %lld, \"hq\": %d, \"hkv\": %d, \"d\": %d, "
                    "\"single_seconds\": %.5f, \"ring_stepped_seconds\": %.5f, \"ratio\": %.3f, "
                    "\"target\": \"<= 1.15\"}\n",
                    ranks, ring_layout_name(var.layout), json_bool(var.causal),
                    static_cast<long long>(t), p.hq, p.hkv, p.d, single, stepped, stepped / single);
                std::fflush(stdout);
            }
        }
        if (st.wants("ring_parallel_p2") && var.causal) {
            Ring ring(ring_config(p, var.layout), 2, q, k, v);
            const double single = best_seconds(repeats, run_single);
            const auto [stepped, threaded] = best_seconds_interleaved(
                repeats, [&] { ring.run_stepped(); }, [&] { ring.run_threads(); });
            std::printf(
                "{\"case\": \"ring_parallel_p2\", \"ranks\": 2, \"threads\": 2, \"layout\": "
                "\"%s\", \"causal\": %s, \"t\": %lld, \"hardware_threads\": %u, "
                "\"single_seconds\": %.5f, \"stepped_seconds\": %.5f, \"threaded_seconds\": %.5f, "
                "\"speedup_vs_single\": %.3f, \"ratio\": %.3f}\n",
                ring_layout_name(var.layout), json_bool(var.causal), static_cast<long long>(t),
                std::thread::hardware_concurrency(), single, stepped, threaded, single / threaded,
                stepped / (2.0 * threaded));
            std::fflush(stdout);
        }
    }
}

void balance_cases(const Settings& st) {
    if (!st.wants("causal_balance")) return;
    for (int64_t t : {int64_t{4096}, int64_t{32768}, int64_t{4000}}) {
        for (int ranks : {2, 4, 8}) {
            double ratio[2] = {0, 0};
            int i = 0;
            for (RingLayout layout : {RingLayout::kContiguous, RingLayout::kZigzag}) {
                int64_t max = 0, sum = 0;
                for (int r = 0; r < ranks; ++r) {
                    const int64_t e = ring_attended_entries(layout, t, ranks, r, true);
                    max = std::max(max, e);
                    sum += e;
                }
                ratio[i++] = static_cast<double>(max) * ranks / static_cast<double>(sum);
            }
            std::printf(
                "{\"case\": \"causal_balance\", \"t\": %lld, \"ranks\": %d, "
                "\"contiguous_max_over_mean\": %.4f, \"zigzag_max_over_mean\": %.4f, "
                "\"ratio\": %.4f, \"target\": \"<= 1.02 (zigzag)\"}\n",
                static_cast<long long>(t), ranks, ratio[0], ratio[1], ratio[1]);
        }
    }
    std::fflush(stdout);
}

void gpu_cases(const Settings& st) {
    if (!st.wants("gpu_forward")) return;
    std::string why;
    const auto devices = cuda_devices(&why);
    if (devices.empty()) {
        std::printf(
            "{\"case\": \"gpu_forward\", \"skipped\": true, \"reason\": \"%s\", "
            "\"ratio\": null}\n",
            why.c_str());
        return;
    }
    const std::vector<int64_t> lengths =
        st.quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{4096, 8192, 16384, 32768};
    for (DType dtype : {DType::kBF16, DType::kF16}) {
        for (int64_t t : lengths) {
            for (bool causal : {false, true}) {
                const AttentionParams p = shape(t, 16, 16, 128, causal);
                auto timing = time_attention_cuda(p, dtype, 2, st.quick ? 3 : 10);
                if (!timing.ok()) {
                    std::printf(
                        "{\"case\": \"gpu_forward\", \"skipped\": true, \"reason\": "
                        "\"%s\", \"ratio\": null}\n",
                        timing.status().to_string().c_str());
                    return;
                }
                const double tflops = attention_forward_flops(p) / timing->seconds_per_call / 1e12;
                std::printf(
                    "{\"case\": \"gpu_forward\", \"device\": \"%s\", \"dtype\": \"%s\", \"t\": "
                    "%lld, "
                    "\"hq\": %d, \"d\": %d, \"causal\": %s, \"seconds\": %.6f, \"tflops\": %.1f, "
                    "\"sdpa_tflops\": null, \"ratio\": null, \"note\": \"run "
                    "bench/attention/sdpa_baseline.py on the same machine for the PyTorch "
                    "figure\"}\n",
                    timing->device.c_str(), dtype_name(dtype), static_cast<long long>(t), p.hq, p.d,
                    json_bool(causal), timing->seconds_per_call, tflops);
                std::fflush(stdout);
            }
        }
    }
}

void gpu_backward(const Settings& st) {
    if (!st.wants("gpu_backward")) return;
#if TANDEM_BENCH_GPU_BACKWARD
    gpu_backward_cases(st.quick);
#else
    std::printf(
        "{\"case\": \"gpu_backward\", \"skipped\": true, \"reason\": \"built without "
        "CUDA\", \"ratio\": null}\n");
#endif
}

}  // namespace
}  // namespace tandem::kernels

int main(int argc, char** argv) {
    using namespace tandem::kernels;
    constexpr const char* kUsage =
        "usage: tandem-bench-attention [--quick] [--case cpu_forward|cpu_backward|ring_overhead|"
        "causal_balance|ring_parallel_p2|gpu_forward|gpu_backward]\n";
    // The case families the functions above print; --case must name one of them.
    const std::set<std::string> cases = {"cpu_forward",    "cpu_backward",     "ring_overhead",
                                         "causal_balance", "ring_parallel_p2", "gpu_forward",
                                         "gpu_backward"};
    Settings st;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--quick") {
            st.quick = true;
        } else if (arg == "--case" && i + 1 < argc) {
            st.only = argv[++i];
            if (!cases.count(st.only)) {
                std::fprintf(stderr, "tandem-bench-attention: --case: no case named \"%s\"\n%s",
                             st.only.c_str(), kUsage);
                return 2;
            }
        } else {
            std::fprintf(stderr, "tandem-bench-attention: unexpected argument \"%s\"\n%s",
                         arg.c_str(), kUsage);
            return 2;
        }
    }
    openblas_set_num_threads(1);  // the baseline is one core, like the kernel
    cpu_cases(st);
    balance_cases(st);
    ring_cases(st);
    gpu_cases(st);
    gpu_backward(st);
    return 0;
}
