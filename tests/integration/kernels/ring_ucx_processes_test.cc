// Ring attention (forward, backward) and sharded decode with every rank in its own process,
// over the UCX transport, bootstrapped over TCP on loopback. The parent forks the ranks before
// touching UCX; each child checks its own rows against the double reference and reports through
// its exit status. Every child arms an alarm, so a hung ring fails the test instead of hanging it.
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/ring/bootstrap.h"
#include "kernels/ring/ring_attention.h"
#include "kernels/ring/sharded_decode.h"
#include "kernels/ring_ucx/ucx_transport.h"
#include "tests/unit/kernels/support/attention_reference.h"
#include "tests/unit/kernels/support/rank_processes.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::make_inputs;
using testkit::random_floats;
using testkit::reference_backward;
using testkit::reference_forward;
using testkit::to_double;

using testkit::kRankTimeout;
using testkit::rank_failed;

// Rows of a full [T, row] double tensor held by `shard`.
std::vector<double> rows_of(const RingShard& shard, const std::vector<double>& full, int64_t row) {
    std::vector<double> out;
    for (const auto& s : shard.segments) {
        out.insert(out.end(), full.begin() + s.pos0 * row, full.begin() + (s.pos0 + s.rows) * row);
    }
    return out;
}

std::vector<double> lse_of(const RingShard& shard, const std::vector<double>& full, int heads,
                           int64_t t) {
    std::vector<double> out;
    for (int h = 0; h < heads; ++h) {
        for (const auto& s : shard.segments) {
            out.insert(out.end(), full.begin() + h * t + s.pos0,
                       full.begin() + h * t + s.pos0 + s.rows);
        }
    }
    return out;
}

// One rank's whole life; returns the process exit status.
int rank_main(int rank, int ranks, int port, int listen_fd, uint32_t seed) {
    alarm(90);  // watchdog: SIGALRM kills a hung rank
    TcpBootstrapOptions bo;
    bo.rank = rank;
    bo.size = ranks;
    bo.port = port;
    bo.listen_fd = rank == 0 ? listen_fd : -1;
    if (rank != 0) ::close(listen_fd);
    auto bootstrap = make_tcp_bootstrap(bo);
    if (!bootstrap.ok()) return rank_failed(rank, bootstrap.status().to_string());
    auto transport = make_ucx_ring_transport(**bootstrap);
    if (!transport.ok()) return rank_failed(rank, transport.status().to_string());

    RingAttentionConfig cfg;
    cfg.seq_len = 53;
    cfg.hq = 6;
    cfg.hkv = 2;
    cfg.d = 16;
    cfg.scale = default_softmax_scale(16);
    cfg.causal = true;
    cfg.layout = RingLayout::kZigzag;
    cfg.timeout = kRankTimeout;
    AttentionParams full;
    full.tq = full.tk = cfg.seq_len;
    full.hq = cfg.hq;
    full.hkv = cfg.hkv;
    full.d = cfg.d;
    full.scale = cfg.scale;
    full.causal = true;
    const auto in = make_inputs(full, seed);  // every rank derives the same inputs
    const auto dout = random_floats(in.q.size(), seed + 7);
    const auto ref = reference_forward(full, in.qd, in.kd, in.vd);
    const auto grads = reference_backward(full, in.qd, in.kd, in.vd, to_double(dout));

    auto ring = RingAttention::create(cfg, **transport);
    if (!ring.ok()) return rank_failed(rank, ring.status().to_string());
    const RingShard& sh = (*ring)->shard();
    const int64_t qrow = cfg.hq * cfg.d, kvrow = cfg.hkv * cfg.d;
    std::vector<float> q(sh.rows * qrow), k(sh.rows * kvrow), v(sh.rows * kvrow), g(sh.rows * qrow),
        o(sh.rows * qrow), lse(sh.rows * cfg.hq), dq(sh.rows * qrow), dk(sh.rows * kvrow),
        dv(sh.rows * kvrow);
    gather_rows(sh, in.q.data(), qrow, q.data());
    gather_rows(sh, in.k.data(), kvrow, k.data());
    gather_rows(sh, in.v.data(), kvrow, v.data());
    gather_rows(sh, dout.data(), qrow, g.data());
    Status s = (*ring)->forward(q.data(), k.data(), v.data(), o.data(), lse.data());
    if (!s.ok()) return rank_failed(rank, s.to_string());
    s = (*ring)->backward(q.data(), k.data(), v.data(), o.data(), lse.data(), g.data(), dq.data(),
                          dk.data(), dv.data());
    if (!s.ok()) return rank_failed(rank, s.to_string());
    const std::pair<const std::vector<float>*, std::vector<double>> checks[] = {
        {&o, rows_of(sh, ref.o, qrow)},
        {&lse, lse_of(sh, ref.lse, cfg.hq, cfg.seq_len)},
        {&dq, rows_of(sh, grads.dq, qrow)},
        {&dk, rows_of(sh, grads.dk, kvrow)},
        {&dv, rows_of(sh, grads.dv, kvrow)}};
    for (const auto& [got, want] : checks) {
        const auto r = all_close(*got, want, 1e-5, 1e-5, "ring over ucx");
        if (!r) return rank_failed(rank, r.message());
    }

    // Sharded decode on the prefill's K/V plus three new tokens.
    DecodeConfig dc;
    dc.hq = cfg.hq;
    dc.hkv = cfg.hkv;
    dc.d = cfg.d;
    dc.scale = cfg.scale;
    dc.block_tokens = 2;
    auto shard = DecodeShard::create(dc, rank, ranks);
    if (!shard.ok()) return rank_failed(rank, shard.status().to_string());
    for (const auto& seg : sh.segments) {
        s = shard->store(seg.pos0, seg.rows, k.data() + seg.local0 * kvrow,
                         v.data() + seg.local0 * kvrow);
        if (!s.ok()) return rank_failed(rank, s.to_string());
    }
    const auto nk = random_floats(3 * kvrow, seed + 11), nv = random_floats(3 * kvrow, seed + 12);
    const auto nq = random_floats(3 * qrow, seed + 13);
    s = shard->append(cfg.seq_len, 3, nk.data(), nv.data());
    if (!s.ok()) return rank_failed(rank, s.to_string());
    std::vector<float> dec_o(3 * qrow), dec_lse(3 * cfg.hq);
    s = sharded_decode_attend(*shard, **transport, nq.data(), 3, cfg.seq_len, dec_o.data(),
                              dec_lse.data(), kRankTimeout);
    if (!s.ok()) return rank_failed(rank, s.to_string());
    AttentionParams dp = full;
    dp.tq = 3;
    dp.tk = cfg.seq_len + 3;
    dp.q_pos0 = cfg.seq_len;
    auto all_k = in.kd, all_v = in.vd;
    all_k.insert(all_k.end(), nk.begin(), nk.end());
    all_v.insert(all_v.end(), nv.begin(), nv.end());
    const auto dref = reference_forward(dp, to_double(nq), all_k, all_v);
    auto r = all_close(dec_o, dref.o, 1e-5, 1e-5, "decode o over ucx");
    if (!r) return rank_failed(rank, r.message());
    r = all_close(dec_lse, dref.lse, 1e-5, 1e-5, "decode lse over ucx");
    if (!r) return rank_failed(rank, r.message());
    // Everyone must finish its last shift before anyone tears its endpoint down.
    s = (*bootstrap)->barrier(kRankTimeout);
    return s.ok() ? 0 : rank_failed(rank, s.to_string());
}

TEST(UcxRingProcesses, RingAttentionAndDecodeAcrossProcessesMatchTheReference) {
    const uint32_t seed = testkit::test_seed();
    for (int ranks : {2, 3}) {
        testkit::run_rank_processes(
            ranks,
            [&](int rank, int port, int listen_fd) {
                return rank_main(rank, ranks, port, listen_fd, seed);
            },
            "UCX ring (seed " + std::to_string(seed) + ")");
    }
}

}  // namespace
}  // namespace tandem::kernels
