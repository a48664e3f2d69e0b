// The relay tree in a real GRPO job: three rollouts with rollout.relay_fanout 1 join every
// version's tree, so one reads the trainer and the others read the rollout above them
// (docs/weights.md).
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

TEST(GrpoRelay, RolloutsBeyondTheFanOutReadFromAnotherRollout) {
    LocalCluster c("grpo-relay", /*rollout_nodes=*/3);
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string job_file = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/grpo-reverse.yaml";
    auto sub = c.cli("job submit -f " + job_file +
                     " algorithm.warm_start_steps=0 algorithm.steps=8 rollout.replicas=3"
                     " rollout.relay_fanout=1 --follow");
    const std::string logs = c.cli("job logs grpo-reverse").out;
    ASSERT_EQ(sub.code, 0) << sub.out << "\n" << logs;
    auto s =
        nlohmann::json::parse(c.cli("job summary grpo-reverse --output json").out, nullptr, false);
    ASSERT_TRUE(s.is_object());
    EXPECT_EQ(s["steps"], 8);

    // Every version the rollouts fetched has its tree in the table: with fan-out 1 it is a chain,
    // trainer -> first joiner -> second -> third.
    auto versions = c.get("/api/v1/jobs/grpo-reverse/versions");
    int chains = 0;
    for (const auto& v : versions["versions"]) {
        int relayed = 0;
        for (const auto& r : v["relays"]) {
            const std::string reader = r["reader"];
            EXPECT_NE(reader.find("/rollout-"), std::string::npos) << r.dump();
            EXPECT_FALSE(r["relay_source"].is_null()) << r.dump();  // every rollout relays
            if (r["parent"].is_null()) {
                EXPECT_EQ(r["depth"], 1) << v.dump();
                continue;
            }
            const std::string parent = r["parent"];
            EXPECT_NE(parent, reader);
            EXPECT_NE(parent.find("/rollout-"), std::string::npos) << r.dump();
            EXPECT_GE(r["depth"], 2) << r.dump();
            ++relayed;
        }
        if (v["relays"].size() == 3u && relayed == 2) ++chains;
    }
    EXPECT_GE(chains, 1) << versions.dump();

    // tandem versions shows who relays to whom.
    const std::string table = c.cli("versions grpo-reverse").out;
    EXPECT_NE(table.find("(depth 2)"), std::string::npos) << table;
    // And a rollout did read a version from another one (a failed relay falls back with a warning).
    EXPECT_NE(logs.find("from relay"), std::string::npos) << logs;
}

}  // namespace
}  // namespace tandem::testing
