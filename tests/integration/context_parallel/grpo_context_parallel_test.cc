// The long-context job on a real local cluster: every rollout context is longer than
// rollout.max_tokens_per_device, so the rollout actor generates with ring prefill and sharded
// decode over rollout.context_parallel ranks (its KV shards stored int8 through the job file)
// while the trainer trains on what it sends, and the KV figures reach `tandem job metrics` and
// Prometheus as kv/* job metrics; and a job
// whose contexts cannot fit the ring is refused by `tandem job submit`, and fails in its rollout
// actors when a client submits it anyway, with an error that names both fields.
#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

const std::string kJob = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/copy-long-context.yaml";

TEST(GrpoContextParallel, ShardedRolloutsTrainAndOversizedContextsFailNamingTheFields) {
    LocalCluster c("grpo_cp", 1);
    ASSERT_EQ(c.up().code, 0);

    auto sub = c.cli("job submit -f " + kJob +
                     " algorithm.steps=8 algorithm.warm_start_steps=0 rollout.kv_cache.dtype=int8 "
                     "rollout.kv_cache.group=8 --follow");
    EXPECT_EQ(sub.code, 0) << sub.out;
    auto s = c.cli("job summary copy-long-context --output json");
    auto j = nlohmann::json::parse(s.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << s.out;
    EXPECT_EQ(j["steps"], 8);
    EXPECT_EQ(j["versions_published"], 9);

    // The rollout's KV figures, per step: bytes of the int8 shards, below f32's.
    auto metrics = c.cli("job metrics copy-long-context --output json");
    auto m = nlohmann::json::parse(metrics.out, nullptr, false);
    ASSERT_TRUE(m.is_object()) << metrics.out;
    ASSERT_EQ(m["metrics"].size(), 8u) << metrics.out;
    for (const auto& row : m["metrics"]) {
        const auto& v = row["values"];
        EXPECT_GT(v.value("kv/bytes_in_use", 0.0), 0.0) << v.dump();
        EXPECT_GT(v.value("kv/compression", 0.0), 0.0) << v.dump();
        EXPECT_LT(v.value("kv/compression", 1.0), 0.9) << v.dump();
        EXPECT_EQ(v.value("kv/budget_bytes", -1.0), 0.0) << v.dump();
    }
    auto prom = net::http_call(c.address(), "GET", "/metrics", "", c.token());
    ASSERT_TRUE(prom.ok()) << prom.status().message();
    EXPECT_NE(prom->body.find("tandem_job_kv_bytes_in_use{"), std::string::npos);
    EXPECT_NE(prom->body.find("tandem_job_kv_compression{"), std::string::npos);

    // 2 x 30 positions cannot hold a 34-token prompt plus 33 new tokens. `tandem job submit`
    // refuses it before submitting (the checks of `tandem config check`), naming both fields.
    const std::string bad_overrides =
        "name=copy-long-bad rollout.max_tokens_per_device=30 algorithm.steps=2 "
        "algorithm.warm_start_steps=0";
    auto refused = c.cli("job submit -f " + kJob + " " + bad_overrides);
    EXPECT_EQ(refused.code, 2) << refused.out;
    EXPECT_NE(refused.out.find("rollout.max_tokens_per_device (30)"), std::string::npos)
        << refused.out;
    EXPECT_EQ(c.job_state("copy-long-bad"), "");  // nothing was submitted

    // A client that skips those checks (the spec POSTed to the API as is) gets a job whose
    // rollout actors refuse it when they start, with the same message.
    std::vector<std::string> texts = {"name=copy-long-bad", "rollout.max_tokens_per_device=30",
                                      "algorithm.steps=2", "algorithm.warm_start_steps=0"};
    auto overrides = config::parse_overrides(texts);
    ASSERT_TRUE(overrides.ok()) << overrides.status().message();
    auto spec = config::load_job_file(kJob, *overrides);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    const nlohmann::json body = {{"spec_yaml", config::to_yaml(*spec)}, {"source", kJob}};
    auto posted = net::http_call(c.address(), "POST", "/api/v1/jobs", body.dump(), c.token());
    ASSERT_TRUE(posted.ok()) << posted.status().message();
    EXPECT_EQ(posted->status, 201) << posted->body;
    auto bad = c.cli("job status copy-long-bad --follow");
    EXPECT_EQ(bad.code, 1) << bad.out;
    EXPECT_EQ(c.job_state("copy-long-bad"), "FAILED");
    auto ev = c.cli("job events copy-long-bad");
    EXPECT_NE(ev.out.find("rollout.context_parallel (2)"), std::string::npos) << ev.out;
    EXPECT_NE(ev.out.find("rollout.max_tokens_per_device (30)"), std::string::npos) << ev.out;
}

}  // namespace
}  // namespace tandem::testing
