// The device decoder (common/gpu/device_model.h) against the CPU engine's Transformer<double> on
// small random Llama, Qwen2 and Qwen3 configurations: logits of every position, and log-probs and
// entropies of the scored positions of a batch with a shared prompt (prefix + continuations).
// The CPU reference gets the same bf16-rounded weights, so the difference is the device's bf16
// activations (normed rows, q/k/v, attention probabilities, o, SwiGLU) and fp32 accumulation.
// Tolerances: logits rms error <= 2e-2 x rms(ref logits) and max |err| <= 8e-2 x rms(ref);
// log-probs and entropies |err| <= 3e-2 + 1e-2 |ref|. Skips with a reason without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/gpu/device_model.h"
#include "common/model/transformer.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/gpu/model_test_util.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::gpu {
namespace {

using kernels::cuda::testing::CudaFixture;
using kernels::testkit::test_seed;
using testing::base_config;
using testing::Case;
using testing::cases;
using testing::make_batch;
using testing::random_params;

class DeviceModelTest : public CudaFixture {};

TEST_F(DeviceModelTest, LogitsAndLogProbsMatchTheCpuEngineForEachArchitecture) {
    int salt = 0;
    for (const Case& cs : cases()) {
        SCOPED_TRACE(cs.name);
        const model::ModelConfig& c = cs.config;
        std::vector<float> params;
        const auto dm =
            testing::random_device_model(*this, c, uint64_t{test_seed()} * 131 + ++salt, params);
        ASSERT_TRUE(dm);
        const model::PackedBatch batch = make_batch(c.vocab_size, uint64_t{test_seed()} + salt);
        const int64_t n = batch.num_tokens(), V = c.vocab_size;

        auto ref = model::Transformer<double>::create(c);
        ASSERT_TRUE(ref.ok()) << ref.status().to_string();
        const std::vector<double> pd(params.begin(), params.end());

        // Logits of every position.
        std::vector<float> got(static_cast<size_t>(n * V));
        alloc_->reset_peak();
        const Status st = dm->logits(s(), batch, got.data());
        ASSERT_TRUE(st.ok()) << st.to_string();
        std::vector<double> want(got.size());
        ASSERT_TRUE(ref->logits(pd.data(), batch, want.data()).ok());
        double ss = 0, ss_err = 0, worst = 0;
        for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_TRUE(std::isfinite(got[i])) << "logit " << i;
            const double e = std::abs(got[i] - want[i]);
            ss += want[i] * want[i];
            ss_err += e * e;
            worst = std::max(worst, e);
        }
        const double rms = std::sqrt(ss / static_cast<double>(want.size()));
        const double rms_err = std::sqrt(ss_err / static_cast<double>(want.size()));
        std::printf(
            "%s: logits max |err| %.3e, rms err %.3e, rms(ref) %.3e; peak device memory "
            "%.2f MiB; gemm %s\n",
            cs.name, worst, rms_err, rms, static_cast<double>(alloc_->peak_bytes()) / (1 << 20),
            gemm_->description().c_str());
        EXPECT_LE(rms_err, 2e-2 * rms) << "seed " << test_seed();
        EXPECT_LE(worst, 8e-2 * rms) << "seed " << test_seed();

        // Log-probs and entropies of the scored positions at temperature 0.8.
        std::vector<float> lp(static_cast<size_t>(n)), ent(static_cast<size_t>(n));
        const Status st2 = dm->logprobs(s(), batch, 0.8, lp.data(), ent.data());
        ASSERT_TRUE(st2.ok()) << st2.to_string();
        std::vector<double> want_lp(static_cast<size_t>(n)), want_ent(static_cast<size_t>(n));
        ASSERT_TRUE(ref->forward(pd.data(), batch, 0.8, want_lp.data(), want_ent.data()).ok());
        double worst_lp = 0;
        for (int64_t i = 0; i < n; ++i) {
            worst_lp = std::max(worst_lp, std::abs(lp[i] - want_lp[i]));
            EXPECT_NEAR(lp[i], want_lp[i], 3e-2 + 1e-2 * std::abs(want_lp[i])) << "row " << i;
            EXPECT_NEAR(ent[i], want_ent[i], 3e-2 + 1e-2 * std::abs(want_ent[i])) << "row " << i;
            if (want_lp[i] == 0.0) {
                EXPECT_EQ(lp[i], 0.0f) << "unscored row " << i;
            }
        }
        std::printf("%s: log-prob max |err| %.3e\n", cs.name, worst_lp);
    }
}

TEST_F(DeviceModelTest, RejectsBadBatchesNamingTheRow) {
    model::ModelConfig c = base_config();
    auto dm = DeviceModel::create(c, *alloc_, *gemm_, s());
    ASSERT_TRUE(dm.ok()) << dm.status().to_string();
    model::PackedBatch b;
    b.add_sequence(std::vector<int32_t>{1, 2, 3}, 1);
    std::vector<float> out(3 * 256);
    const Status unloaded = (*dm)->logits(s(), b, out.data());
    EXPECT_FALSE(unloaded.ok());
    EXPECT_NE(unloaded.message().find("no weights loaded"), std::string::npos);

    const std::vector<float> params = random_params((*dm)->index(), c, 7);
    ASSERT_TRUE((*dm)->load(s(), params.data()).ok());
    model::PackedBatch bad;
    bad.add_sequence(std::vector<int32_t>{1, 999, 3}, 1);
    const Status st = (*dm)->logits(s(), bad, out.data());
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("token 999 at row 1"), std::string::npos) << st.to_string();
    model::PackedBatch too_long;
    too_long.add_sequence(std::vector<int32_t>(65, 1), 1);
    std::vector<float> big(65 * 256);
    EXPECT_FALSE((*dm)->logits(s(), too_long, big.data()).ok());
}

}  // namespace
}  // namespace tandem::gpu
