// Context-parallel generation on device ranks (common/gpu/context_parallel_device.h with the CUDA
// layer ops of context_parallel_cuda.h): P = 2 and 3 ranks as threads sharing device 0 (each with
// its own stream, allocator, GEMM and device model) over make_cuda_in_process_ring, greedy, against
// model::ContextParallelGenerator (fp32, CPU) with the same ranks. Tolerances as the device
// generator's greedy test (bf16 weights and K/V): log-probs within 3e-2 + 1e-2 |ref| up to the
// first divergence, which must sit on a near tie of the CPU logits (gap <= 0.16 rms). Every rank
// must return the same completions bitwise (rank 0's broadcast). Prints the observed errors. Skips
// without a device; never run (no device was lent when it was written).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "common/gpu/context_parallel_cuda.h"
#include "common/gpu/context_parallel_device.h"
#include "common/model/context_parallel.h"
#include "common/model/transformer.h"
#include "kernels/cuda/ring_ops.h"
#include "kernels/device.h"
#include "tests/gpu/model_test_util.h"

namespace tandem::gpu {
namespace {

namespace kc = kernels::cuda;

std::vector<model::Completion> run_rank(const model::ModelConfig& c,
                                        const std::vector<float>& params,
                                        kernels::RingTransport& transport,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        const std::vector<model::ContextParallelGroup>& groups,
                                        const model::SamplingOptions& o, int slots, Status* st) {
    std::vector<model::Completion> out(static_cast<size_t>(slots));
    auto fail = [&](const Status& s) {
        *st = s;
        return out;
    };
    auto stream = kc::Stream::create(0);
    if (!stream.ok()) return fail(stream.status());
    auto alloc = kc::DeviceAllocator::create(0);
    if (!alloc.ok()) return fail(alloc.status());
    auto gemm = kc::Gemm::create(**alloc);
    if (!gemm.ok()) return fail(gemm.status());
    auto dm = DeviceModel::create(c, **alloc, **gemm, **stream);
    if (!dm.ok()) return fail(dm.status());
    if (Status s = (*dm)->load(**stream, params.data()); !s.ok()) return fail(s);
    auto ops = make_cuda_context_parallel_ops(**dm, **alloc, **gemm, **stream);
    if (!ops.ok()) return fail(ops.status());
    auto rank = DeviceContextParallelRank::create(c, {}, transport, **ops);
    if (!rank.ok()) return fail(rank.status());
    std::vector<model::Rng> rngs(static_cast<size_t>(slots));
    *st = (*rank)->generate(prompts, groups, o, {}, rngs, out, nullptr);
    if (Status s = (*stream)->synchronize("context parallel test"); st->ok()) *st = s;
    return out;
}

TEST(CudaContextParallel, GreedyTokensMatchTheCpuGeneratorOnEveryRank) {
    std::string why;
    if (kernels::cuda_devices(&why).empty()) GTEST_SKIP() << why;
    int salt = 0;
    for (const testing::Case& cs : testing::cases()) {
        for (const int P : {2, 3}) {
            SCOPED_TRACE(std::string(cs.name) + " P=" + std::to_string(P));
            const model::ModelConfig& c = cs.config;
            auto idx = model::ParamIndex::create(c, model::make_param_layout(c).value());
            ASSERT_TRUE(idx.ok());
            const std::vector<float> params = testing::random_params(*idx, c, 900 + ++salt);
            std::mt19937_64 g(31 + salt);
            const std::vector<std::vector<int32_t>> prompts = {
                testing::random_tokens(5, c.vocab_size, g),
                testing::random_tokens(16, c.vocab_size, g),
                testing::random_tokens(23, c.vocab_size, g)};
            std::vector<model::ContextParallelGroup> groups;
            int slots = 0;
            for (int p = 0; p < 3; ++p) groups.push_back({p, {slots++, slots++}});
            model::SamplingOptions o;
            o.temperature = 0.0;
            o.max_new_tokens = 16;
            model::ContextParallelOptions co;
            co.ranks = P;
            auto cpu = model::ContextParallelGenerator::create(c, co);
            ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
            std::vector<model::Completion> want(static_cast<size_t>(slots));
            std::vector<model::Rng> rngs(static_cast<size_t>(slots));
            ASSERT_TRUE(
                (*cpu)->generate(params.data(), prompts, groups, o, {}, rngs, want, nullptr).ok());
            auto transports = kc::make_cuda_in_process_ring(P);
            std::vector<std::vector<model::Completion>> got(static_cast<size_t>(P));
            std::vector<Status> status(static_cast<size_t>(P));
            std::vector<std::thread> threads;
            for (int r = 0; r < P; ++r) {
                threads.emplace_back([&, r] {
                    got[r] =
                        run_rank(c, params, *transports[r], prompts, groups, o, slots, &status[r]);
                });
            }
            for (auto& t : threads) t.join();
            for (int r = 0; r < P; ++r) {
                ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r].to_string();
            }
            for (int r = 1; r < P; ++r) {
                for (int b = 0; b < slots; ++b) {
                    ASSERT_EQ(got[r][b].tokens, got[0][b].tokens) << "rank " << r << " slot " << b;
                    ASSERT_EQ(0, std::memcmp(got[r][b].logprobs.data(), got[0][b].logprobs.data(),
                                             got[0][b].logprobs.size() * sizeof(float)))
                        << "rank " << r << " slot " << b;
                }
            }
            for (int b = 0; b < slots; ++b) {
                ASSERT_EQ(got[0][b].tokens.size(), want[b].tokens.size()) << "slot " << b;
            }
            // The generator fills slots; the comparison finds each slot's prompt in its Completion.
            for (const auto& gr : groups) {
                for (const int32_t m : gr.members) want[static_cast<size_t>(m)].prompt = gr.prompt;
            }
            const double worst =
                testing::expect_same_greedy(std::string(cs.name) + " P=" + std::to_string(P), c,
                                            params, prompts, got[0], want, 3e-2)
                    .worst_logprob_error;
            std::printf("context parallel %s P=%d: greedy log-prob max |err| %.3g\n", cs.name, P,
                        worst);
        }
    }
}

}  // namespace
}  // namespace tandem::gpu
