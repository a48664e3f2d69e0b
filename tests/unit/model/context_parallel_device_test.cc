// Device context-parallel generation (common/gpu/context_parallel_device.h) on the CPU: each rank a
// thread with the host fakes of its layer ops and ring ops
// (tests/fakes/host_context_parallel_ops.h, host_ring_ops.h) over an in-process ring that claims
// device memory, or over a host ring behind make_host_staged_ring (the UCX-across-hosts path). The
// fakes run the CPU engine's kernels in the CPU generator's order, so the completions must equal
// model::ContextParallelGenerator's bitwise (tokens, log-probs, finished flags) on every rank; the
// ring's own arithmetic is checked against the double reference in
// tests/unit/kernels/device_ring_test.cc.
#include "common/gpu/context_parallel_device.h"

#include <gtest/gtest.h>

#include <cstring>
#include <ostream>
#include <thread>

#include "common/model/context_parallel.h"
#include "common/model/model_weights.h"
#include "kernels/ring/in_process_transport.h"
#include "tests/fakes/host_context_parallel_ops.h"
#include "tests/unit/model/test_util.h"

namespace tandem::gpu {
namespace {

constexpr std::chrono::milliseconds kTimeout{20000};

// Lengths that split unevenly over 2, 3 and 4 ranks (and over 2P zigzag chunks), a one-token and
// a two-token prompt (no ring prefill; one prefilled row).
std::vector<std::vector<int32_t>> cp_prompts() {
    return model::testing::context_parallel_prompts({23, 37, 1, 2, 30});
}

struct CpRun {
    std::vector<model::ContextParallelGroup> groups;
    model::SamplingOptions so;
    std::vector<int32_t> stop_ids;
    int slots = 0;
};

// Groups of `group` samples per prompt, slots in order.
CpRun make_run(int prompts, int group, uint64_t seed) {
    CpRun run;
    for (int p = 0; p < prompts; ++p) {
        model::ContextParallelGroup g;
        g.prompt = p;
        for (int s = 0; s < group; ++s) g.members.push_back(run.slots++);
        run.groups.push_back(g);
    }
    run.so.temperature = 1.0;
    run.so.top_k = 8;
    run.so.max_new_tokens = 9;
    run.so.seed = seed;
    run.stop_ids = {2};  // ends some samples early
    return run;
}

std::vector<model::Rng> rngs_for(const CpRun& run) {
    std::vector<model::Rng> rngs;
    for (int b = 0; b < run.slots; ++b) rngs.emplace_back(run.so.seed * 1000 + b);
    return rngs;
}

std::vector<model::Completion> cpu_reference(const model::ModelConfig& cfg, const float* params,
                                             const std::vector<std::vector<int32_t>>& ps,
                                             const CpRun& run, int ranks) {
    model::ContextParallelOptions o;
    o.ranks = ranks;
    o.timeout = kTimeout;
    auto gen = model::ContextParallelGenerator::create(cfg, o);
    EXPECT_TRUE(gen.ok()) << gen.status().to_string();
    std::vector<model::Completion> out(static_cast<size_t>(run.slots));
    auto rngs = rngs_for(run);
    const Status s =
        (*gen)->generate(params, ps, run.groups, run.so, run.stop_ids, rngs, out, nullptr);
    EXPECT_TRUE(s.ok()) << s.to_string();
    return out;
}

struct DeviceRun {
    std::vector<std::vector<model::Completion>> out;  // [rank][slot]
    std::vector<Status> status;
    std::vector<model::ContextParallelStats> stats;
    std::vector<int> logits_calls;
};

DeviceRun device_generate(const model::ModelConfig& cfg, const model::ModelWeights& w,
                          const std::vector<std::vector<int32_t>>& ps, const CpRun& run, int ranks,
                          bool staged) {
    kernels::InProcessRingOptions claim;
    claim.memory = kernels::RingMemory::kCuda;
    claim.name = "in_process_device_fake";
    claim.order_timeout = kTimeout;
    auto transports =
        staged ? kernels::make_in_process_ring(ranks) : kernels::make_in_process_ring(ranks, claim);
    DeviceRun res;
    res.out.assign(static_cast<size_t>(ranks),
                   std::vector<model::Completion>(static_cast<size_t>(run.slots)));
    res.status.resize(static_cast<size_t>(ranks));
    res.stats.resize(static_cast<size_t>(ranks));
    res.logits_calls.resize(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
        threads.emplace_back([&, r] {
            fakes::HostContextParallelOps ops(cfg, w.index(), w.data(), r);
            kernels::RingTransport* t = transports[static_cast<size_t>(r)].get();
            std::unique_ptr<kernels::RingTransport> staging;
            if (staged) {
                staging = kernels::make_host_staged_ring(*t, ops.ring());
                t = staging.get();
            }
            DeviceContextParallelOptions o;
            o.timeout = kTimeout;
            auto rank = DeviceContextParallelRank::create(cfg, o, *t, ops);
            if (!rank.ok()) {
                res.status[r] = rank.status();
                return;
            }
            // Only rank 0 draws; the others get streams that would diverge if they were used.
            std::vector<model::Rng> rngs = rngs_for(run);
            if (r != 0) {
                for (auto& g : rngs) g.reseed(777 + r);
            }
            res.status[r] = (*rank)->generate(ps, run.groups, run.so, run.stop_ids, rngs,
                                              res.out[r], &res.stats[r]);
            res.logits_calls[r] = ops.logits_calls();
        });
    }
    for (auto& t : threads) t.join();
    return res;
}

void expect_bitwise(const std::vector<model::Completion>& want,
                    const std::vector<model::Completion>& got, int rank) {
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(want[i].finished, got[i].finished) << "rank " << rank << " completion " << i;
        ASSERT_EQ(want[i].tokens, got[i].tokens) << "rank " << rank << " completion " << i;
        ASSERT_EQ(want[i].logprobs.size(), got[i].logprobs.size());
        for (size_t j = 0; j < want[i].logprobs.size(); ++j) {
            EXPECT_EQ(0, std::memcmp(&want[i].logprobs[j], &got[i].logprobs[j], sizeof(float)))
                << "rank " << rank << " completion " << i << " token " << j << ": "
                << want[i].logprobs[j] << " vs " << got[i].logprobs[j];
        }
    }
}

struct DeviceCpCase {
    int ranks;
    int group;
    bool staged;
};

void PrintTo(const DeviceCpCase& c, std::ostream* os) {
    *os << "{ranks " << c.ranks << ", group " << c.group
        << (c.staged ? ", host-staged ring}" : ", device-memory ring}");
}

class DeviceContextParallel : public ::testing::TestWithParam<DeviceCpCase> {};

TEST_P(DeviceContextParallel, EveryRankReturnsTheCpuGeneratorsCompletionsBitwise) {
    const DeviceCpCase& c = GetParam();
    const model::ModelConfig cfg = model::testing::context_parallel_config();
    auto w = model::ModelWeights::random(cfg, 91, 0.3);
    ASSERT_TRUE(w.ok());
    const auto ps = cp_prompts();
    const CpRun run = make_run(static_cast<int>(ps.size()), c.group, 5 + c.ranks);
    const auto want = cpu_reference(cfg, w->data(), ps, run, c.ranks);
    int64_t generated = 0;
    bool some_finished = false;
    for (const auto& comp : want) {
        generated += static_cast<int64_t>(comp.tokens.size());
        some_finished = some_finished || comp.finished;
    }
    const DeviceRun got = device_generate(cfg, *w, ps, run, c.ranks, c.staged);
    for (int r = 0; r < c.ranks; ++r) {
        ASSERT_TRUE(got.status[r].ok()) << "rank " << r << ": " << got.status[r].to_string();
        expect_bitwise(want, got.out[r], r);
        EXPECT_EQ(got.stats[r].generated_tokens, generated);
        EXPECT_EQ(got.stats[r].sequences, run.slots);
        // Only rank 0 computes logits: one call per decode step plus the first.
        EXPECT_EQ(got.logits_calls[r], r == 0 ? got.stats[r].decode_steps + 1 : 0);
    }
    // The case exercises stops and full-length samples alike.
    EXPECT_TRUE(some_finished);
    // No rank holds more than its quota of any sequence.
    const int64_t quota = (37 + run.so.max_new_tokens + c.ranks - 1) / c.ranks;
    for (int r = 0; r < c.ranks; ++r) EXPECT_LE(got.stats[r].peak_tokens_per_rank, quota);
}

INSTANTIATE_TEST_SUITE_P(Ranks, DeviceContextParallel,
                         ::testing::Values(DeviceCpCase{1, 2, false}, DeviceCpCase{2, 3, false},
                                           DeviceCpCase{3, 2, false}, DeviceCpCase{4, 2, false},
                                           DeviceCpCase{2, 2, true}, DeviceCpCase{3, 1, true}));

TEST(DeviceContextParallelErrors, HostMemoryTransportAndBadInputsAreNamedOnEveryRank) {
    const model::ModelConfig cfg = model::testing::context_parallel_config();
    auto w = model::ModelWeights::random(cfg, 91, 0.3);
    ASSERT_TRUE(w.ok());
    {
        auto host = kernels::make_in_process_ring(1);
        fakes::HostContextParallelOps ops(cfg, w->index(), w->data(), 0);
        auto rank = DeviceContextParallelRank::create(cfg, {}, *host[0], ops);
        ASSERT_FALSE(rank.ok());
        EXPECT_NE(rank.status().message().find("moves host memory"), std::string::npos)
            << rank.status().message();
    }
    // Too long for max_seq_len, and a token outside the vocabulary: refused before any
    // collective, on every rank (none waits for a partner until its timeout).
    auto ps = cp_prompts();
    CpRun run = make_run(2, 1, 3);
    run.so.max_new_tokens = 70;  // 37 + 70 > 96
    DeviceRun got = device_generate(cfg, *w, ps, run, 2, false);
    for (int r = 0; r < 2; ++r) {
        ASSERT_FALSE(got.status[r].ok());
        EXPECT_NE(got.status[r].message().find("prompt 1 has 37 tokens"), std::string::npos)
            << got.status[r].message();
    }
    ps[0][3] = 99;
    run = make_run(1, 1, 3);
    got = device_generate(cfg, *w, ps, run, 2, false);
    for (int r = 0; r < 2; ++r) {
        ASSERT_FALSE(got.status[r].ok());
        EXPECT_NE(got.status[r].message().find("prompt 0 has token 99, outside the vocabulary"),
                  std::string::npos)
            << got.status[r].message();
    }
}

}  // namespace
}  // namespace tandem::gpu
