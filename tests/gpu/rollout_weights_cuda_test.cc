// Weights versions on the device for the rollout and the trainer (rollout_node/device_weights.h,
// DeviceStaging::create_on_stream). Skips with the reason without a device. Checks, all exact:
//   DeviceGenerator::load_device (fp32 pieces in device memory -> bf16 by a kernel) against
//     load (host conversion): greedy tokens and log-probs bit for bit, four architectures;
//   a version published by a trainer in this process, fetched into device memory by
//     DeviceRolloutWeights (pinned_host: CUDA IPC needs another process, as in tandem_gpu_weights)
//     and switched into the cuda sampler: the same greedy completions as a host upload;
//   a trainer's device slot opened by a second process (the binary runs itself again as the
//     rollout, RolloutWeightsCudaIpcChild.*) through DeviceRolloutWeights (cuda_ipc) and switched
//     into its cuda sampler: the parent's greedy completions, tokens and log-probs;
//   a publish on the actor's stream (create_on_stream) right after a device copy enqueued on that
//     stream, with no synchronisation in between: the reader gets the copy's bytes, not what the
//     buffer held before it.
// The switching, path choice and release order are tested on the CPU over fakes
// (tests/unit/runtime/rollout_device_weights_test.cc).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config/job_spec.h"
#include "common/gpu/device_generate.h"
#include "common/model/generate.h"
#include "common/model/params.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "rollout_node/completion_sampler.h"
#include "rollout_node/device_weights.h"
#include "tests/fakes/fake_runtime.h"
#include "tests/gpu/model_test_util.h"
#include "tests/integration/weights/test_support.h"

namespace tandem {
namespace {

class RolloutWeightsCuda : public ::testing::Test {
protected:
    void SetUp() override {
        std::string why;
        if (kernels::cuda_devices(&why).empty()) GTEST_SKIP() << why;
    }
};

std::vector<std::vector<int32_t>> prompts(int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    return {gpu::testing::random_tokens(7, vocab, rng),
            gpu::testing::random_tokens(19, vocab, rng)};
}

model::SamplingOptions greedy() {
    model::SamplingOptions o;
    o.temperature = 0.0;
    o.max_new_tokens = 24;
    return o;
}

// The number of completions that differ in a token or a log-prob bit.
int differences(const std::vector<model::Completion>& a, const std::vector<model::Completion>& b) {
    if (a.size() != b.size()) return static_cast<int>(std::max(a.size(), b.size()));
    int n = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        n += a[i].tokens != b[i].tokens || a[i].logprobs != b[i].logprobs;
    }
    return n;
}

// A publisher and a reader of job 1 over UCX shared memory.
Result<std::unique_ptr<weights::Publisher>> publisher(const weights::Layout& layout,
                                                      uint64_t chunk_bytes,
                                                      weights::VersionDirectory& directory) {
    weights::PublisherOptions po;
    po.job = JobId(1);
    po.chunk_bytes = chunk_bytes;
    po.ucx.transports = "shm,self";
    return weights::Publisher::create(po, layout, directory);
}
Result<std::unique_ptr<weights::Reader>> reader(const weights::Layout& layout) {
    weights::ReaderOptions ro;
    ro.job = JobId(1);
    ro.reader_id = "job-000001/rollout-0";
    ro.ucx.transports = "shm,self";
    return weights::Reader::create(ro, layout);
}

// The rollout's side on device 0: the cuda sampler and DeviceRolloutWeights over `reader`, as
// run_grpo_rollout wires them.
struct DeviceRollout {
    Status init(const model::ModelConfig& c, weights::Reader& reader) {
        TANDEM_ASSIGN_OR_RETURN(staging, weights::DeviceStaging::create(0));
        model::GeneratorOptions go;
        go.eos_token = -1;
        TANDEM_ASSIGN_OR_RETURN(sampler, rollout::make_cuda_sampler(c, go, config::JobSpec{}));
        if (!sampler->device_weights())
            return internal_error("the sampler takes no device weights");
        source = rollout::make_reader_device_source(reader, *staging);
        dw = std::make_unique<rollout::DeviceRolloutWeights>(rt, *source,
                                                             *sampler->device_weights());
        return Status();
    }
    // Fetches or opens `d`, then switches the sampler to it.
    Status switch_to(const weights::VersionDescriptor& d) {
        runtime::PublishedVersion v;
        v.info.version = d.version;
        v.descriptor = d;
        dw->start_fetch(v);
        auto fetched = dw->wait_fetch(rt.clock().now() + std::chrono::seconds(60));
        if (!fetched) return deadline_exceeded("the fetch did not end within 60 s");
        TANDEM_RETURN_IF_ERROR(*fetched);
        std::cout << fmt::format("rollout weights: version {} by {} ({}) in {:.4f} s\n", d.version,
                                 dw->stats().last_path, dw->stats().last_reason,
                                 dw->last_fetch_s());
        return dw->swap();
    }
    std::unique_ptr<weights::DeviceStaging> staging;
    std::unique_ptr<rollout::CompletionSampler> sampler;
    testing::FakeRuntime rt{{}, ActorId{JobId(1), ActorRole::kRollout, 0}};
    std::unique_ptr<rollout::DeviceWeightSource> source;
    std::unique_ptr<rollout::DeviceRolloutWeights> dw;
};

TEST_F(RolloutWeightsCuda, LoadDeviceMatchesTheHostUploadBitForBit) {
    int salt = 0;
    for (const gpu::testing::Case& cs : gpu::testing::cases()) {
        SCOPED_TRACE(cs.name);
        const model::ModelConfig& c = cs.config;
        gpu::DeviceGenerateOptions dopt;
        dopt.eos_token = -1;
        auto host = gpu::DeviceGenerator::create(c, dopt);
        auto device = gpu::DeviceGenerator::create(c, dopt);
        ASSERT_TRUE(host.ok() && device.ok()) << host.status().to_string();
        auto idx = model::ParamIndex::create(c, model::make_param_layout(c).value());
        ASSERT_TRUE(idx.ok());
        const std::vector<float> params = gpu::testing::random_params(*idx, c, 900 + ++salt);
        ASSERT_TRUE((*host)->load(params.data()).ok());

        auto staging = weights::DeviceStaging::create(0);
        ASSERT_TRUE(staging.ok()) << staging.status().to_string();
        const size_t bytes = params.size() * 4;
        auto f32 = (*staging)->allocate(bytes);
        ASSERT_TRUE(f32.ok()) << f32.status().to_string();
        ASSERT_TRUE((*staging)->to_device(f32->data(), params.data(), bytes).ok());
        // Three pieces, as three trainer shards would be.
        const auto* base = static_cast<const float*>(f32->data());
        const auto n = static_cast<int64_t>(params.size());
        const int64_t a = n / 3, b = 2 * n / 3;
        const gpu::DeviceF32Piece pieces[] = {
            {base, 0, a}, {base + a, a, b - a}, {base + b, b, n - b}};
        Status loaded = (*device)->load_device(pieces);
        ASSERT_TRUE(loaded.ok()) << loaded.to_string();
        const gpu::DeviceF32Piece short_piece[] = {{base, 0, n - 1}};
        EXPECT_EQ((*device)->load_device(short_piece).code(), StatusCode::kInvalidArgument);
        ASSERT_TRUE((*device)->load_device(pieces).ok());

        const auto ps = prompts(c.vocab_size, 31 + salt);
        auto want = (*host)->generate(ps, 2, greedy());
        auto got = (*device)->generate(ps, 2, greedy());
        ASSERT_TRUE(want.ok() && got.ok()) << got.status().to_string();
        const int diff = differences(*got, *want);
        std::cout << fmt::format(
            "rollout weights: {} load_device vs load: {} of {} completions "
            "differ\n",
            cs.name, diff, got->size());
        EXPECT_EQ(diff, 0);
    }
}

TEST_F(RolloutWeightsCuda, FetchedVersionIsSwitchedIntoTheCudaSamplerWithoutAHostUpload) {
    const model::ModelConfig c = gpu::testing::cases().front().config;
    const weights::Layout layout = model::make_param_layout(c).value();
    auto idx = model::ParamIndex::create(c, layout);
    ASSERT_TRUE(idx.ok());
    const std::vector<float> params = gpu::testing::random_params(*idx, c, 77);

    weights::VersionDirectory directory;
    auto pub = publisher(layout, 64 << 10, directory);
    ASSERT_TRUE(pub.ok()) << pub.status().to_string();
    ASSERT_TRUE((*pub)->publish(1, std::as_bytes(std::span(params.data(), params.size()))).ok());
    auto rd = reader(layout);
    ASSERT_TRUE(rd.ok()) << rd.status().to_string();
    DeviceRollout rollout;
    ASSERT_TRUE(rollout.init(c, **rd).ok());
    Status switched = rollout.switch_to(*directory.newest(JobId(1)));
    ASSERT_TRUE(switched.ok()) << switched.to_string();
    EXPECT_EQ(rollout.dw->current(), std::optional<Version>(1));
    EXPECT_EQ(rollout.dw->stats().pinned_host, 1u);

    const auto ps = prompts(c.vocab_size, 5);
    auto got = rollout.sampler->generate(nullptr, 1, ps, 2, greedy(), nullptr);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    gpu::DeviceGenerateOptions dopt;
    dopt.eos_token = -1;
    auto host = gpu::DeviceGenerator::create(c, dopt);
    ASSERT_TRUE(host.ok());
    ASSERT_TRUE((*host)->load(params.data()).ok());
    auto want = (*host)->generate(ps, 2, greedy());
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(differences(*got, *want), 0);
    // Another version than the one on the device is refused, naming both.
    auto other = rollout.sampler->generate(nullptr, 2, ps, 2, greedy(), nullptr);
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.status().message().find("version 2, the device holds 1"), std::string::npos)
        << other.status().to_string();
}

// The IPC test runs this binary again as the rollout process (a fork of a process that already
// initialised CUDA cannot use it), pointing it at a file with the descriptor and the completions
// to expect.
constexpr const char* kIpcChildEnv = "TANDEM_TEST_ROLLOUT_WEIGHTS_IPC";

nlohmann::json completions_json(const std::vector<model::Completion>& cs) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& c : cs) out.push_back({{"tokens", c.tokens}, {"logprobs", c.logprobs}});
    return out;
}

TEST_F(RolloutWeightsCuda, SecondProcessSwitchesToTheTrainersDeviceSlotThroughCudaIpc) {
    const model::ModelConfig c = gpu::testing::cases().front().config;
    const weights::Layout layout = model::make_param_layout(c).value();
    auto idx = model::ParamIndex::create(c, layout);
    ASSERT_TRUE(idx.ok());
    const std::vector<float> params = gpu::testing::random_params(*idx, c, 78);
    auto staging = weights::DeviceStaging::create(0);
    ASSERT_TRUE(staging.ok()) << staging.status().to_string();
    auto masters = (*staging)->allocate(layout.total_bytes());
    ASSERT_TRUE(masters.ok());
    ASSERT_TRUE((*staging)->to_device(masters->data(), params.data(), params.size() * 4).ok());
    weights::VersionDirectory directory;
    weights::PublisherOptions po;
    po.job = JobId(1);
    po.ucx.transports = "shm,self";
    po.device_slots = true;
    auto pub = weights::Publisher::create(po, layout, directory);
    ASSERT_TRUE(pub.ok()) << pub.status().to_string();
    ASSERT_TRUE((*pub)->publish_from_device(1, masters->data(), **staging).ok());
    ASSERT_EQ((*pub)->stats().device_slot_exports, 1u)
        << "the device slot was not exported (see the publisher's warning)";

    gpu::DeviceGenerateOptions dopt;
    dopt.eos_token = -1;
    auto host = gpu::DeviceGenerator::create(c, dopt);
    ASSERT_TRUE(host.ok());
    ASSERT_TRUE((*host)->load(params.data()).ok());
    auto want = (*host)->generate(prompts(c.vocab_size, 6), 2, greedy());
    ASSERT_TRUE(want.ok());

    const std::string file = fmt::format("/tmp/tandem-rollout-weights-ipc-{}.json", getpid());
    {
        std::ofstream out(file);
        out << nlohmann::json{{"descriptor", weights::to_json(*directory.newest(JobId(1)))},
                              {"layout", layout.to_json()},
                              {"completions", completions_json(*want)}}
                   .dump();
    }
    setenv(kIpcChildEnv, file.c_str(), 1);
    auto child = weights::testing::ChildProcess::spawn(
        {std::filesystem::read_symlink("/proc/self/exe").string(),
         "--gtest_filter=RolloutWeightsCudaIpcChild.*"});
    unsetenv(kIpcChildEnv);
    ASSERT_TRUE(child.ok()) << child.status().to_string();
    std::string output;
    while (auto line = child->read_line(std::chrono::seconds(120))) output += *line + "\n";
    auto rc = child->wait(std::chrono::seconds(30));
    std::filesystem::remove(file);
    std::cout << output;
    ASSERT_TRUE(rc.has_value()) << "the rollout process did not exit";
    EXPECT_EQ(*rc, 0) << output;
    EXPECT_NE(output.find("[  PASSED  ] 1 test"), std::string::npos) << output;
}

TEST(RolloutWeightsCudaIpcChild, SwitchesToTheTrainersDeviceSlot) {
    const char* file = std::getenv(kIpcChildEnv);
    if (file == nullptr) {
        GTEST_SKIP()
            << "runs only as the rollout process of "
               "RolloutWeightsCuda.SecondProcessSwitchesToTheTrainersDeviceSlotThroughCudaIpc";
    }
    std::ifstream in(file);
    const auto j = nlohmann::json::parse(in);
    auto d = weights::descriptor_from_json(j.at("descriptor"));
    auto layout = weights::Layout::from_json(j.at("layout"));
    ASSERT_TRUE(d.ok() && layout.ok());
    const model::ModelConfig c = gpu::testing::cases().front().config;
    auto rd = reader(*layout);
    ASSERT_TRUE(rd.ok()) << rd.status().to_string();
    DeviceRollout rollout;
    ASSERT_TRUE(rollout.init(c, **rd).ok());
    Status switched = rollout.switch_to(*d);
    ASSERT_TRUE(switched.ok()) << switched.to_string();
    EXPECT_EQ(rollout.dw->stats().cuda_ipc, 1u);
    auto got = rollout.sampler->generate(nullptr, static_cast<int64_t>(d->version),
                                         prompts(c.vocab_size, 6), 2, greedy(), nullptr);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    EXPECT_EQ(completions_json(*got), j.at("completions"));
}

TEST_F(RolloutWeightsCuda, PublishOnTheActorStreamFollowsWorkEnqueuedBeforeIt) {
    namespace cuda = kernels::cuda;
    const weights::Layout layout = weights::testing::random_layout(41, 64 << 20);
    const size_t bytes = layout.total_bytes();
    auto host = *weights::HostBuffer::allocate(bytes);
    weights::testing::fill_version(host.span(), 41, 1);
    auto stream = cuda::Stream::create(0);
    auto alloc = cuda::DeviceAllocator::create(0);
    ASSERT_TRUE(stream.ok() && alloc.ok()) << stream.status().to_string();
    auto values = (*alloc)->allocate(bytes, "the version's bytes");
    auto masters = (*alloc)->allocate(bytes, "masters");
    ASSERT_TRUE(values.ok() && masters.ok());
    ASSERT_TRUE(cuda::copy_to_device(**stream, values->as(), host.data(), bytes).ok());
    ASSERT_TRUE(cuda::fill_zero(**stream, masters->as(), bytes).ok());
    ASSERT_TRUE((*stream)->synchronize("setup").ok());

    weights::VersionDirectory directory;
    auto pub = publisher(layout, 1 << 20, directory);
    ASSERT_TRUE(pub.ok()) << pub.status().to_string();
    auto staging = weights::DeviceStaging::create_on_stream(0, (*stream)->handle());
    ASSERT_TRUE(staging.ok()) << staging.status().to_string();
    // The "optimizer" writes the masters on the actor's stream; the publish follows at once.
    ASSERT_TRUE(cuda::copy_on_device(**stream, masters->as(), values->as(), bytes).ok());
    ASSERT_TRUE((*pub)->publish_from_device(1, masters->as(), **staging).ok());

    auto rd = reader(layout);
    ASSERT_TRUE(rd.ok());
    ASSERT_TRUE((*rd)->fetch(*directory.newest(JobId(1))).ok());
    ASSERT_TRUE((*rd)->swap());
    const auto mismatch = weights::testing::first_mismatch((*rd)->current()->bytes(), 41, 1);
    EXPECT_EQ(mismatch, std::nullopt)
        << "byte " << mismatch.value_or(0) << " is not the copy's: the publish did not wait for it";
    EXPECT_TRUE(weights::DeviceStaging::create_on_stream(0, nullptr)
                    .status()
                    .message()
                    .find("stream is null") != std::string::npos);
}

}  // namespace
}  // namespace tandem
