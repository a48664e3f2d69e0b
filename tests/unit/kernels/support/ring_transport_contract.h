#pragma once

// The contract suite every RingTransport backend runs (kernels/ring/ring_transport.h states the
// contract). Include this header in exactly one .cc of a test binary, then instantiate it:
//
//   INSTANTIATE_TEST_SUITE_P(InProcess, RingTransportContract,
//                            ::testing::Values(RingContractParam{"in_process", make_world, 8}),
//                            ring_contract_name);
//
// Ranks run on their own threads; every wait carries a timeout, so a broken backend fails
// instead of hanging.

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernels/ring/in_process_transport.h"
#include "kernels/ring/ring_attention.h"
#include "kernels/ring/ring_transport.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels::testkit {

// The ranks of one ring plus memory its transport can shift.
class RingWorld {
public:
    virtual ~RingWorld() = default;
    virtual int size() const = 0;
    virtual RingTransport& rank(int r) = 0;
    // Called first on each rank's thread (a GPU world selects the rank's device here).
    virtual void enter_rank_thread(int) {}
    // Memory of the transport's kind for rank r, freed with the world; and host copies.
    virtual void* alloc(int r, size_t bytes) = 0;
    virtual void upload(int r, void* dst, const void* host, size_t bytes) = 0;
    virtual void download(int r, void* host, const void* src, size_t bytes) = 0;
};

// A world over host-memory transports.
class HostRingWorld : public RingWorld {
public:
    explicit HostRingWorld(std::vector<std::unique_ptr<RingTransport>> ranks)
        : ranks_(std::move(ranks)) {}
    int size() const override { return static_cast<int>(ranks_.size()); }
    RingTransport& rank(int r) override { return *ranks_[r]; }
    void* alloc(int, size_t bytes) override {
        std::lock_guard<std::mutex> lock(mu_);  // ranks allocate from their own threads
        buffers_.push_back(std::make_unique<char[]>(bytes > 0 ? bytes : 1));
        return buffers_.back().get();
    }
    void upload(int, void* dst, const void* host, size_t bytes) override {
        std::memcpy(dst, host, bytes);
    }
    void download(int, void* host, const void* src, size_t bytes) override {
        std::memcpy(host, src, bytes);
    }

private:
    // Declared first, so destroyed last: buffers outlive the transports that may reference them.
    std::mutex mu_;  // guards buffers_
    std::vector<std::unique_ptr<char[]>> buffers_;
    std::vector<std::unique_ptr<RingTransport>> ranks_;
};

struct RingContractParam {
    std::string name;
    std::function<Result<std::unique_ptr<RingWorld>>(int size)> make_world;
    int max_ranks = 4;
    // Non-empty: the reason this backend cannot run here (no device, ...); the suite skips.
    std::function<std::string()> skip_reason = [] { return std::string(); };
};

inline void PrintTo(const RingContractParam& param, std::ostream* os) { *os << param.name; }

inline std::string ring_contract_name(const ::testing::TestParamInfo<RingContractParam>& info) {
    return info.param.name;
}

class RingTransportContract : public ::testing::TestWithParam<RingContractParam> {
protected:
    void SetUp() override {
        const std::string why = GetParam().skip_reason();
        if (!why.empty()) GTEST_SKIP() << why;
    }

    std::unique_ptr<RingWorld> world(int size) {
        auto w = GetParam().make_world(size);
        EXPECT_TRUE(w.ok()) << w.status().to_string();
        return w.ok() ? std::move(w).value() : nullptr;
    }

    std::vector<int> sizes() const {
        std::vector<int> out;
        for (int p : {1, 2, 3, 4, 8}) {
            if (p <= GetParam().max_ranks) out.push_back(p);
        }
        return out;
    }

    // Runs body(rank) on one thread per rank and returns every rank's status.
    static std::vector<Status> run_ranks(RingWorld& w, const std::function<Status(int)>& body) {
        std::vector<Status> out(static_cast<size_t>(w.size()));
        std::vector<std::thread> threads;
        for (int r = 0; r < w.size(); ++r) {
            threads.emplace_back([&, r] {
                w.enter_rank_thread(r);
                out[r] = body(r);
            });
        }
        for (auto& t : threads) t.join();
        return out;
    }

    static void expect_all_ok(const std::vector<Status>& statuses) {
        for (size_t r = 0; r < statuses.size(); ++r) {
            EXPECT_TRUE(statuses[r].ok()) << "rank " << r << ": " << statuses[r].to_string();
        }
    }

    static std::vector<uint8_t> pattern(int rank, uint32_t salt, size_t bytes) {
        std::vector<uint8_t> out(bytes);
        for (size_t i = 0; i < bytes; ++i) {
            out[i] = static_cast<uint8_t>((i * 131 + rank * 17 + salt * 7) >> (i % 3));
        }
        return out;
    }

    static constexpr std::chrono::milliseconds kTimeout{20000};
};

TEST_P(RingTransportContract, ReportsItsCapabilitiesAndPlaceInTheRing) {
    for (int p : sizes()) {
        auto w = world(p);
        ASSERT_TRUE(w);
        for (int r = 0; r < p; ++r) {
            EXPECT_EQ(w->rank(r).rank(), r);
            EXPECT_EQ(w->rank(r).size(), p);
            const RingCaps caps = w->rank(r).caps();
            EXPECT_FALSE(caps.name.empty());
            EXPECT_GE(caps.max_in_flight, 2);
        }
    }
}

TEST_P(RingTransportContract, ShiftDeliversThePreviousRanksBytes) {
    for (int p : sizes()) {
        for (size_t bytes : {size_t{1000}, size_t{1} << 20}) {
            SCOPED_TRACE("ranks " + std::to_string(p) + " bytes " + std::to_string(bytes));
            auto w = world(p);
            ASSERT_TRUE(w);
            std::vector<std::vector<uint8_t>> got(static_cast<size_t>(p));
            expect_all_ok(run_ranks(*w, [&](int r) -> Status {
                RingTransport& t = w->rank(r);
                void* send = w->alloc(r, bytes);
                void* recv = w->alloc(r, bytes);
                const auto mine = pattern(r, 0, bytes);
                w->upload(r, send, mine.data(), bytes);
                TANDEM_RETURN_IF_ERROR(t.prepare(send, bytes));
                TANDEM_ASSIGN_OR_RETURN(RingRequest req, t.post_shift(0, send, recv, bytes));
                TANDEM_RETURN_IF_ERROR(t.wait(req, kTimeout));
                got[r].resize(bytes);
                w->download(r, got[r].data(), recv, bytes);
                return t.flush(kTimeout);
            }));
            for (int r = 0; r < p; ++r) {
                EXPECT_TRUE(got[r] == pattern((r - 1 + p) % p, 0, bytes)) << "rank " << r;
            }
        }
    }
}

TEST_P(RingTransportContract, ShiftsMatchInPostOrderAcrossChannels) {
    const int p = std::min(3, GetParam().max_ranks);
    auto w = world(p);
    ASSERT_TRUE(w);
    // (channel, bytes) in post order; waited in reverse order.
    const std::vector<std::pair<uint32_t, size_t>> shifts = {
        {0, 100}, {1, 65536}, {0, 3}, {2, 4096}, {1, 7}};
    std::vector<std::vector<std::vector<uint8_t>>> got(static_cast<size_t>(p));
    expect_all_ok(run_ranks(*w, [&](int r) -> Status {
        RingTransport& t = w->rank(r);
        std::vector<RingRequest> reqs;
        std::vector<void*> recvs;
        for (size_t i = 0; i < shifts.size(); ++i) {
            const auto [channel, bytes] = shifts[i];
            void* send = w->alloc(r, bytes);
            void* recv = w->alloc(r, bytes);
            const auto mine = pattern(r, static_cast<uint32_t>(i), bytes);
            w->upload(r, send, mine.data(), bytes);
            TANDEM_ASSIGN_OR_RETURN(RingRequest req, t.post_shift(channel, send, recv, bytes));
            reqs.push_back(req);
            recvs.push_back(recv);
        }
        got[r].resize(shifts.size());
        for (size_t i = shifts.size(); i-- > 0;) {
            TANDEM_RETURN_IF_ERROR(t.wait(reqs[i], kTimeout));
            got[r][i].resize(shifts[i].second);
            w->download(r, got[r][i].data(), recvs[i], shifts[i].second);
        }
        return Status();
    }));
    for (int r = 0; r < p; ++r) {
        for (size_t i = 0; i < shifts.size(); ++i) {
            EXPECT_TRUE(got[r][i] ==
                        pattern((r - 1 + p) % p, static_cast<uint32_t>(i), shifts[i].second))
                << "rank " << r << " shift " << i;
        }
    }
}

TEST_P(RingTransportContract, ABufferComesHomeAfterSizeShifts) {
    for (int p : sizes()) {
        auto w = world(p);
        ASSERT_TRUE(w);
        const size_t bytes = 4096;
        std::vector<std::vector<uint8_t>> got(static_cast<size_t>(p));
        expect_all_ok(run_ranks(*w, [&](int r) -> Status {
            RingTransport& t = w->rank(r);
            void* buf[2] = {w->alloc(r, bytes), w->alloc(r, bytes)};
            const auto mine = pattern(r, 9, bytes);
            w->upload(r, buf[0], mine.data(), bytes);
            int cur = 0;
            for (int s = 0; s < p; ++s) {
                TANDEM_ASSIGN_OR_RETURN(RingRequest req,
                                        t.post_shift(0, buf[cur], buf[1 - cur], bytes));
                TANDEM_RETURN_IF_ERROR(t.wait(req, kTimeout));
                cur = 1 - cur;
            }
            got[r].resize(bytes);
            w->download(r, got[r].data(), buf[cur], bytes);
            return Status();
        }));
        for (int r = 0; r < p; ++r) EXPECT_TRUE(got[r] == pattern(r, 9, bytes)) << "rank " << r;
    }
}

TEST_P(RingTransportContract, WaitTimesOutThenCompletesOnceTheNeighbourPosts) {
    if (GetParam().max_ranks < 2) GTEST_SKIP() << "needs two ranks";
    auto w = world(2);
    ASSERT_TRUE(w);
    std::latch timed_out(1);
    const size_t bytes = 256;
    std::vector<uint8_t> got0(bytes), got1(bytes);
    expect_all_ok(run_ranks(*w, [&](int r) -> Status {
        RingTransport& t = w->rank(r);
        void* send = w->alloc(r, bytes);
        void* recv = w->alloc(r, bytes);
        const auto mine = pattern(r, 1, bytes);
        w->upload(r, send, mine.data(), bytes);
        if (r == 0) {
            TANDEM_ASSIGN_OR_RETURN(RingRequest req, t.post_shift(0, send, recv, bytes));
            const Status early = t.wait(req, std::chrono::milliseconds(30));
            timed_out.count_down();
            if (early.code() != StatusCode::kDeadlineExceeded) {
                return internal_error("expected deadline_exceeded, got " + early.to_string());
            }
            TANDEM_RETURN_IF_ERROR(t.wait(req, kTimeout));
            w->download(r, got0.data(), recv, bytes);
        } else {
            timed_out.wait();
            TANDEM_ASSIGN_OR_RETURN(RingRequest req, t.post_shift(0, send, recv, bytes));
            TANDEM_RETURN_IF_ERROR(t.wait(req, kTimeout));
            w->download(r, got1.data(), recv, bytes);
        }
        return Status();
    }));
    EXPECT_TRUE(got0 == pattern(1, 1, bytes));
    EXPECT_TRUE(got1 == pattern(0, 1, bytes));
}

TEST_P(RingTransportContract, PollReportsCompletion) {
    const int p = std::min(2, GetParam().max_ranks);
    auto w = world(p);
    ASSERT_TRUE(w);
    expect_all_ok(run_ranks(*w, [&](int r) -> Status {
        RingTransport& t = w->rank(r);
        const size_t bytes = 2048;
        void* send = w->alloc(r, bytes);
        void* recv = w->alloc(r, bytes);
        TANDEM_ASSIGN_OR_RETURN(RingRequest req, t.post_shift(5, send, recv, bytes));
        const auto deadline = std::chrono::steady_clock::now() + kTimeout;
        for (;;) {
            TANDEM_ASSIGN_OR_RETURN(bool done, t.poll(req));
            if (done) return Status();
            if (std::chrono::steady_clock::now() > deadline) {
                return deadline_exceeded("poll never reported completion");
            }
            std::this_thread::yield();
        }
    }));
}

// Stream ordering (the device ring's hooks): a device-memory transport accepts order_after and
// order_before on the legacy default stream around a shift that still delivers; a host-memory
// one refuses both with invalid_argument naming itself, and its shift is unaffected.
TEST_P(RingTransportContract, StreamOrderingFollowsTheMemoryKind) {
    const int p = std::min(2, GetParam().max_ranks);
    auto w = world(p);
    ASSERT_TRUE(w);
    const bool device = w->rank(0).caps().memory == RingMemory::kCuda;
    std::vector<std::vector<uint8_t>> got(static_cast<size_t>(p));
    expect_all_ok(run_ranks(*w, [&](int r) -> Status {
        RingTransport& t = w->rank(r);
        const size_t bytes = 4096;
        void* send = w->alloc(r, bytes);
        void* recv = w->alloc(r, bytes);
        const auto mine = pattern(r, 3, bytes);
        w->upload(r, send, mine.data(), bytes);
        const Status after = t.order_after(nullptr);
        TANDEM_ASSIGN_OR_RETURN(RingRequest req, t.post_shift(4, send, recv, bytes));
        const Status before = t.order_before(req, nullptr);
        for (const Status& s : {after, before}) {
            if (device && !s.ok()) return s;
            if (!device && (s.code() != StatusCode::kInvalidArgument ||
                            s.message().find(t.caps().name) == std::string::npos)) {
                return internal_error("a host transport should refuse stream ordering, got " +
                                      s.to_string());
            }
        }
        TANDEM_RETURN_IF_ERROR(t.wait(req, kTimeout));
        got[r].resize(bytes);
        w->download(r, got[r].data(), recv, bytes);
        return t.flush(kTimeout);
    }));
    for (int r = 0; r < p; ++r) {
        EXPECT_TRUE(got[r] == pattern((r - 1 + p) % p, 3, got[r].size())) << "rank " << r;
    }
}

TEST_P(RingTransportContract, RingAttentionOverThisTransportMatchesTheReference) {
    const int p = std::min(3, GetParam().max_ranks);
    auto w = world(p);
    ASSERT_TRUE(w);
    if (w->rank(0).caps().memory != RingMemory::kHost) {
        GTEST_SKIP() << "ring attention runs on the CPU; " << w->rank(0).caps().name
                     << " moves device memory";
    }
    RingAttentionConfig cfg;
    cfg.seq_len = 37;
    cfg.hq = 4;
    cfg.hkv = 2;
    cfg.d = 8;
    cfg.scale = 0.4f;
    cfg.causal = true;
    cfg.layout = RingLayout::kZigzag;
    cfg.timeout = kTimeout;
    AttentionParams full;
    full.tq = full.tk = cfg.seq_len;
    full.hq = cfg.hq;
    full.hkv = cfg.hkv;
    full.d = cfg.d;
    full.scale = cfg.scale;
    full.causal = true;
    const auto in = make_inputs(full, test_seed());
    const auto ref = reference_forward(full, in.qd, in.kd, in.vd);
    std::vector<float> o(in.q.size()), lse(static_cast<size_t>(full.hq * full.tq));
    const int64_t qrow = cfg.hq * cfg.d, kvrow = cfg.hkv * cfg.d;
    expect_all_ok(run_ranks(*w, [&](int r) -> Status {
        TANDEM_ASSIGN_OR_RETURN(auto ring, RingAttention::create(cfg, w->rank(r)));
        const RingShard& sh = ring->shard();
        std::vector<float> q(sh.rows * qrow), k(sh.rows * kvrow), v(sh.rows * kvrow);
        std::vector<float> lo(sh.rows * qrow), ll(sh.rows * cfg.hq);
        gather_rows(sh, in.q.data(), qrow, q.data());
        gather_rows(sh, in.k.data(), kvrow, k.data());
        gather_rows(sh, in.v.data(), kvrow, v.data());
        TANDEM_RETURN_IF_ERROR(ring->forward(q.data(), k.data(), v.data(), lo.data(), ll.data()));
        scatter_rows(sh, lo.data(), qrow, o.data());  // disjoint rows per rank
        scatter_lse(sh, ll.data(), cfg.hq, cfg.seq_len, lse.data());
        return Status();
    }));
    EXPECT_TRUE(all_close(o, ref.o, 1e-5, 1e-5, "o"));
    EXPECT_TRUE(all_close(lse, ref.lse, 1e-5, 1e-5, "lse"));
}

}  // namespace tandem::kernels::testkit
