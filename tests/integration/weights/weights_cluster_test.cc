// The version table tells the truth on a real local cluster: a short GRPO job publishes a version
// per step through its trainer actor, the trainer reclaims slots as it goes (its agent forwards
// version_retired) and exits when the job is done. Afterwards no version is available, each says
// why, and a reader asking for one is told why. And a Python trainer's version of another layout
// is refused by the built-in rollout naming the first differing tensor.

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

TEST(WeightsCluster, NoVersionStaysAvailableOnceTheTrainerIsDone) {
    LocalCluster c("weights_versions");
    ASSERT_EQ(c.up().code, 0);
    const std::string job_file = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/grpo-reverse.yaml";
    // K = 3 slots (trainer.weight_slots' default) and 6 versions: the first ones get reclaimed.
    auto sub = c.cli("job submit -f " + job_file +
                     " algorithm.warm_start_steps=0 algorithm.steps=5 --follow");
    ASSERT_EQ(sub.code, 0) << sub.out;
    ASSERT_EQ(c.job_state("grpo-reverse"), "SUCCEEDED");

    // The trainer's exit reaches the table through its agent's actor_state; wait for it.
    nlohmann::json versions;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        versions = c.get("/api/v1/jobs/grpo-reverse/versions");
        ASSERT_TRUE(versions.is_object());
        bool any_available = false;
        for (const auto& v : versions["versions"]) any_available |= v["state"] == "available";
        if (!any_available || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const auto& list = versions["versions"];
    ASSERT_EQ(list.size(), 6u) << versions.dump();
    // Versions 0-2 were reclaimed for 3-5; 3-5 were released when the trainer's publisher shut
    // down (it retires what it announced) or, had it died instead, made unavailable by its exit.
    for (const auto& v : list) {
        const std::string state = v["state"];
        const std::string reason = v["reason"];
        EXPECT_FALSE(v["available"].get<bool>()) << v.dump();
        if (state == "retired") {
            EXPECT_NE(reason.find("trainer-0 released the slot of shard 0"), std::string::npos)
                << v.dump();
        } else {
            EXPECT_EQ(state, "unavailable") << v.dump();
            EXPECT_NE(reason.find("trainer-0 succeeded (exit code 0)"), std::string::npos)
                << v.dump();
        }
        EXPECT_EQ(v["publishers"][0]["actor"], "job-000001/trainer-0") << v.dump();
    }
    for (int i = 0; i < 3; ++i) EXPECT_EQ(list[i]["state"], "retired") << list[i].dump();

    // A reader asking for the newest version by number is told why it cannot have it.
    const std::string newest = std::to_string(list.back()["version"].get<int64_t>());
    auto r = net::http_call(c.address(), "GET", "/api/v1/jobs/grpo-reverse/versions/" + newest, "",
                            c.token());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 410) << r->body;
    EXPECT_NE(r->body.find("version " + newest + " of job-000001 is"), std::string::npos)
        << r->body;

    // And the CLI shows the states and reasons.
    auto cli = c.cli("versions grpo-reverse");
    EXPECT_EQ(cli.code, 0) << cli.out;
    std::printf("%s", cli.out.c_str());
    EXPECT_NE(cli.out.find("retired"), std::string::npos) << cli.out;
    EXPECT_NE(cli.out.find("released the slot"), std::string::npos) << cli.out;
}

// The pid of the process whose command line contains every one of `parts`, or 0.
pid_t find_process(const std::vector<std::string>& parts) {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        const std::string name = e.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream in(e.path() / "cmdline");
        std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
        bool all = !cmdline.empty();
        for (const auto& p : parts) all = all && cmdline.find(p) != std::string::npos;
        if (all) return static_cast<pid_t>(std::stol(name));
    }
    return 0;
}

TEST(WeightsCluster, KilledTrainersVersionsBecomeUnavailableWithTheReason) {
    LocalCluster c("weights_killed");
    ASSERT_EQ(c.up().code, 0);
    const std::string job_file = std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/grpo-reverse.yaml";
    auto sub = c.cli("job submit -f " + job_file +
                     " algorithm.warm_start_steps=0 algorithm.steps=100000 max_actor_restarts=0");
    ASSERT_EQ(sub.code, 0) << sub.out;
    // Wait for a few versions, then kill the trainer actor (not its agent) with SIGKILL: no
    // destructor runs, nothing is retired; only the agent's report of the exit tells the table.
    auto count_available = [&] {
        int n = 0;
        const auto v = c.get("/api/v1/jobs/grpo-reverse/versions");
        if (v.is_object()) {
            for (const auto& r : v["versions"]) n += r["state"] == "available" ? 1 : 0;
        }
        return n;
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (count_available() < 2 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_GE(count_available(), 2);
    const pid_t trainer = find_process({"tandem-trainer-node", " actor ", c.run_dir()});
    ASSERT_GT(trainer, 0);
    ASSERT_EQ(::kill(trainer, SIGKILL), 0);

    const auto gone = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (count_available() > 0 && std::chrono::steady_clock::now() < gone) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const auto versions = c.get("/api/v1/jobs/grpo-reverse/versions");
    ASSERT_TRUE(versions.is_object());
    int unavailable = 0;
    for (const auto& v : versions["versions"]) {
        EXPECT_NE(v["state"], "available") << v.dump();
        if (v["state"] != "unavailable") continue;
        ++unavailable;
        EXPECT_NE(v["reason"].get<std::string>().find("publisher job-000001/trainer-0"),
                  std::string::npos)
            << v.dump();
    }
    // Those still held by slots when the trainer died (at least the two seen available).
    EXPECT_GE(unavailable, 2) << versions.dump();
    const std::string newest =
        std::to_string(versions["versions"].back()["version"].get<int64_t>());
    auto r = net::http_call(c.address(), "GET", "/api/v1/jobs/grpo-reverse/versions/" + newest, "",
                            c.token());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 410) << r->body;
    EXPECT_NE(r->body.find("is unavailable: publisher job-000001/trainer-0"), std::string::npos)
        << r->body;
    std::printf("%s\n", r->body.c_str());
    c.cli("job cancel grpo-reverse");
}

// A Python trainer publishes a version of another layout than the job's model (the SDK's
// Publisher leaves its tensors in the job's run directory); the built-in C++ rollout refuses it
// naming both fingerprints and the first differing tensor, as the Python reader does.
TEST(WeightsCluster, BuiltInRolloutNamesTheFirstTensorWhereAPythonTrainersLayoutDiffers) {
    const std::string sdk = std::string(TANDEM_BINARY_DIR) + "/python/tandem/__init__.py";
    if (!std::filesystem::exists(sdk))
        GTEST_SKIP() << "the Python SDK is not built (" << sdk << ")";
    if (std::system("/usr/bin/python3 -c 'import torch, yaml' >/dev/null 2>&1") != 0) {
        GTEST_SKIP() << "/usr/bin/python3 lacks torch or yaml (python3-torch, python3-yaml)";
    }
    LocalCluster c("weights_layouts", /*rollout_nodes=*/1);
    ASSERT_EQ(c.up().code, 0);
    const std::string job = c.write_file(
        "other-layout.yaml",
        "name: other-layout\nkind: grpo\nmax_actor_restarts: 0\n"
        "trainer:\n  command: [/usr/bin/python3, " +
            std::string(TANDEM_SOURCE_DIR) +
            "/tests/integration/weights/other_layout_trainer.py]\n"
            "rollout: {replicas: 1}\n"
            "model: {hidden_size: 64, num_layers: 1, num_heads: 4, num_kv_heads: 2}\n");
    auto sub = c.cli("job submit -f " + job);
    ASSERT_EQ(sub.code, 0) << sub.out;
    std::string logs;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        logs = c.cli("job logs other-layout").out;
        if (logs.find("fetching version 0 failed") != std::string::npos) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    c.cli("job cancel other-layout");
    EXPECT_NE(logs.find("layout mismatch: version 0 of job-000001 has layout fp:"),
              std::string::npos)
        << logs;
    EXPECT_NE(logs.find("; first difference at tensor 0 model.embed_tokens.weight: shape ["),
              std::string::npos)
        << logs;
    EXPECT_NE(logs.find("] expected, [3, 3] published"), std::string::npos) << logs;
}

}  // namespace
}  // namespace tandem::testing
