// rollout.device: cuda with rollout.context_parallel > 1, on the CPU: the plan (rank r on the r-th
// assigned GPU, each rank thread its own ring process, so make_ring_endpoint picks NCCL on one
// host and UCX with host staging otherwise), its errors, the batch split, and the sampler
// (rollout_node/context_parallel_sampler.h) over host fakes
// (tests/fakes/fake_context_parallel_ranks.h): its completions equal model::GroupGenerator's with
// the same context parallelism bitwise, every rank gets the version's weights, and a failed rank
// makes it refuse further work.
#include <gtest/gtest.h>

#include "common/model/generate.h"
#include "common/model/model_weights.h"
#include "rollout_node/completion_sampler.h"
#include "rollout_node/context_parallel_plan.h"
#include "rollout_node/context_parallel_sampler.h"
#include "tests/fakes/fake_context_parallel_ranks.h"

namespace tandem::rollout {
namespace {

using config::ComputeDevice;

gpu::DeviceFacts assigned_gpus_facts(std::string assigned, int visible) {
    gpu::DeviceFacts f;
    f.built_with_cuda = true;
    f.visible_devices = visible;
    f.device_name = "NVIDIA H200";
    f.assigned = std::move(assigned);
    return f;
}

config::JobSpec cp_job(int ranks, ComputeDevice device) {
    config::JobSpec job;
    job.name = "long";
    job.rollout.device = device;
    job.rollout.context_parallel = ranks;
    job.rollout.resources.gpus = ranks;
    return job;
}

TEST(RolloutContextParallel, EachRankTakesItsAssignedGpuAndNcclJoinsThemOnOneHost) {
    const config::JobSpec job = cp_job(3, ComputeDevice::kCuda);
    auto plan = plan_context_parallel(job, assigned_gpus_facts("4,6,7,1", 4), "h1", "job-000009",
                                      {.nccl_available = true});
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    ASSERT_EQ(plan->ranks.size(), 3u);
    for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(plan->ranks[r].rank, r);
        EXPECT_EQ(plan->ranks[r].cuda_device, r);
        EXPECT_EQ(plan->ranks[r].placement.process, r);
        EXPECT_EQ(plan->ranks[r].placement.host, "h1");
    }
    EXPECT_EQ(plan->ranks[0].placement.gpu, 4);
    EXPECT_EQ(plan->ranks[1].placement.gpu, 6);
    EXPECT_EQ(plan->ranks[2].placement.gpu, 7);
    EXPECT_EQ(plan->ring.backend, kernels::RingBackend::kNccl);
    EXPECT_EQ(plan->ring.memory, kernels::RingMemory::kCuda);
    EXPECT_FALSE(plan->ring.host_staging);
    EXPECT_NE(plan->describe().find("3 ranks on GPUs 4,6,7 of host h1 (CUDA devices 0, 1, 2): "
                                    "nccl"),
              std::string::npos)
        << plan->describe();

    // Without NCCL in the build the same ranks go over UCX, staged through host memory.
    auto ucx = plan_context_parallel(job, assigned_gpus_facts("4,6,7", 3), "h1", "job-000009",
                                     {.nccl_available = false});
    ASSERT_TRUE(ucx.ok()) << ucx.status().to_string();
    EXPECT_EQ(ucx->ring.backend, kernels::RingBackend::kUcx);
    EXPECT_TRUE(ucx->ring.host_staging);
    EXPECT_NE(ucx->describe().find("ucx with host staging"), std::string::npos) << ucx->describe();
}

TEST(RolloutContextParallel, FewerGpusThanRanksIsRefusedNamingTheJobAndTheFields) {
    const config::JobSpec job = cp_job(4, ComputeDevice::kCuda);
    auto few = plan_context_parallel(job, assigned_gpus_facts("0,1", 2), "h1", "job-000009", {});
    ASSERT_FALSE(few.ok());
    EXPECT_EQ(few.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(few.status().message().find(
                  "job job-000009: rollout.context_parallel 4 needs 4 GPUs, one per rank, but the "
                  "scheduler assigned the actor 2 (0,1) (set rollout.resources.gpus >= 4)"),
              std::string::npos)
        << few.status().message();
    // Assigned but not visible to the process.
    auto hidden =
        plan_context_parallel(job, assigned_gpus_facts("0,1,2,3", 3), "h1", "job-000009", {});
    ASSERT_FALSE(hidden.ok());
    EXPECT_NE(hidden.status().message().find("the actor sees 3 CUDA device(s) "
                                             "(CUDA_VISIBLE_DEVICES=0,1,2,3)"),
              std::string::npos)
        << hidden.status().message();
    // A list the plan cannot read.
    auto twice =
        plan_context_parallel(job, assigned_gpus_facts("0,1,1,2", 4), "h1", "job-000009", {});
    ASSERT_FALSE(twice.ok());
    EXPECT_NE(twice.status().message().find("names GPU 1 twice"), std::string::npos)
        << twice.status().message();
    auto uuid = parse_assigned_gpus("GPU-5f3a,1", "job-000009");
    ASSERT_FALSE(uuid.ok());
    EXPECT_NE(uuid.status().message().find("\"GPU-5f3a\", which is not a device index"),
              std::string::npos)
        << uuid.status().message();
    EXPECT_EQ(
        context_parallel_gpu_shortfall(cp_job(1, ComputeDevice::kCuda), assigned_gpus_facts("", 0)),
        "");
}

TEST(RolloutContextParallel, DeviceChoiceTakesCudaWithAGpuPerRankAndSaysWhyNot) {
    // Explicit cuda with a GPU per rank: accepted, the log line says so.
    auto ok = rollout_device(cp_job(2, ComputeDevice::kCuda), assigned_gpus_facts("2,3", 2),
                             "job-000009");
    ASSERT_TRUE(ok.ok()) << ok.status().to_string();
    EXPECT_TRUE(ok->cuda());
    EXPECT_NE(ok->reason.find("context parallel over 2 of its GPUs (2,3)"), std::string::npos)
        << ok->reason;
    EXPECT_EQ(cuda_generation_unsupported(cp_job(2, ComputeDevice::kCuda)), "");
    // Explicit cuda with one GPU for two ranks: refused, naming the job and the fields.
    auto one =
        rollout_device(cp_job(2, ComputeDevice::kCuda), assigned_gpus_facts("3", 1), "job-000009");
    ASSERT_FALSE(one.ok());
    EXPECT_NE(one.status().message().find("job job-000009: rollout.device is cuda but "
                                          "rollout.context_parallel 2 needs 2 GPUs"),
              std::string::npos)
        << one.status().message();
    // auto stays on the CPU (whose ranks are threads) and says why.
    auto a =
        rollout_device(cp_job(2, ComputeDevice::kAuto), assigned_gpus_facts("3", 1), "job-000009");
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_FALSE(a->cuda());
    EXPECT_NE(a->reason.find("cpu (auto: a GPU is there, but rollout.context_parallel 2 needs 2"),
              std::string::npos)
        << a->reason;
    // Quantized KV is still the device generator's to refuse (its shards are bf16).
    config::JobSpec q = cp_job(2, ComputeDevice::kCuda);
    q.rollout.kv_cache.dtype = config::KvCacheDType::kInt8;
    EXPECT_FALSE(rollout_device(q, assigned_gpus_facts("2,3", 2), "job-000009").ok());
}

TEST(RolloutContextParallel, SplitShardsTheContextsOverOneDeviceAndRefusesTooLong) {
    const std::vector<std::vector<int32_t>> prompts = {
        std::vector<int32_t>(10, 1), std::vector<int32_t>(30, 1), std::vector<int32_t>(24, 1),
        std::vector<int32_t>(2, 1)};
    auto s = split_context_parallel(prompts, 8, 32, 2, "job-000009");
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->single, (std::vector<int>{0, 2, 3}));  // 24 + 8 = 32 fits
    EXPECT_EQ(s->sharded, (std::vector<int>{1}));
    auto none = split_context_parallel(prompts, 8, 0, 2, "job-000009");
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(none->single.size(), 4u);
    auto too = split_context_parallel(prompts, 40, 32, 2, "job-000009");
    ASSERT_FALSE(too.ok());
    EXPECT_NE(too.status().message().find(
                  "job job-000009: prompt 1 has 30 tokens; with max_new_tokens 40 its context "
                  "(70) exceeds rollout.context_parallel (2) x rollout.max_tokens_per_device (32) "
                  "= 64"),
              std::string::npos)
        << too.status().message();
}

constexpr std::chrono::milliseconds kCpTimeout{20000};

model::ModelConfig cp_small_config() {
    model::ModelConfig c;
    c.vocab_size = 15;
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 48;
    c.max_seq_len = 96;
    return c;
}

std::vector<int32_t> cp_prompt(int len) {
    std::vector<int32_t> p{1};
    for (int i = 1; i < len; ++i) p.push_back(3 + (i * 7 + len) % 10);
    return p;
}

struct CpRig {
    model::ModelConfig cfg = cp_small_config();
    model::ModelWeights w;
    uint64_t total = 0;
    fakes::FakeContextParallelRanks* ranks = nullptr;  // owned by the sampler
    fakes::FakeSingleSampler* single = nullptr;
    std::unique_ptr<CompletionSampler> sampler;
    model::GeneratorOptions go;
};

// The sampler over P fake ranks with max_tokens_per_device M, weights version 5 loaded.
void make_cp_rig(CpRig& rig, int P, int64_t M) {
    rig.w = model::ModelWeights::random(rig.cfg, 91, 0.3).value();
    rig.total = static_cast<uint64_t>(rig.w.elements()) * 4;
    rig.go.eos_token = 2;
    rig.go.stop_tokens = {13};
    rig.go.job = "job-000009";
    auto ranks = fakes::FakeContextParallelRanks::create(rig.cfg, P, kCpTimeout);
    ASSERT_TRUE(ranks.ok()) << ranks.status().to_string();
    rig.ranks = ranks->get();
    auto cpu = model::GroupGenerator::create(rig.cfg, rig.go);
    ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
    auto single = std::make_unique<fakes::FakeSingleSampler>(std::move(*cpu), rig.total);
    rig.single = single.get();
    ContextParallelSamplerOptions o;
    o.max_tokens_per_device = M;
    o.eos_token = rig.go.eos_token;
    o.stop_tokens = rig.go.stop_tokens;
    o.total_bytes = rig.total;
    o.kv_f32_bytes_per_token = 2 * rig.cfg.num_layers * rig.cfg.kv_dim() * 4;
    o.job = "job-000009";
    auto s = make_context_parallel_sampler(std::move(single), std::move(*ranks), o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    rig.sampler = std::move(*s);
    // The version in two pieces, as a CUDA IPC mapping of two shards delivers it.
    const uint64_t half = (rig.total / 8) * 4;
    const DevicePiece pieces[2] = {
        {rig.w.data(), 0, half},
        {reinterpret_cast<const char*>(rig.w.data()) + half, half, rig.total - half}};
    Status st = rig.sampler->device_weights()->load_device(5, pieces);
    ASSERT_TRUE(st.ok()) << st.to_string();
}

std::vector<model::Completion> cp_cpu_reference(const CpRig& rig, int P, int64_t M,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                int G, const model::SamplingOptions& so) {
    model::GeneratorOptions go = rig.go;
    go.context_parallel = P;
    go.max_tokens_per_device = M;
    auto gen = model::GroupGenerator::create(rig.cfg, go);
    EXPECT_TRUE(gen.ok()) << gen.status().to_string();
    auto out = gen->generate(rig.w.data(), prompts, G, so);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? *out : std::vector<model::Completion>{};
}

void expect_same_completions(const std::vector<model::Completion>& got,
                             const std::vector<model::Completion>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t b = 0; b < got.size(); ++b) {
        EXPECT_EQ(got[b].prompt, want[b].prompt) << "slot " << b;
        EXPECT_EQ(got[b].sample, want[b].sample) << "slot " << b;
        EXPECT_EQ(got[b].tokens, want[b].tokens) << "slot " << b;
        EXPECT_EQ(got[b].finished, want[b].finished) << "slot " << b;
        ASSERT_EQ(got[b].logprobs.size(), want[b].logprobs.size()) << "slot " << b;
        EXPECT_EQ(0, std::memcmp(got[b].logprobs.data(), want[b].logprobs.data(),
                                 got[b].logprobs.size() * sizeof(float)))
            << "slot " << b;
    }
}

TEST(RolloutContextParallel, SamplerMatchesTheCpuGeneratorWithContextParallelism) {
    for (const int P : {2, 3}) {
        SCOPED_TRACE("P=" + std::to_string(P));
        const int64_t M = 24;
        CpRig rig;
        make_cp_rig(rig, P, M);
        ASSERT_TRUE(rig.sampler);
        // Every rank holds the version; rank 0 loaded it, the others copied it.
        EXPECT_EQ(rig.ranks->first_loads, 1);
        EXPECT_EQ(rig.ranks->copies.load(), P - 1);
        for (int r = 0; r < P; ++r) {
            ASSERT_EQ(0, std::memcmp(rig.ranks->weights(r).data(), rig.w.data(), rig.total))
                << "rank " << r;
        }
        model::SamplingOptions so;
        so.max_new_tokens = 9;
        // Greedy, long and short prompts interleaved: the batch order comes back.
        so.temperature = 0.0;
        const std::vector<std::vector<int32_t>> mixed = {cp_prompt(5), cp_prompt(30), cp_prompt(12),
                                                         cp_prompt(37)};
        model::GenerateStats gs;
        auto got = rig.sampler->generate(nullptr, 5, mixed, 2, so, &gs);
        ASSERT_TRUE(got.ok()) << got.status().to_string();
        expect_same_completions(*got, cp_cpu_reference(rig, P, M, mixed, 2, so));
        EXPECT_EQ(gs.sharded_sequences, 4);  // two long prompts x 2 samples
        EXPECT_EQ(rig.single->prompts_seen, 2);
        EXPECT_EQ(rig.ranks->logits_calls(0) > 0, true);
        for (int r = 1; r < P; ++r) EXPECT_EQ(rig.ranks->logits_calls(r), 0) << "rank " << r;
        int64_t tokens = 0;
        for (const auto& c : *got) tokens += static_cast<int64_t>(c.tokens.size());
        EXPECT_EQ(gs.generated_tokens, tokens);
        // Sampled (temperature, top-k, stop ids), the short prompts first so they keep their
        // batch index on the single-device sampler: every random stream is the CPU's.
        so.temperature = 1.0;
        so.top_k = 8;
        so.seed = 4242;
        const std::vector<std::vector<int32_t>> sampled = {cp_prompt(3), cp_prompt(9),
                                                           cp_prompt(26), cp_prompt(33)};
        auto got2 = rig.sampler->generate(nullptr, 5, sampled, 3, so, nullptr);
        ASSERT_TRUE(got2.ok()) << got2.status().to_string();
        expect_same_completions(*got2, cp_cpu_reference(rig, P, M, sampled, 3, so));
    }
}

TEST(RolloutContextParallel, SamplerRefusesWrongVersionsBadPiecesAndAFailedRing) {
    CpRig rig;
    make_cp_rig(rig, 2, 16);
    ASSERT_TRUE(rig.sampler);
    model::SamplingOptions so;
    so.max_new_tokens = 4;
    const std::vector<std::vector<int32_t>> prompts = {cp_prompt(20)};
    auto wrong = rig.sampler->generate(nullptr, 6, prompts, 1, so, nullptr);
    ASSERT_FALSE(wrong.ok());
    EXPECT_NE(wrong.status().message().find("asked to generate with weights version 6, the "
                                            "context-parallel ranks hold 5"),
              std::string::npos)
        << wrong.status().message();
    const DevicePiece short_piece{rig.w.data(), 0, rig.total - 4};
    Status bad = rig.sampler->device_weights()->load_device(6, {&short_piece, 1});
    EXPECT_FALSE(bad.ok());
    EXPECT_NE(bad.message().find("version 6"), std::string::npos) << bad.message();
    // A copy that fails names the rank and the version, and leaves no version to generate with.
    CpRig three;
    make_cp_rig(three, 3, 16);
    three.ranks->fail_copy = 2;
    const DevicePiece whole{three.w.data(), 0, three.total};
    Status copy = three.sampler->device_weights()->load_device(6, {&whole, 1});
    ASSERT_FALSE(copy.ok());
    EXPECT_NE(copy.message().find("loading weights version 6: rank 2: fake: copy to rank 2 failed"),
              std::string::npos)
        << copy.message();
    auto none = three.sampler->generate(nullptr, 6, prompts, 1, so, nullptr);
    ASSERT_FALSE(none.ok());
    EXPECT_NE(none.status().message().find("ranks hold none"), std::string::npos)
        << none.status().message();
    // A too long context is refused before any rank runs.
    CpRig again;
    make_cp_rig(again, 2, 16);
    so.max_new_tokens = 20;
    auto too = again.sampler->generate(nullptr, 5, prompts, 1, so, nullptr);
    ASSERT_FALSE(too.ok());
    EXPECT_NE(too.status().message().find("exceeds rollout.context_parallel (2)"),
              std::string::npos);
    EXPECT_EQ(again.ranks->entered(0), 1);  // loading only
    // A rank that fails leaves the ring unusable: the next call says so.
    so.max_new_tokens = 4;
    again.ranks->fail_enter = true;
    auto failed = again.sampler->generate(nullptr, 5, prompts, 1, so, nullptr);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("rank 0: fake: rank 0 has no device; rank 1: fake: "
                                             "rank 1 has no device"),
              std::string::npos)
        << failed.status().message();
    again.ranks->fail_enter = false;
    auto after = again.sampler->generate(nullptr, 5, prompts, 1, so, nullptr);
    ASSERT_FALSE(after.ok());
    EXPECT_NE(after.status().message().find("context-parallel ring failed earlier"),
              std::string::npos)
        << after.status().message();
}

}  // namespace
}  // namespace tandem::rollout
