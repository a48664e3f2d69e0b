// The run-time transport choice across processes (kernels/ring/ring_endpoint.h): every rank is a
// forked process with a TCP bootstrap on loopback. Ranks that say they share GPU 0 get UCX behind
// host staging and run the device ring (prefill, then sharded decode) on the host fake of
// RingDeviceOps; CPU ranks get plain UCX and the CPU ring. Each child checks its rows against the
// double reference (|err| <= 1e-5 + 1e-5 |ref|, fp32) and reports through its exit status; an
// alarm kills a hung rank.
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/ring/bootstrap.h"
#include "kernels/ring/device_ring.h"
#include "kernels/ring/ring_endpoint.h"
#include "tests/fakes/host_ring_ops.h"
#include "tests/unit/kernels/support/attention_reference.h"
#include "tests/unit/kernels/support/rank_processes.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::make_inputs;
using testkit::reference_forward;

using testkit::kRankTimeout;
using testkit::rank_failed;

int rank_main(int rank, int ranks, int port, int listen_fd, uint32_t seed, bool on_gpu) {
    alarm(90);
    TcpBootstrapOptions bo;
    bo.rank = rank;
    bo.size = ranks;
    bo.port = port;
    bo.listen_fd = rank == 0 ? listen_fd : -1;
    if (rank != 0) ::close(listen_fd);
    auto bootstrap = make_tcp_bootstrap(bo);
    if (!bootstrap.ok()) return rank_failed(rank, bootstrap.status().to_string());
    fakes::HostRingOps ops(rank);
    RingEndpointOptions eo;
    eo.placement = RingRankPlacement{"host-a", 100 + rank, on_gpu ? 0 : -1};
    eo.ops = &ops;
    auto ep = make_ring_endpoint(**bootstrap, eo);
    if (!ep.ok()) return rank_failed(rank, ep.status().to_string());
    const RingChoice& c = (*ep)->choice;
    if (c.backend != RingBackend::kUcx || c.host_staging != on_gpu) {
        return rank_failed(rank, std::string("unexpected choice ") + ring_backend_name(c.backend) +
                                     ": " + c.reason);
    }
    RingTransport& transport = (*ep)->transport();

    RingAttentionConfig cfg;
    cfg.seq_len = 45;
    cfg.hq = 4;
    cfg.hkv = 2;
    cfg.d = 16;
    cfg.scale = default_softmax_scale(16);
    cfg.causal = true;
    cfg.timeout = kRankTimeout;
    AttentionParams full;
    full.tq = full.tk = cfg.seq_len;
    full.hq = cfg.hq;
    full.hkv = cfg.hkv;
    full.d = cfg.d;
    full.scale = cfg.scale;
    full.causal = true;
    const auto in = make_inputs(full, seed);
    const auto ref = reference_forward(full, in.qd, in.kd, in.vd);
    const RingShard sh = ring_shard(cfg.layout, cfg.seq_len, ranks, rank);
    const int64_t qrow = cfg.hq * cfg.d, kvrow = cfg.hkv * cfg.d;
    std::vector<float> q(sh.rows * qrow), k(sh.rows * kvrow), v(sh.rows * kvrow), o(sh.rows * qrow),
        lse(sh.rows * cfg.hq);
    gather_rows(sh, in.q.data(), qrow, q.data());
    gather_rows(sh, in.k.data(), kvrow, k.data());
    gather_rows(sh, in.v.data(), kvrow, v.data());
    Status s;
    if (on_gpu) {
        auto ring = DeviceRingAttention::create(cfg, transport, ops);
        if (!ring.ok()) return rank_failed(rank, ring.status().to_string());
        s = (*ring)->forward(q.data(), k.data(), v.data(), o.data(), lse.data());
    } else {
        auto ring = RingAttention::create(cfg, transport);
        if (!ring.ok()) return rank_failed(rank, ring.status().to_string());
        s = (*ring)->forward(q.data(), k.data(), v.data(), o.data(), lse.data());
    }
    if (!s.ok()) return rank_failed(rank, s.to_string());
    std::vector<double> want_o, want_lse;
    for (const auto& seg : sh.segments) {
        want_o.insert(want_o.end(), ref.o.begin() + seg.pos0 * qrow,
                      ref.o.begin() + (seg.pos0 + seg.rows) * qrow);
    }
    for (int h = 0; h < cfg.hq; ++h) {
        for (const auto& seg : sh.segments) {
            want_lse.insert(want_lse.end(), ref.lse.begin() + h * cfg.seq_len + seg.pos0,
                            ref.lse.begin() + h * cfg.seq_len + seg.pos0 + seg.rows);
        }
    }
    auto r = all_close(o, want_o, 1e-5, 1e-5, "prefill o");
    if (!r) return rank_failed(rank, r.message());
    r = all_close(lse, want_lse, 1e-5, 1e-5, "prefill lse");
    if (!r) return rank_failed(rank, r.message());

    if (on_gpu) {  // one decode step over the prefill's K/V (the query is the last prefill row's)
        DecodeConfig dc;
        dc.hq = cfg.hq;
        dc.hkv = cfg.hkv;
        dc.d = cfg.d;
        dc.scale = cfg.scale;
        dc.block_tokens = 4;
        auto shard = DeviceDecodeShard::create(dc, rank, ranks, cfg.seq_len, ops);
        if (!shard.ok()) return rank_failed(rank, shard.status().to_string());
        for (const auto& seg : sh.segments) {
            s = (*shard)->store(seg.pos0, seg.rows, k.data() + seg.local0 * kvrow,
                                v.data() + seg.local0 * kvrow);
            if (!s.ok()) return rank_failed(rank, s.to_string());
        }
        const int64_t last = cfg.seq_len - 1;
        std::vector<float> dec_o(qrow), dec_lse(cfg.hq);
        s = device_sharded_decode_attend(**shard, transport, in.q.data() + last * qrow, 1, last,
                                         dec_o.data(), dec_lse.data(), kRankTimeout);
        if (!s.ok()) return rank_failed(rank, s.to_string());
        const std::vector<double> want(ref.o.begin() + last * qrow, ref.o.end());
        r = all_close(dec_o, want, 1e-5, 1e-5, "decode o");
        if (!r) return rank_failed(rank, r.message());
    }
    s = (*bootstrap)->barrier(kRankTimeout);
    return s.ok() ? 0 : rank_failed(rank, s.to_string());
}

TEST(RingEndpointProcesses, ChoosesUcxAndRunsTheRingAcrossProcesses) {
    const uint32_t seed = testkit::test_seed();
    for (const bool on_gpu : {true, false}) {
        for (int ranks : {2, 3}) {
            testkit::run_rank_processes(
                ranks,
                [&](int rank, int port, int listen_fd) {
                    return rank_main(rank, ranks, port, listen_fd, seed, on_gpu);
                },
                std::string(on_gpu ? "staged device ring" : "cpu ring") + " (seed " +
                    std::to_string(seed) + ")");
        }
    }
}

}  // namespace
}  // namespace tandem::kernels
