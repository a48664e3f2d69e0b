// The device ring's schedule (kernels/ring/device_ring.h) on the CPU: the host fake of
// RingDeviceOps (tests/fakes/host_ring_ops.h) over an in-process ring that claims device memory.
// The fake runs the same CPU kernels in the same order as the CPU ring, so prefill and decode
// must equal RingAttention and sharded_decode_attend bitwise; the double reference bounds both
// (|err| <= 1e-5 + 1e-5 |ref|, fp32). Also: the order of stream ordering calls, shifts and block
// attention (what keeps NCCL shifts overlapped and race-free), host staging, and the errors.
// The transport choice from a placement (kernels/ring/ring_select.h) is tested at the end.
#include "kernels/ring/device_ring.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "kernels/ring/in_process_runner.h"
#include "kernels/ring/in_process_transport.h"
#include "kernels/ring/ring_select.h"
#include "tests/fakes/host_ring_ops.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using fakes::HostRingOps;
using fakes::LoggingTransport;
using fakes::OrderLog;
using testkit::all_close;
using testkit::random_floats;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_double;

constexpr std::chrono::milliseconds kTimeout{20000};

InProcessRingOptions device_claim() {
    InProcessRingOptions o;
    o.memory = RingMemory::kCuda;
    o.name = "in_process_device_fake";
    o.order_timeout = kTimeout;
    return o;
}

RingAttentionConfig config(int64_t t, bool causal, RingLayout layout) {
    RingAttentionConfig c;
    c.seq_len = t;
    c.hq = 4;
    c.hkv = 2;
    c.d = 16;
    c.scale = default_softmax_scale(16);
    c.causal = causal;
    c.layout = layout;
    c.timeout = kTimeout;
    return c;
}

struct FullOut {
    std::vector<float> o, lse;
};

// Runs the device ring on `ranks` threads over `transports` (wrapped by `wrap` when given).
FullOut run_device_ring(const RingAttentionConfig& c, int ranks, const std::vector<float>& q,
                        const std::vector<float>& k, const std::vector<float>& v,
                        OrderLog* log = nullptr, bool staged = false) {
    auto transports =
        staged ? make_in_process_ring(ranks) : make_in_process_ring(ranks, device_claim());
    FullOut out{std::vector<float>(q.size()),
                std::vector<float>(static_cast<size_t>(c.hq * c.seq_len))};
    const int64_t qrow = c.hq * c.d, kvrow = c.hkv * c.d;
    std::vector<Status> status(ranks);
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
        threads.emplace_back([&, r] {
            HostRingOps ops(r, log);
            RingTransport* t = transports[r].get();
            std::unique_ptr<RingTransport> staging, logging;
            if (staged) {
                staging = make_host_staged_ring(*t, ops);
                t = staging.get();
            }
            if (log) {
                logging = std::make_unique<LoggingTransport>(*t, *log);
                t = logging.get();
            }
            auto ring = DeviceRingAttention::create(c, *t, ops);
            if (!ring.ok()) {
                status[r] = ring.status();
                return;
            }
            const RingShard& sh = (*ring)->shard();
            std::vector<float> lq(sh.rows * qrow), lk(sh.rows * kvrow), lv(sh.rows * kvrow);
            std::vector<float> lo(sh.rows * qrow), llse(sh.rows * c.hq);
            gather_rows(sh, q.data(), qrow, lq.data());
            gather_rows(sh, k.data(), kvrow, lk.data());
            gather_rows(sh, v.data(), kvrow, lv.data());
            status[r] = (*ring)->forward(lq.data(), lk.data(), lv.data(), lo.data(), llse.data());
            scatter_rows(sh, lo.data(), qrow, out.o.data());
            scatter_lse(sh, llse.data(), c.hq, c.seq_len, out.lse.data());
        });
    }
    for (auto& th : threads) th.join();
    for (int r = 0; r < ranks; ++r)
        EXPECT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r].to_string();
    return out;
}

TEST(DeviceRingAttention, EqualsTheCpuRingBitwiseAndTheReference) {
    const uint64_t seed = test_seed();
    for (RingLayout layout : {RingLayout::kZigzag, RingLayout::kContiguous}) {
        for (bool causal : {true, false}) {
            for (int ranks : {1, 2, 3, 4}) {
                const RingAttentionConfig c = config(37, causal, layout);
                SCOPED_TRACE(std::string(ring_layout_name(layout)) +
                             " causal=" + std::to_string(causal) + " P=" + std::to_string(ranks) +
                             " seed=" + std::to_string(seed));
                const auto q = random_floats(c.seq_len * c.hq * c.d, seed);
                const auto k = random_floats(c.seq_len * c.hkv * c.d, seed + 1);
                const auto v = random_floats(c.seq_len * c.hkv * c.d, seed + 2);
                const FullOut dev = run_device_ring(c, ranks, q, k, v);
                std::vector<float> o(q.size()), lse(c.hq * c.seq_len);
                ASSERT_TRUE(ring_forward_in_process(c, ranks, RingDrive::kThreads, q.data(),
                                                    k.data(), v.data(), o.data(), lse.data())
                                .ok());
                EXPECT_EQ(0, std::memcmp(o.data(), dev.o.data(), o.size() * sizeof(float)));
                EXPECT_EQ(0, std::memcmp(lse.data(), dev.lse.data(), lse.size() * sizeof(float)));
                AttentionParams p;
                p.tq = p.tk = c.seq_len;
                p.hq = c.hq;
                p.hkv = c.hkv;
                p.d = c.d;
                p.scale = c.scale;
                p.causal = causal;
                const auto ref = reference_forward(p, to_double(q), to_double(k), to_double(v));
                EXPECT_TRUE(all_close(dev.o, ref.o, 1e-5, 1e-5, "o"));
                EXPECT_TRUE(all_close(dev.lse, ref.lse, 1e-5, 1e-5, "lse"));
            }
        }
    }
}

// More ranks than tokens: some shards are empty (no copies, no attention, still shifting).
TEST(DeviceRingAttention, EmptyShardsStillShiftAndMatchTheCpuRing) {
    for (int64_t t : {3, 5, 9}) {
        const RingAttentionConfig c = config(t, true, RingLayout::kZigzag);
        SCOPED_TRACE("T=" + std::to_string(t) + " P=8");
        const auto q = random_floats(c.seq_len * c.hq * c.d, 21);
        const auto k = random_floats(c.seq_len * c.hkv * c.d, 22);
        const auto v = random_floats(c.seq_len * c.hkv * c.d, 23);
        const FullOut dev = run_device_ring(c, 8, q, k, v);
        std::vector<float> o(q.size()), lse(c.hq * c.seq_len);
        ASSERT_TRUE(ring_forward_in_process(c, 8, RingDrive::kThreads, q.data(), k.data(), v.data(),
                                            o.data(), lse.data())
                        .ok());
        EXPECT_EQ(0, std::memcmp(o.data(), dev.o.data(), o.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(lse.data(), dev.lse.data(), lse.size() * sizeof(float)));
    }
}

// Backward: the device schedule over the fake against RingAttention::backward on the same
// local rows, bitwise (dq, dk, dv), for P = 1..4, causal and not, directly on a device-claiming
// ring and through host staging over a host ring; and the double reference bounds it.
TEST(DeviceRingAttention, BackwardEqualsTheCpuRingBitwise) {
    const uint64_t seed = test_seed();
    for (bool staged : {false, true}) {
        for (bool causal : {true, false}) {
            for (int ranks : {1, 2, 3, 4}) {
                const RingAttentionConfig c = config(23, causal, RingLayout::kZigzag);
                SCOPED_TRACE("staged=" + std::to_string(staged) +
                             " causal=" + std::to_string(causal) + " P=" + std::to_string(ranks) +
                             " seed=" + std::to_string(seed));
                const int64_t qrow = c.hq * c.d, kvrow = c.hkv * c.d;
                const auto q = random_floats(c.seq_len * qrow, seed);
                const auto k = random_floats(c.seq_len * kvrow, seed + 1);
                const auto v = random_floats(c.seq_len * kvrow, seed + 2);
                const auto dout = random_floats(c.seq_len * qrow, seed + 3);
                auto dev_ring = staged ? make_in_process_ring(ranks)
                                       : make_in_process_ring(ranks, device_claim());
                auto cpu_ring = make_in_process_ring(ranks);
                std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
                std::vector<Status> status(ranks);
                std::vector<std::thread> threads;
                for (int r = 0; r < ranks; ++r) {
                    threads.emplace_back([&, r] {
                        auto run = [&]() -> Status {
                            HostRingOps ops(r);
                            std::unique_ptr<RingTransport> staging;
                            RingTransport* t = dev_ring[r].get();
                            if (staged) {
                                staging = make_host_staged_ring(*t, ops);
                                t = staging.get();
                            }
                            TANDEM_ASSIGN_OR_RETURN(auto dev,
                                                    DeviceRingAttention::create(c, *t, ops));
                            TANDEM_ASSIGN_OR_RETURN(auto cpu,
                                                    RingAttention::create(c, *cpu_ring[r]));
                            const RingShard& sh = dev->shard();
                            const int64_t n = sh.rows;
                            std::vector<float> lq(n * qrow), lk(n * kvrow), lv(n * kvrow),
                                lg(n * qrow), o(n * qrow), lse(n * c.hq);
                            gather_rows(sh, q.data(), qrow, lq.data());
                            gather_rows(sh, k.data(), kvrow, lk.data());
                            gather_rows(sh, v.data(), kvrow, lv.data());
                            gather_rows(sh, dout.data(), qrow, lg.data());
                            TANDEM_RETURN_IF_ERROR(cpu->forward(lq.data(), lk.data(), lv.data(),
                                                                o.data(), lse.data()));
                            std::vector<float> a_dq(n * qrow), a_dk(n * kvrow), a_dv(n * kvrow);
                            std::vector<float> b_dq(n * qrow), b_dk(n * kvrow), b_dv(n * kvrow);
                            TANDEM_RETURN_IF_ERROR(
                                dev->backward(lq.data(), lk.data(), lv.data(), o.data(), lse.data(),
                                              lg.data(), a_dq.data(), a_dk.data(), a_dv.data()));
                            TANDEM_RETURN_IF_ERROR(
                                cpu->backward(lq.data(), lk.data(), lv.data(), o.data(), lse.data(),
                                              lg.data(), b_dq.data(), b_dk.data(), b_dv.data()));
                            if (a_dq != b_dq || a_dk != b_dk || a_dv != b_dv) {
                                return internal_error("gradients differ from the CPU ring");
                            }
                            scatter_rows(sh, a_dq.data(), qrow, dq.data());
                            scatter_rows(sh, a_dk.data(), kvrow, dk.data());
                            scatter_rows(sh, a_dv.data(), kvrow, dv.data());
                            return Status();
                        };
                        status[r] = run();
                    });
                }
                for (auto& th : threads) th.join();
                for (int r = 0; r < ranks; ++r) {
                    EXPECT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r].to_string();
                }
                AttentionParams p;
                p.tq = p.tk = c.seq_len;
                p.hq = c.hq;
                p.hkv = c.hkv;
                p.d = c.d;
                p.scale = c.scale;
                p.causal = causal;
                const auto ref = testkit::reference_backward(p, to_double(q), to_double(k),
                                                             to_double(v), to_double(dout));
                EXPECT_TRUE(all_close(dq, ref.dq, 1e-5, 1e-5, "dq"));
                EXPECT_TRUE(all_close(dk, ref.dk, 1e-5, 1e-5, "dk"));
                EXPECT_TRUE(all_close(dv, ref.dv, 1e-5, 1e-5, "dv"));
            }
        }
    }
}

// Every shift is posted after order_after (the previous block's attention is enqueued before
// it) and every block after the first is attended only after order_before of the shift that
// brought it; the shift of step s + 1 is posted before the attention of step s (overlap).
TEST(DeviceRingAttention, OrdersShiftsAgainstTheStreamAndOverlapsThem) {
    const int ranks = 3;
    const RingAttentionConfig c = config(24, false, RingLayout::kZigzag);
    const auto q = random_floats(c.seq_len * c.hq * c.d, 1);
    const auto k = random_floats(c.seq_len * c.hkv * c.d, 2);
    OrderLog log(ranks);
    run_device_ring(c, ranks, q, k, k, &log);
    const std::vector<std::string> want = {"order_after",    "post 1",         "attend",
                                           "order_before 1", "order_after",    "post 2",
                                           "attend",         "order_before 2", "attend"};
    for (int r = 0; r < ranks; ++r) EXPECT_EQ(log.by_rank[r], want) << "rank " << r;
}

TEST(DeviceRingAttention, WorksOverAHostTransportThroughHostStaging) {
    const RingAttentionConfig c = config(29, true, RingLayout::kZigzag);
    const auto q = random_floats(c.seq_len * c.hq * c.d, 5);
    const auto k = random_floats(c.seq_len * c.hkv * c.d, 6);
    const auto v = random_floats(c.seq_len * c.hkv * c.d, 7);
    const FullOut staged = run_device_ring(c, 3, q, k, v, nullptr, /*staged=*/true);
    std::vector<float> o(q.size()), lse(c.hq * c.seq_len);
    ASSERT_TRUE(ring_forward_in_process(c, 3, RingDrive::kThreads, q.data(), k.data(), v.data(),
                                        o.data(), lse.data())
                    .ok());
    EXPECT_EQ(0, std::memcmp(o.data(), staged.o.data(), o.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse.data(), staged.lse.data(), lse.size() * sizeof(float)));
}

TEST(DeviceRingAttention, RejectsAHostMemoryTransport) {
    auto transports = make_in_process_ring(1);
    HostRingOps ops;
    auto ring =
        DeviceRingAttention::create(config(8, true, RingLayout::kZigzag), *transports[0], ops);
    ASSERT_FALSE(ring.ok());
    EXPECT_NE(ring.status().message().find("in_process moves host memory"), std::string::npos)
        << ring.status().to_string();
    // And the host transport refuses stream ordering with its name.
    const Status s = transports[0]->order_after(nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("in_process"), std::string::npos) << s.to_string();
}

TEST(DeviceRingAttention, TheCpuRingPointsADeviceTransportToTheDeviceRing) {
    InProcessRingOptions o;
    o.memory = RingMemory::kCuda;
    auto transports = make_in_process_ring(1, o);
    auto ring = RingAttention::create(config(8, true, RingLayout::kZigzag), *transports[0]);
    ASSERT_FALSE(ring.ok());
    EXPECT_NE(ring.status().message().find("DeviceRingAttention"), std::string::npos)
        << ring.status().to_string();
}

TEST(DeviceRingAttention, HostStagingCopiesThroughTheHost) {
    auto transports = make_in_process_ring(1);
    HostRingOps ops;
    auto staged = make_host_staged_ring(*transports[0], ops);
    EXPECT_EQ(staged->caps().memory, RingMemory::kCuda);
    EXPECT_EQ(staged->caps().name, "in_process+host_staging");
    std::vector<float> send = {1, 2, 3}, recv(3);
    auto req = staged->post_shift(kRingChannelKv, send.data(), recv.data(), 12);
    ASSERT_TRUE(req.ok());
    ASSERT_TRUE(staged->order_before(*req, ops.stream()).ok());
    EXPECT_EQ(recv, send);
    ASSERT_TRUE(staged->wait(*req, kTimeout).ok());
    EXPECT_EQ(ops.copies_to_host(), 1);
    EXPECT_EQ(ops.copies_from_host(), 1);
    EXPECT_FALSE(staged->poll(*req).ok());  // released
}

// Decode: DeviceDecodeShard + device_sharded_decode_attend against DecodeShard +
// sharded_decode_attend on the same tokens (prefill stored from the zigzag layout, then appends
// across several blocks), bitwise.
TEST(DeviceShardedDecode, EqualsTheCpuShardedDecodeBitwise) {
    const uint64_t seed = test_seed();
    DecodeConfig dc;
    dc.hq = 4;
    dc.hkv = 2;
    dc.d = 8;
    dc.scale = default_softmax_scale(8);
    dc.block_tokens = 5;
    const int64_t row = dc.hkv * dc.d, qrow = dc.hq * dc.d;
    for (int ranks : {1, 2, 3}) {
        SCOPED_TRACE("P=" + std::to_string(ranks) + " seed=" + std::to_string(seed));
        const int64_t prefill = 19, steps = 9, total = prefill + steps;
        const auto k = random_floats(total * row, seed);
        const auto v = random_floats(total * row, seed + 1);
        const auto q = random_floats(steps * qrow, seed + 2);
        auto host_ring = make_in_process_ring(ranks);
        auto dev_ring = make_in_process_ring(ranks, device_claim());
        std::vector<Status> status(ranks);
        std::vector<std::vector<float>> dev_o(ranks), cpu_o(ranks), dev_lse(ranks), cpu_lse(ranks);
        std::vector<std::thread> threads;
        for (int r = 0; r < ranks; ++r) {
            threads.emplace_back([&, r] {
                auto run = [&]() -> Status {
                    HostRingOps ops(r);
                    TANDEM_ASSIGN_OR_RETURN(auto dev,
                                            DeviceDecodeShard::create(dc, r, ranks, total, ops));
                    TANDEM_ASSIGN_OR_RETURN(auto cpu, DecodeShard::create(dc, r, ranks));
                    const RingShard sh = ring_shard(RingLayout::kZigzag, prefill, ranks, r);
                    for (const auto& seg : sh.segments) {
                        const float* kp = k.data() + seg.pos0 * row;
                        const float* vp = v.data() + seg.pos0 * row;
                        TANDEM_RETURN_IF_ERROR(dev->store(seg.pos0, seg.rows, kp, vp));
                        TANDEM_RETURN_IF_ERROR(cpu.store(seg.pos0, seg.rows, kp, vp));
                    }
                    for (int64_t s = 0; s < steps; ++s) {
                        const int64_t pos = prefill + s;
                        const float* kp = k.data() + pos * row;
                        const float* vp = v.data() + pos * row;
                        TANDEM_RETURN_IF_ERROR(dev->append(pos, 1, kp, vp));
                        TANDEM_RETURN_IF_ERROR(cpu.append(pos, 1, kp, vp));
                        std::vector<float> o1(qrow), l1(dc.hq), o2(qrow), l2(dc.hq);
                        const float* qp = q.data() + s * qrow;
                        TANDEM_RETURN_IF_ERROR(device_sharded_decode_attend(
                            *dev, *dev_ring[r], qp, 1, pos, o1.data(), l1.data(), kTimeout));
                        TANDEM_RETURN_IF_ERROR(sharded_decode_attend(
                            cpu, *host_ring[r], qp, 1, pos, o2.data(), l2.data(), kTimeout));
                        dev_o[r].insert(dev_o[r].end(), o1.begin(), o1.end());
                        cpu_o[r].insert(cpu_o[r].end(), o2.begin(), o2.end());
                        dev_lse[r].insert(dev_lse[r].end(), l1.begin(), l1.end());
                        cpu_lse[r].insert(cpu_lse[r].end(), l2.begin(), l2.end());
                    }
                    if (dev->tokens() != cpu.tokens()) return internal_error("token counts differ");
                    return Status();
                };
                status[r] = run();
            });
        }
        for (auto& th : threads) th.join();
        for (int r = 0; r < ranks; ++r) {
            ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r].to_string();
            EXPECT_EQ(dev_o[r], cpu_o[r]) << "rank " << r;
            EXPECT_EQ(dev_lse[r], cpu_lse[r]) << "rank " << r;
            EXPECT_EQ(dev_o[r], dev_o[0]) << "ranks 0 and " << r << " disagree";
        }
    }
}

TEST(DeviceShardedDecode, NamesCapacityAndRankErrors) {
    DecodeConfig dc;
    dc.hq = 2;
    dc.hkv = 1;
    dc.d = 4;
    dc.scale = 0.5f;
    HostRingOps ops;
    EXPECT_FALSE(DeviceDecodeShard::create(dc, 0, 1, 0, ops).ok());
    EXPECT_FALSE(DeviceDecodeShard::create(dc, 2, 2, 8, ops).ok());
    auto shard = DeviceDecodeShard::create(dc, 0, 1, 3, ops);
    ASSERT_TRUE(shard.ok());
    std::vector<float> kv(4 * 4);
    const Status s = (*shard)->store(0, 4, kv.data(), kv.data());
    EXPECT_NE(s.message().find("exceed the capacity of 3"), std::string::npos) << s.to_string();
    ASSERT_TRUE((*shard)->store(0, 2, kv.data(), kv.data()).ok());
    EXPECT_EQ((*shard)->store(1, 1, kv.data(), kv.data()).code(), StatusCode::kAlreadyExists);
    auto transports = make_in_process_ring(2, device_claim());
    std::vector<float> q(8), o(8), lse(2);
    const Status mismatch = device_sharded_decode_attend(**shard, *transports[1], q.data(), 1, 2,
                                                         o.data(), lse.data(), kTimeout);
    EXPECT_NE(mismatch.message().find("disagree on ranks"), std::string::npos)
        << mismatch.to_string();
}

// ------------------------------------------------------------------------------------------
// Transport choice from the placement.

RingRankPlacement at(const std::string& host, int process, int gpu) {
    return RingRankPlacement{host, process, gpu};
}

TEST(RingSelect, PicksTheTransportForEachPlacement) {
    RingSelectOptions nccl;
    nccl.nccl_available = true;
    RingSelectOptions no_nccl;
    struct Want {
        std::vector<RingRankPlacement> ranks;
        RingSelectOptions options;
        RingBackend backend;
        RingMemory memory;
        bool staging;
    };
    const std::vector<Want> cases = {
        // Threads of one process: in-process, on the CPU or on (shared) GPUs.
        {{at("a", 1, -1), at("a", 1, -1)}, nccl, RingBackend::kInProcess, RingMemory::kHost, false},
        {{at("a", 1, 0), at("a", 1, 0)}, nccl, RingBackend::kInProcess, RingMemory::kCuda, false},
        // One GPU per process on one host: NCCL; without NCCL in the build, staged UCX.
        {{at("a", 1, 0), at("a", 2, 1), at("a", 3, 2)},
         nccl,
         RingBackend::kNccl,
         RingMemory::kCuda,
         false},
        {{at("a", 1, 0), at("a", 2, 1)}, no_nccl, RingBackend::kUcx, RingMemory::kCuda, true},
        // Two processes on one GPU: NCCL refuses duplicate devices.
        {{at("a", 1, 0), at("a", 2, 0)}, nccl, RingBackend::kUcx, RingMemory::kCuda, true},
        // GPUs of several hosts: UCX between hosts, staged.
        {{at("a", 1, 0), at("b", 1, 0)}, nccl, RingBackend::kUcx, RingMemory::kCuda, true},
        // CPU ranks in several processes or hosts: the CPU ring over UCX.
        {{at("a", 1, -1), at("a", 2, -1)}, nccl, RingBackend::kUcx, RingMemory::kHost, false},
        {{at("a", 1, -1), at("b", 1, -1)}, no_nccl, RingBackend::kUcx, RingMemory::kHost, false},
    };
    for (size_t i = 0; i < cases.size(); ++i) {
        auto c = choose_ring_transport(cases[i].ranks, cases[i].options);
        ASSERT_TRUE(c.ok()) << "case " << i << ": " << c.status().to_string();
        EXPECT_EQ(c->backend, cases[i].backend) << "case " << i << ": " << c->reason;
        EXPECT_EQ(c->memory, cases[i].memory) << "case " << i << ": " << c->reason;
        EXPECT_EQ(c->host_staging, cases[i].staging) << "case " << i << ": " << c->reason;
        EXPECT_FALSE(c->reason.empty());
    }
}

TEST(RingSelect, NamesTheRankOfABadPlacement) {
    RingSelectOptions o;
    auto empty = choose_ring_transport({}, o);
    EXPECT_NE(empty.status().message().find("no rank"), std::string::npos);
    auto mixed = choose_ring_transport({at("a", 1, 0), at("a", 2, 1), at("b", 1, -1)}, o);
    ASSERT_FALSE(mixed.ok());
    EXPECT_NE(mixed.status().message().find("rank 2 computes on the CPU"), std::string::npos)
        << mixed.status().to_string();
    auto nameless = choose_ring_transport({at("a", 1, 0), at("", 1, 0)}, o);
    EXPECT_NE(nameless.status().message().find("rank 1 has no host name"), std::string::npos)
        << nameless.status().to_string();
    EXPECT_STREQ(ring_backend_name(RingBackend::kNccl), "nccl");
}

TEST(RingSelect, PlacementsRoundTripThroughTheBootstrapBlob) {
    const RingRankPlacement p = at("node-3.example", 4242, 7);
    auto back = decode_ring_placement(encode_ring_placement(p), 3);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->host, p.host);
    EXPECT_EQ(back->process, p.process);
    EXPECT_EQ(back->gpu, p.gpu);
    auto cpu = decode_ring_placement(encode_ring_placement(at("a", 1, -1)), 0);
    ASSERT_TRUE(cpu.ok());
    EXPECT_EQ(cpu->gpu, -1);
    for (const char* blob : {"", "a\n1", "a\nx\n0", "a\n1\n", "a\n1\n0x"}) {
        auto r = decode_ring_placement(blob, 5);
        ASSERT_FALSE(r.ok()) << blob;
        EXPECT_NE(r.status().message().find("rank 5"), std::string::npos) << r.status().to_string();
    }
}

}  // namespace
}  // namespace tandem::kernels
