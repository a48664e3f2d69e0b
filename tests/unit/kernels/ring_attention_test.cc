// Ring attention prefill (forward and backward) over the in-process transport, against the
// double reference on the whole sequence.
//
// Tolerances (fp32, inputs uniform in [-1, 1]): o and lse |err| <= 1e-5 + 1e-5 |ref|;
// gradients |err| <= 1e-5 + 1e-5 |ref| (same as the single-device kernels: the ring only changes
// the order of fp32 sums).
#include "kernels/ring/ring_attention.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "kernels/ring/in_process_transport.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::make_inputs;
using testkit::random_floats;
using testkit::reference_backward;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_double;

constexpr std::chrono::milliseconds kTimeout{20000};

struct Case {
    int64_t t;
    int hq, hkv, d;
    bool causal;
    RingLayout layout;
    int ranks;
};

std::string name(const Case& c) {
    return "T=" + std::to_string(c.t) + " hq=" + std::to_string(c.hq) +
           " hkv=" + std::to_string(c.hkv) + " d=" + std::to_string(c.d) +
           " causal=" + std::to_string(c.causal) + " layout=" + ring_layout_name(c.layout) +
           " P=" + std::to_string(c.ranks) + " seed=" + std::to_string(test_seed());
}

AttentionParams full_params(const Case& c) {
    AttentionParams p;
    p.tq = p.tk = c.t;
    p.hq = c.hq;
    p.hkv = c.hkv;
    p.d = c.d;
    p.scale = default_softmax_scale(c.d);
    p.causal = c.causal;
    return p;
}

RingAttentionConfig config(const Case& c) {
    RingAttentionConfig cfg;
    cfg.seq_len = c.t;
    cfg.hq = c.hq;
    cfg.hkv = c.hkv;
    cfg.d = c.d;
    cfg.scale = default_softmax_scale(c.d);
    cfg.causal = c.causal;
    cfg.layout = c.layout;
    cfg.timeout = kTimeout;
    return cfg;
}

struct Full {
    std::vector<float> o, lse, dq, dk, dv;
};

// Shards full inputs, runs the ring (one thread per rank, or all ranks stepped on this thread),
// and reassembles full outputs. With dout, also runs the backward.
Full run_ring(const Case& c, const std::vector<float>& q, const std::vector<float>& k,
              const std::vector<float>& v, const std::vector<float>* dout, bool stepped) {
    const int64_t qrow = c.hq * c.d, kvrow = c.hkv * c.d;
    Full out{std::vector<float>(q.size()), std::vector<float>(static_cast<size_t>(c.hq * c.t)),
             std::vector<float>(q.size()), std::vector<float>(k.size()),
             std::vector<float>(v.size())};
    auto transports = make_in_process_ring(c.ranks);
    struct Local {
        std::unique_ptr<RingAttention> ring;
        std::vector<float> q, k, v, o, lse, dout, dq, dk, dv;
    };
    std::vector<Local> locals(static_cast<size_t>(c.ranks));
    for (int r = 0; r < c.ranks; ++r) {
        auto ring = RingAttention::create(config(c), *transports[r]);
        EXPECT_TRUE(ring.ok()) << ring.status().to_string();
        if (!ring.ok()) return out;
        Local& l = locals[r];
        l.ring = std::move(ring).value();
        const RingShard& s = l.ring->shard();
        l.q.resize(s.rows * qrow);
        l.o.resize(s.rows * qrow);
        l.dout.resize(s.rows * qrow);
        l.dq.resize(s.rows * qrow);
        l.k.resize(s.rows * kvrow);
        l.v.resize(s.rows * kvrow);
        l.dk.resize(s.rows * kvrow);
        l.dv.resize(s.rows * kvrow);
        l.lse.resize(s.rows * c.hq);
        gather_rows(s, q.data(), qrow, l.q.data());
        gather_rows(s, k.data(), kvrow, l.k.data());
        gather_rows(s, v.data(), kvrow, l.v.data());
        if (dout) gather_rows(s, dout->data(), qrow, l.dout.data());
    }
    auto forward = [&](Local& l) {
        return l.ring->forward(l.q.data(), l.k.data(), l.v.data(), l.o.data(), l.lse.data());
    };
    auto backward = [&](Local& l) {
        return l.ring->backward(l.q.data(), l.k.data(), l.v.data(), l.o.data(), l.lse.data(),
                                l.dout.data(), l.dq.data(), l.dk.data(), l.dv.data());
    };
    if (stepped) {
        std::vector<RingAttention*> ptrs;
        for (auto& l : locals) ptrs.push_back(l.ring.get());
        for (auto& l : locals) {
            EXPECT_TRUE(
                l.ring
                    ->prepare_forward(l.q.data(), l.k.data(), l.v.data(), l.o.data(), l.lse.data())
                    .ok());
        }
        EXPECT_TRUE(run_ring_stepped(ptrs).ok());
        if (dout) {
            for (auto& l : locals) {
                EXPECT_TRUE(l.ring
                                ->prepare_backward(l.q.data(), l.k.data(), l.v.data(), l.o.data(),
                                                   l.lse.data(), l.dout.data(), l.dq.data(),
                                                   l.dk.data(), l.dv.data())
                                .ok());
            }
            EXPECT_TRUE(run_ring_stepped(ptrs).ok());
        }
    } else {
        std::vector<Status> status(static_cast<size_t>(c.ranks));
        std::vector<std::thread> threads;
        for (int r = 0; r < c.ranks; ++r) {
            threads.emplace_back([&, r] {
                status[r] = forward(locals[r]);
                if (status[r].ok() && dout) status[r] = backward(locals[r]);
            });
        }
        for (auto& th : threads) th.join();
        for (int r = 0; r < c.ranks; ++r) {
            EXPECT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r].to_string();
        }
    }
    for (auto& l : locals) {
        const RingShard& s = l.ring->shard();
        scatter_rows(s, l.o.data(), qrow, out.o.data());
        scatter_lse(s, l.lse.data(), c.hq, c.t, out.lse.data());
        scatter_rows(s, l.dq.data(), qrow, out.dq.data());
        scatter_rows(s, l.dk.data(), kvrow, out.dk.data());
        scatter_rows(s, l.dv.data(), kvrow, out.dv.data());
    }
    return out;
}

TEST(RingAttention, ForwardMatchesReferenceForEveryRingSizeAndLayout) {
    int n = 0;
    for (int ranks : {1, 2, 3, 4, 8}) {
        for (RingLayout layout : {RingLayout::kContiguous, RingLayout::kZigzag}) {
            for (bool causal : {false, true}) {
                // Odd head counts, GQA and MQA; lengths not divisible by 2P.
                const Case cases[] = {
                    {std::max<int64_t>(2 * ranks * 5 + 3, 21), 3, 1, 16, causal, layout, ranks},
                    {77, 6, 2, 12, causal, layout, ranks},
                    {50, 5, 5, 8, causal, layout, ranks}};
                for (const Case& c : cases) {
                    SCOPED_TRACE(name(c));
                    const AttentionParams p = full_params(c);
                    const auto in = make_inputs(p, test_seed() + n++);
                    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
                    const Full got = run_ring(c, in.q, in.k, in.v, nullptr, (n % 2) == 0);
                    EXPECT_TRUE(all_close(got.o, ref.o, 1e-5, 1e-5, "o"));
                    EXPECT_TRUE(all_close(got.lse, ref.lse, 1e-5, 1e-5, "lse"));
                }
            }
        }
    }
}

TEST(RingAttention, ShorterSequenceThanRanksLeavesSomeShardsEmpty) {
    const Case c{5, 2, 1, 8, true, RingLayout::kZigzag, 4};  // 8 chunks for 5 tokens
    const AttentionParams p = full_params(c);
    const auto in = make_inputs(p, test_seed());
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    const Full got = run_ring(c, in.q, in.k, in.v, nullptr, false);
    EXPECT_TRUE(all_close(got.o, ref.o, 1e-5, 1e-5, "o"));
    EXPECT_TRUE(all_close(got.lse, ref.lse, 1e-5, 1e-5, "lse"));
}

TEST(RingAttention, ChangingOneRemoteShardChangesTheResult) {
    // Rank 0's queries must see rank 2's keys: non-causal, so every block matters everywhere.
    const Case c{48, 2, 1, 8, false, RingLayout::kContiguous, 3};
    const AttentionParams p = full_params(c);
    auto in = make_inputs(p, test_seed());
    const Full before = run_ring(c, in.q, in.k, in.v, nullptr, false);
    const RingShard remote = ring_shard(c.layout, c.t, c.ranks, 2);
    const RingShard local = ring_shard(c.layout, c.t, c.ranks, 0);
    for (const auto& seg : remote.segments) {
        for (int64_t i = seg.pos0 * c.hkv * c.d; i < (seg.pos0 + seg.rows) * c.hkv * c.d; ++i) {
            in.v[i] += 1.0f;
        }
    }
    const Full after = run_ring(c, in.q, in.k, in.v, nullptr, false);
    const auto ref = reference_forward(p, in.qd, in.kd, to_double(in.v));
    EXPECT_TRUE(all_close(after.o, ref.o, 1e-5, 1e-5, "o after the change"));
    // Every output row of rank 0 moved.
    for (const auto& seg : local.segments) {
        for (int64_t i = seg.pos0; i < seg.pos0 + seg.rows; ++i) {
            const size_t at = static_cast<size_t>(i * c.hq * c.d);
            EXPECT_NE(before.o[at], after.o[at]) << "row " << i;
        }
    }
}

TEST(RingAttention, TwoRunsAndSteppedRunsAreBitwiseIdentical) {
    const Case c{90, 4, 2, 16, true, RingLayout::kZigzag, 4};
    const AttentionParams p = full_params(c);
    const auto in = make_inputs(p, test_seed());
    const auto dout = random_floats(in.q.size(), test_seed() + 1);
    const Full a = run_ring(c, in.q, in.k, in.v, &dout, false);
    const Full b = run_ring(c, in.q, in.k, in.v, &dout, false);
    const Full s = run_ring(c, in.q, in.k, in.v, &dout, true);
    for (const Full* x : {&b, &s}) {
        EXPECT_EQ(0, std::memcmp(a.o.data(), x->o.data(), a.o.size() * 4));
        EXPECT_EQ(0, std::memcmp(a.lse.data(), x->lse.data(), a.lse.size() * 4));
        EXPECT_EQ(0, std::memcmp(a.dq.data(), x->dq.data(), a.dq.size() * 4));
        EXPECT_EQ(0, std::memcmp(a.dk.data(), x->dk.data(), a.dk.size() * 4));
        EXPECT_EQ(0, std::memcmp(a.dv.data(), x->dv.data(), a.dv.size() * 4));
    }
}

TEST(RingAttention, BackwardMatchesReferenceGradients) {
    int n = 0;
    for (int ranks : {1, 2, 3, 4}) {
        for (RingLayout layout : {RingLayout::kContiguous, RingLayout::kZigzag}) {
            for (bool causal : {false, true}) {
                const Case c{45, 6, 2, 8, causal, layout, ranks};
                SCOPED_TRACE(name(c));
                const AttentionParams p = full_params(c);
                const auto in = make_inputs(p, test_seed() + 50 + n);
                const auto dout = random_floats(in.q.size(), test_seed() + 99 + n);
                const auto ref = reference_backward(p, in.qd, in.kd, in.vd, to_double(dout));
                const Full got = run_ring(c, in.q, in.k, in.v, &dout, (n++ % 2) == 1);
                EXPECT_TRUE(all_close(got.dq, ref.dq, 1e-5, 1e-5, "dq"));
                EXPECT_TRUE(all_close(got.dk, ref.dk, 1e-5, 1e-5, "dk"));
                EXPECT_TRUE(all_close(got.dv, ref.dv, 1e-5, 1e-5, "dv"));
            }
        }
    }
}

TEST(RingAttention, RejectsADeviceMemoryTransport) {
    class DeviceOnly final : public RingTransport {
    public:
        RingCaps caps() const override { return {"fake_device", RingMemory::kCuda, 2, false}; }
        int rank() const override { return 0; }
        int size() const override { return 1; }
        Status prepare(void*, size_t) override { return Status(); }
        Result<RingRequest> post_shift(uint32_t, const void*, void*, size_t) override {
            return internal_error("unused");
        }
        Result<bool> poll(RingRequest) override { return internal_error("unused"); }
        Status wait(RingRequest, std::chrono::milliseconds) override { return Status(); }
        Status flush(std::chrono::milliseconds) override { return Status(); }
    } device;
    const Case c{8, 1, 1, 4, false, RingLayout::kZigzag, 1};
    EXPECT_EQ(RingAttention::create(config(c), device).status().code(),
              StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::kernels
