// The gpu_backward case of tandem-bench-attention (built with CUDA only): the device attention
// backward (kernels/cuda/attention_backward.h), tiled tensor-core kernel and simple kernel, causal,
// T = 4096 and 8192, at the head shapes of Qwen2.5-0.5B (14 query / 2 key-value heads, d 64),
// Llama-3.2-1B (32 / 8, d 64) and 16 / 16 at d 128. o and lse come from the device forward on the
// same random bf16 inputs. TFLOP/s are counted as FlashAttention counts a backward: 2.5 x the
// forward's (five T x T x d products, causal half), though the tiled kernel computes seven (its
// dQ pass recomputes S and dP). bench/attention/sdpa_baseline.py prints PyTorch's SDPA backward on
// the same shapes (case sdpa_backward); deploy/gpu/run.sh divides the two (target >= 0.4).
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda/attention_backward.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "kernels/half.h"

namespace tandem::kernels {

namespace {

void skipped(const std::string& why) {
    std::printf(
        "{\"case\": \"gpu_backward\", \"skipped\": true, \"reason\": \"%s\", "
        "\"ratio\": null}\n",
        why.c_str());
    std::fflush(stdout);
}

}  // namespace

void gpu_backward_cases(bool quick) {
    std::string why;
    const auto devices = cuda_devices(&why);
    if (devices.empty()) return skipped(why);
    auto stream = cuda::Stream::create(0);
    if (!stream.ok()) return skipped(stream.status().to_string());
    auto alloc = cuda::DeviceAllocator::create(0);
    if (!alloc.ok()) return skipped(alloc.status().to_string());
    const cuda::Stream& s = **stream;
    struct Shape {
        const char* model;
        int hq, hkv, d;
    };
    const Shape shapes[] = {
        {"qwen2.5-0.5b", 14, 2, 64}, {"llama-3.2-1b", 32, 8, 64}, {"h16-d128", 16, 16, 128}};
    const std::vector<int64_t> lengths =
        quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{4096, 8192};
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (const Shape& sh : shapes) {
        for (int64_t t : lengths) {
            AttentionParams p;
            p.tq = p.tk = t;
            p.hq = sh.hq;
            p.hkv = sh.hkv;
            p.d = sh.d;
            p.scale = default_softmax_scale(sh.d);
            p.causal = true;
            const size_t nq = static_cast<size_t>(t * sh.hq * sh.d),
                         nk = static_cast<size_t>(t * sh.hkv * sh.d);
            std::vector<cuda::DeviceBuffer> keep;
            std::string failed;
            auto buf = [&](size_t bytes, const char* what) -> void* {
                auto b = (*alloc)->allocate(bytes, what);
                if (!b.ok()) {
                    failed = b.status().to_string();
                    return nullptr;
                }
                keep.push_back(std::move(*b));
                return keep.back().as<void>();
            };
            void* q = buf(nq * 2, "q");
            void* k = buf(nk * 2, "k");
            void* v = buf(nk * 2, "v");
            auto* o = static_cast<float*>(buf(nq * 4, "o"));
            auto* lse = static_cast<float*>(buf(static_cast<size_t>(t * sh.hq) * 4, "lse"));
            auto* dout = static_cast<float*>(buf(nq * 4, "dout"));
            auto* dq = static_cast<float*>(buf(nq * 4, "dq"));
            auto* dk = static_cast<float*>(buf(nk * 4, "dk"));
            auto* dv = static_cast<float*>(buf(nk * 4, "dv"));
            if (!failed.empty()) return skipped(failed);
            Status st;
            auto upload_bf16 = [&](void* dst, size_t n) {
                std::vector<uint16_t> bits(n);
                for (auto& b : bits) b = float_to_bf16_bits(uni(rng));
                if (st.ok()) st = cuda::copy_to_device(s, dst, bits.data(), n * 2);
                if (st.ok()) st = s.synchronize("gpu_backward upload");
            };
            upload_bf16(q, nq);
            upload_bf16(k, nk);
            upload_bf16(v, nk);
            std::vector<float> g(nq);
            for (float& x : g) x = uni(rng);
            if (st.ok()) st = cuda::copy_to_device(s, dout, g.data(), nq * 4);
            if (st.ok()) st = attention_forward_cuda(p, DType::kBF16, q, k, v, o, lse, s.handle());
            if (st.ok()) st = s.synchronize("gpu_backward forward");
            if (!st.ok()) return skipped(st.to_string());
            const double flops = 2.5 * attention_forward_flops(p);
            for (auto kernel :
                 {cuda::AttentionBackwardKernel::kTiled, cuda::AttentionBackwardKernel::kSimple}) {
                const bool simple = kernel == cuda::AttentionBackwardKernel::kSimple;
                if (simple && t > 4096) continue;  // the reference kernel: one length suffices
                const int calls = quick || simple ? 2 : 10;
                cuda::AttentionBackwardKernel used = kernel;
                auto call = [&] {
                    return cuda::attention_backward(s, p, DType::kBF16, q, k, v, o, lse, dout, dq,
                                                    dk, dv, false, kernel, &used);
                };
                st = call();  // warm-up (and the shared-memory attribute)
                if (st.ok()) st = s.synchronize("gpu_backward warm-up");
                const auto t0 = std::chrono::steady_clock::now();
                for (int c = 0; c < calls && st.ok(); ++c) st = call();
                if (st.ok()) st = s.synchronize("gpu_backward timed calls");
                const double secs =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                    calls;
                if (!st.ok()) {
                    skipped(st.to_string());
                    continue;
                }
                std::printf(
                    "{\"case\": \"gpu_backward\", \"device\": \"%s\", \"model\": \"%s\", "
                    "\"kernel\": \"%s\", \"dtype\": \"bf16\", \"t\": %lld, \"hq\": %d, "
                    "\"hkv\": %d, \"d\": %d, \"causal\": true, \"seconds\": %.6f, "
                    "\"tflops\": %.1f, \"sdpa_tflops\": null, \"ratio\": null, \"note\": "
                    "\"ratio against sdpa_baseline.py's sdpa_backward (deploy/gpu/run.sh)\"}\n",
                    devices[0].name.c_str(), sh.model, cuda::attention_backward_kernel_name(used),
                    static_cast<long long>(t), sh.hq, sh.hkv, sh.d, secs, flops / secs / 1e12);
                std::fflush(stdout);
            }
        }
    }
}

}  // namespace tandem::kernels
