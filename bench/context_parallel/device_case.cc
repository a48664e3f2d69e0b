// tandem-bench-context-parallel --case device: ring prefill and sharded decode on device memory
// (kernels/ring/device_ring.h) against one device attending the whole context, one attention
// layer at Qwen2.5-0.5B's shape (14 query heads, 2 KV heads, d = 64, bf16, causal, zigzag).
// Ranks are threads: one device each over NCCL when the machine has at least P devices, else all
// on device 0 over the in-process CUDA ring (then the figure is the ring's overhead, not a
// speed-up: the ranks share one GPU). Times are wall clock from the release of every rank's
// thread to the last one's return, each rank's stream synchronised; best of --repeat after a
// warm-up. One JSON object per (T, P):
//   {"case":"context_parallel_device","dtype":"bf16","t":..,"ranks":..,"transport":..,
//    "devices":..,"single_prefill_ms":..,"ring_prefill_ms":..,"prefill_ratio":..,
//    "single_decode_us":..,"ring_decode_us":..,"decode_ratio":..,"max_abs_diff_o":..}
// Without a device: {"case":"context_parallel_device","skipped":true,"reason":...}.
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>
#include <nlohmann/json.hpp>

#include "kernels/cuda/ring_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "kernels/half.h"
#include "kernels/ring/bootstrap.h"
#include "kernels/ring/device_ring.h"
#if TANDEM_BENCH_NCCL
#include "kernels/ring_nccl/nccl_transport.h"
#endif

namespace tandem::bench {
namespace {

using namespace tandem::kernels;
using Clock = std::chrono::steady_clock;

constexpr int kHq = 14, kHkv = 2, kD = 64;
constexpr std::chrono::milliseconds kTimeout{60000};

struct Rank {
    int device = 0;
    std::unique_ptr<cuda::Stream> stream;
    std::unique_ptr<cuda::DeviceAllocator> alloc;
    std::unique_ptr<RingDeviceOps> ops;
    std::vector<std::shared_ptr<void>> held;
    ~Rank() {
        if (stream) (void)stream->synchronize("bench teardown");
        held.clear();
        ops.reset();
    }
};

Result<std::unique_ptr<Rank>> make_rank(int device) {
    auto r = std::make_unique<Rank>();
    r->device = device;
    cudaSetDevice(device);
    TANDEM_ASSIGN_OR_RETURN(r->stream, cuda::Stream::create(device));
    TANDEM_ASSIGN_OR_RETURN(r->alloc, cuda::DeviceAllocator::create(device));
    r->ops = cuda::make_cuda_ring_ops(*r->stream, *r->alloc, DType::kBF16);
    return r;
}

Result<void*> upload(Rank& r, const std::vector<uint16_t>& host) {
    TANDEM_ASSIGN_OR_RETURN(auto buf, r.ops->allocate(host.size() * 2 + 16, "bench input"));
    TANDEM_RETURN_IF_ERROR(r.ops->copy_from_host(buf.get(), host.data(), host.size() * 2));
    r.held.push_back(buf);
    return buf.get();
}

Result<float*> scratch(Rank& r, size_t floats) {
    TANDEM_ASSIGN_OR_RETURN(auto buf, r.ops->allocate(floats * 4 + 16, "bench output"));
    r.held.push_back(buf);
    return static_cast<float*>(buf.get());
}

std::vector<uint16_t> bf16_random(size_t n, uint32_t seed) {
    std::vector<float> v(n);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& f : v) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f = static_cast<float>((x >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
    }
    return round_to_16bit(v, true);
}

// Runs fn(rank) on one thread per rank, all released together by a barrier (thread start-up is
// not timed); returns the time from the release to the last rank's return, or an error.
Result<double> on_ranks(int ranks, const std::function<Status(int)>& fn) {
    std::vector<Status> st(ranks);
    std::vector<Clock::time_point> start(ranks), end(ranks);
    std::barrier go(ranks);
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
        threads.emplace_back([&, r] {
            go.arrive_and_wait();
            start[r] = Clock::now();
            st[r] = fn(r);
            end[r] = Clock::now();
        });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < ranks; ++r) {
        if (!st[r].ok()) return st[r].with_context("rank " + std::to_string(r));
    }
    return std::chrono::duration<double>(*std::max_element(end.begin(), end.end()) -
                                         *std::min_element(start.begin(), start.end()))
        .count();
}

Result<std::vector<std::unique_ptr<RingTransport>>> transports(int ranks, bool nccl) {
#if TANDEM_BENCH_NCCL
    if (nccl) {
        auto group = make_in_process_bootstrap(ranks);
        std::vector<std::unique_ptr<RingTransport>> out(ranks);
        TANDEM_RETURN_IF_ERROR(on_ranks(ranks, [&](int r) -> Status {
            NcclRingOptions o;
            o.device = r;
            TANDEM_ASSIGN_OR_RETURN(out[r], make_nccl_ring_transport(*group[r], o));
            return Status();
        }));
        return out;
    }
#endif
    (void)nccl;
    return cuda::make_cuda_in_process_ring(ranks);
}

Status one_case(int64_t t, int ranks, int repeat, int devices) {
    const bool nccl = TANDEM_BENCH_NCCL && devices >= ranks;
    const auto q = bf16_random(t * kHq * kD, 1), k = bf16_random(t * kHkv * kD, 2),
               v = bf16_random(t * kHkv * kD, 3);
    // One device, whole context.
    TANDEM_ASSIGN_OR_RETURN(auto single, make_rank(0));
    TANDEM_ASSIGN_OR_RETURN(void* sq, upload(*single, q));
    TANDEM_ASSIGN_OR_RETURN(void* sk, upload(*single, k));
    TANDEM_ASSIGN_OR_RETURN(void* sv, upload(*single, v));
    TANDEM_ASSIGN_OR_RETURN(float* so, scratch(*single, t * kHq * kD));
    TANDEM_ASSIGN_OR_RETURN(float* sl, scratch(*single, t * kHq));
    AttentionParams p;
    p.tq = p.tk = t;
    p.hq = kHq;
    p.hkv = kHkv;
    p.d = kD;
    p.scale = default_softmax_scale(kD);
    p.causal = true;
    AttentionParams pd = p;  // decode: the last position's query over the whole context
    pd.tq = 1;
    pd.q_pos0 = t - 1;
    const char* last_q = static_cast<const char*>(sq) + (t - 1) * kHq * kD * 2;
    double single_prefill = 1e30, single_decode = 1e30;
    for (int i = 0; i <= repeat; ++i) {
        auto t0 = Clock::now();
        TANDEM_RETURN_IF_ERROR(single->ops->attend(p, sq, sk, sv, so, sl));
        TANDEM_RETURN_IF_ERROR(single->stream->synchronize("single prefill"));
        if (i > 0) {
            single_prefill =
                std::min(single_prefill, std::chrono::duration<double>(Clock::now() - t0).count());
        }
        t0 = Clock::now();
        TANDEM_RETURN_IF_ERROR(single->ops->attend(pd, last_q, sk, sv, so, sl));
        TANDEM_RETURN_IF_ERROR(single->stream->synchronize("single decode"));
        if (i > 0) {
            single_decode =
                std::min(single_decode, std::chrono::duration<double>(Clock::now() - t0).count());
        }
    }
    std::vector<float> o_single(t * kHq * kD);
    TANDEM_RETURN_IF_ERROR(single->ops->attend(p, sq, sk, sv, so, sl));
    TANDEM_RETURN_IF_ERROR(
        single->ops->copy_to_host(o_single.data(), so, o_single.size() * sizeof(float)));

    // The ring.
    TANDEM_ASSIGN_OR_RETURN(auto ring_t, transports(ranks, nccl));
    RingAttentionConfig cfg;
    cfg.seq_len = t;
    cfg.hq = kHq;
    cfg.hkv = kHkv;
    cfg.d = kD;
    cfg.scale = p.scale;
    cfg.causal = true;
    cfg.timeout = kTimeout;
    DecodeConfig dc;
    dc.hq = kHq;
    dc.hkv = kHkv;
    dc.d = kD;
    dc.scale = p.scale;
    std::vector<std::unique_ptr<Rank>> rk(ranks);
    std::vector<std::unique_ptr<DeviceRingAttention>> rings(ranks);
    std::vector<std::unique_ptr<DeviceDecodeShard>> shards(ranks);
    struct Io {
        void *q, *k, *v, *last_q;
        float *o, *lse, *dec_o, *dec_lse;
    };
    std::vector<Io> io(ranks);
    std::vector<float> o_ring(t * kHq * kD);
    TANDEM_RETURN_IF_ERROR(on_ranks(ranks, [&](int r) -> Status {
        TANDEM_ASSIGN_OR_RETURN(rk[r], make_rank(nccl ? r : 0));
        Rank& me = *rk[r];
        TANDEM_ASSIGN_OR_RETURN(rings[r], DeviceRingAttention::create(cfg, *ring_t[r], *me.ops));
        const RingShard& sh = rings[r]->shard();
        auto rows = [&](const std::vector<uint16_t>& full, int heads) {
            std::vector<uint16_t> out;
            for (const auto& s : sh.segments) {
                out.insert(out.end(), full.begin() + s.pos0 * heads * kD,
                           full.begin() + (s.pos0 + s.rows) * heads * kD);
            }
            return out;
        };
        TANDEM_ASSIGN_OR_RETURN(io[r].q, upload(me, rows(q, kHq)));
        TANDEM_ASSIGN_OR_RETURN(io[r].k, upload(me, rows(k, kHkv)));
        TANDEM_ASSIGN_OR_RETURN(io[r].v, upload(me, rows(v, kHkv)));
        std::vector<uint16_t> lq(q.end() - kHq * kD, q.end());
        TANDEM_ASSIGN_OR_RETURN(io[r].last_q, upload(me, lq));
        TANDEM_ASSIGN_OR_RETURN(io[r].o, scratch(me, sh.rows * kHq * kD));
        TANDEM_ASSIGN_OR_RETURN(io[r].lse, scratch(me, sh.rows * kHq));
        TANDEM_ASSIGN_OR_RETURN(io[r].dec_o, scratch(me, kHq * kD));
        TANDEM_ASSIGN_OR_RETURN(io[r].dec_lse, scratch(me, kHq));
        TANDEM_ASSIGN_OR_RETURN(shards[r], DeviceDecodeShard::create(dc, r, ranks, t, *me.ops));
        const size_t row = kHkv * kD * 2;
        for (const auto& s : sh.segments) {
            TANDEM_RETURN_IF_ERROR(shards[r]->store(s.pos0, s.rows,
                                                    static_cast<char*>(io[r].k) + s.local0 * row,
                                                    static_cast<char*>(io[r].v) + s.local0 * row));
        }
        return me.stream->synchronize("ring setup");
    }));
    double ring_prefill = 1e30, ring_decode = 1e30;
    for (int i = 0; i <= repeat; ++i) {
        TANDEM_ASSIGN_OR_RETURN(double s, on_ranks(ranks, [&](int r) -> Status {
                                    cudaSetDevice(rk[r]->device);
                                    TANDEM_RETURN_IF_ERROR(rings[r]->forward(
                                        io[r].q, io[r].k, io[r].v, io[r].o, io[r].lse));
                                    return rk[r]->stream->synchronize("ring prefill");
                                }));
        if (i > 0) ring_prefill = std::min(ring_prefill, s);
        TANDEM_ASSIGN_OR_RETURN(double d, on_ranks(ranks, [&](int r) -> Status {
                                    cudaSetDevice(rk[r]->device);
                                    TANDEM_RETURN_IF_ERROR(device_sharded_decode_attend(
                                        *shards[r], *ring_t[r], io[r].last_q, 1, t - 1, io[r].dec_o,
                                        io[r].dec_lse, kTimeout));
                                    return rk[r]->stream->synchronize("ring decode");
                                }));
        if (i > 0) ring_decode = std::min(ring_decode, d);
    }
    double max_diff = 0.0;
    for (int r = 0; r < ranks; ++r) {
        const RingShard& sh = rings[r]->shard();
        std::vector<float> local(sh.rows * kHq * kD);
        TANDEM_RETURN_IF_ERROR(
            rk[r]->ops->copy_to_host(local.data(), io[r].o, local.size() * sizeof(float)));
        for (const auto& s : sh.segments) {
            for (int64_t i = 0; i < s.rows * kHq * kD; ++i) {
                const double diff = std::abs(double(local[s.local0 * kHq * kD + i]) -
                                             o_single[s.pos0 * kHq * kD + i]);
                max_diff = std::max(max_diff, diff);
            }
        }
    }
    shards.clear();
    rings.clear();
    rk.clear();
    nlohmann::json j;
    j["case"] = "context_parallel_device";
    j["dtype"] = "bf16";
    j["t"] = t;
    j["hq"] = kHq;
    j["hkv"] = kHkv;
    j["d"] = kD;
    j["ranks"] = ranks;
    j["transport"] = nccl ? "nccl" : "in_process_cuda";
    j["devices"] = devices;
    j["single_prefill_ms"] = single_prefill * 1e3;
    j["ring_prefill_ms"] = ring_prefill * 1e3;
    j["prefill_ratio"] = ring_prefill / single_prefill;
    j["single_decode_us"] = single_decode * 1e6;
    j["ring_decode_us"] = ring_decode * 1e6;
    j["decode_ratio"] = ring_decode / single_decode;
    j["max_abs_diff_o"] = max_diff;
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    return Status();
}

}  // namespace

int run_device_case(bool quick, int repeat) {
    std::string why;
    const auto devs = cuda_devices(&why);
    if (devs.empty()) {
        nlohmann::json j;
        j["case"] = "context_parallel_device";
        j["skipped"] = true;
        j["reason"] = why;
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    const std::vector<int64_t> lengths =
        quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{8192, 32768};
    for (int64_t t : lengths) {
        for (int ranks : {2, 4}) {
            const Status s = one_case(t, ranks, repeat, static_cast<int>(devs.size()));
            if (!s.ok()) {
                std::fprintf(stderr, "context_parallel_device T=%lld P=%d: %s\n",
                             static_cast<long long>(t), ranks, s.to_string().c_str());
                return 1;
            }
        }
    }
    return 0;
}

}  // namespace tandem::bench
