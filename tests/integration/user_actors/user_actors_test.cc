// User actors (a job file's `trainer: {command: [...]}`, docs/python.md): a program that exits
// without reporting is named with its exit code and last stderr lines, and the Python GRPO
// example (examples/pytorch_grpo) trains the built-in C++ rollouts through the SDK, and the
// Python rollout example (examples/python_rollout) feeds the built-in trainer; both examples also
// run on a cluster with CURVE forced on (the SDK's trajectory sockets then use the job's keys).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/net/curve.h"
#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

// Why the Python example cannot run here, or "" when it can.
std::string python_missing() {
    const std::string sdk = std::string(TANDEM_BINARY_DIR) + "/python/tandem/__init__.py";
    if (!std::filesystem::exists(sdk)) return "the tandem Python module is not built (" + sdk + ")";
    if (std::system("/usr/bin/python3 -c 'import torch, yaml' >/dev/null 2>&1") != 0)
        return "/usr/bin/python3 lacks torch or yaml (python3-torch, python3-yaml)";
    return "";
}

TEST(UserActors, AnActorThatExitsWithoutReportingIsNamedWithCodeAndLastStderrLines) {
    LocalCluster c("user-exit", /*rollout_nodes=*/1);
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string job =
        c.write_file("exit3.yaml",
                     "name: exit3\nkind: diagnostic\ndiagnostic: {duration_s: 30}\n"
                     "trainer:\n  command: [sh, -c, 'echo starting; echo \"first problem\" >&2; "
                     "echo \"Traceback: boom\" >&2; exit 3']\nrollout: {replicas: 1}\n");
    auto sub = c.cli("job submit -f " + job + " --follow");
    EXPECT_NE(sub.code, 0) << sub.out;
    const std::string expected =
        "exited with code 3; last stderr lines: first problem | "
        "Traceback: boom";
    const std::string status = c.cli("job status exit3").out;
    EXPECT_NE(status.find(expected), std::string::npos) << status;
    const std::string events = c.cli("job events exit3").out;
    EXPECT_NE(events.find(expected), std::string::npos) << events;
    // Its stdout and stderr are the job's log lines.
    const std::string logs = c.cli("job logs exit3").out;
    EXPECT_NE(logs.find("starting"), std::string::npos) << logs;
    EXPECT_NE(logs.find("first problem"), std::string::npos) << logs;
}

TEST(UserActors, AMissingProgramIsNamedWithItsField) {
    LocalCluster c("user-missing", /*rollout_nodes=*/1);
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string job =
        c.write_file("missing.yaml",
                     "name: missing\nkind: diagnostic\ndiagnostic: {duration_s: 30}\n"
                     "trainer:\n  command: [./no-such-train.py]\nrollout: {replicas: 1}\n");
    auto sub = c.cli("job submit -f " + job + " --follow");
    EXPECT_NE(sub.code, 0) << sub.out;
    const std::string status = c.cli("job status missing").out;
    EXPECT_NE(status.find("trainer.command: " + c.path("no-such-train.py") +
                          " is not an executable file"),
              std::string::npos)
        << status;
}

TEST(UserActors, PythonTrainerExampleTrainsTheBuiltInRollouts) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    LocalCluster c("user-pytorch", /*rollout_nodes=*/2);
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string job_file = std::string(TANDEM_SOURCE_DIR) + "/examples/pytorch_grpo/job.yaml";
    constexpr int kSteps = 12;
    auto sub = c.cli("job submit -f " + job_file + " algorithm.steps=" + std::to_string(kSteps) +
                     " algorithm.warm_start_steps=10 algorithm.optimizer.lr=2e-3 --follow");
    const std::string logs = c.cli("job logs pytorch-grpo").out;
    ASSERT_EQ(sub.code, 0) << sub.out << "\n" << logs;

    auto m = c.get("/api/v1/jobs/pytorch-grpo/metrics");
    ASSERT_TRUE(m.is_object()) << "no metrics";
    const auto& rows = m["metrics"];
    ASSERT_EQ(rows.size(), static_cast<size_t>(kSteps)) << m.dump();
    double first = 0, last = 0;
    int64_t prev_version = -1;
    for (size_t i = 0; i < rows.size(); ++i) {
        const auto& v = rows[i]["values"];
        const double r = v["rollout/reward_mean"].get<double>();
        if (i < 3) first += r / 3;
        if (i + 3 >= rows.size()) last += r / 3;
        // The built-in rollouts generated every step's trajectories with the version the Python
        // trainer published before it (strict on-policy), and nothing else.
        const auto consumed_min = v["weights/consumed_version_min"].get<int64_t>();
        const auto consumed_max = v["weights/consumed_version_max"].get<int64_t>();
        if (prev_version >= 0) {
            EXPECT_EQ(consumed_min, prev_version) << "step " << i + 1;
            EXPECT_EQ(consumed_max, prev_version) << "step " << i + 1;
        }
        prev_version = v["weights/version"].get<int64_t>();
        // Same weights, same tokens: the PyTorch policy gives the C++ rollouts' log-probs.
        EXPECT_LT(v["train/onpolicy_ratio_error"].get<double>(), 1e-3) << "step " << i + 1;
    }
    EXPECT_GT(last, first + 0.02) << "reward of the first 3 steps " << first << ", last 3 " << last
                                  << "\n"
                                  << m.dump();
    // The rollouts that read those versions are the built-in ones.
    EXPECT_NE(logs.find("rollout-0"), std::string::npos) << logs;
}

TEST(UserActors, PythonRolloutsReadEveryVersionOfTheBuiltInTrainer) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    LocalCluster c("user-rollout", /*rollout_nodes=*/2);
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string job_file =
        std::string(TANDEM_SOURCE_DIR) + "/examples/python_rollout/job.yaml";
    constexpr int kSteps = 5;
    auto sub = c.cli("job submit -f " + job_file + " algorithm.steps=" + std::to_string(kSteps) +
                     " algorithm.warm_start_steps=0 --follow");
    const std::string logs = c.cli("job logs python-rollout").out;
    ASSERT_EQ(sub.code, 0) << sub.out << "\n" << logs;
    // The built-in trainer trained every step on the Python rollouts' trajectories...
    auto m = c.get("/api/v1/jobs/python-rollout/metrics");
    ASSERT_TRUE(m.is_object()) << "no metrics";
    ASSERT_EQ(m["metrics"].size(), static_cast<size_t>(kSteps)) << m.dump();
    for (const auto& row : m["metrics"]) {
        EXPECT_EQ(row["values"]["weights/rejected_unknown_version"], 0) << row.dump();
        EXPECT_EQ(row["values"]["weights/rejected_fenced"], 0) << row.dump();
    }
    // ...and each Python rollout fetched every version it generated with, in order.
    for (const std::string r : {"rollout-0", "rollout-1"}) {
        size_t from = 0;
        for (int v = 0; v < kSteps; ++v) {
            const std::string line = fmt::format("fetched version {} (step {}", v, v);
            size_t at = std::string::npos;
            for (size_t i = logs.find(line, from); i != std::string::npos;
                 i = logs.find(line, i + 1)) {
                const size_t bol = logs.rfind('\n', i);
                if (logs.substr(bol + 1, i - bol).find("/" + r) != std::string::npos) {
                    at = i;
                    break;
                }
            }
            ASSERT_NE(at, std::string::npos) << r << " never logged: " << line << "\n" << logs;
            from = at;
        }
    }
}

// Runs examples/<example>/job.yaml (job `job`) for 2 steps on a one-rollout cluster with
// security.curve: on, and checks that its trainer trained both steps, refused no trajectory
// connection, and that the Python side logged its socket as CURVE.
void run_example_over_curve(const std::string& cluster, const std::string& example,
                            const std::string& job) {
    LocalCluster c(cluster, /*rollout_nodes=*/1);
    std::ofstream(c.cluster_file(), std::ios::app) << "security:\n  curve: on\n";
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    const std::string job_file =
        std::string(TANDEM_SOURCE_DIR) + "/examples/" + example + "/job.yaml";
    constexpr int kSteps = 2;
    auto sub = c.cli("job submit -f " + job_file + " algorithm.steps=" + std::to_string(kSteps) +
                     " algorithm.warm_start_steps=0 rollout.replicas=1 --follow");
    const std::string logs = c.cli("job logs " + job).out;
    ASSERT_EQ(sub.code, 0) << sub.out << "\n" << logs;
    auto m = c.get("/api/v1/jobs/" + job + "/metrics");
    ASSERT_TRUE(m.is_object()) << "no metrics";
    ASSERT_EQ(m["metrics"].size(), static_cast<size_t>(kSteps)) << m.dump();
    for (const auto& row : m["metrics"]) {
        EXPECT_EQ(row["values"].value("trajectories/refused_total", -1.0), 0.0) << row.dump();
    }
    EXPECT_NE(logs.find("trajectories over CURVE"), std::string::npos) << logs;
}

// The built-in trainer's PULL is a CURVE server that accepts only the job's rollout keys: the
// Python rollout's batches reach it only if the SDK's outbox speaks CURVE with its key.
TEST(UserActors, PythonRolloutsFeedTheBuiltInTrainerOverCurve) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    if (!net::curve_available()) GTEST_SKIP() << "this libzmq has no CURVE";
    run_example_over_curve("user-curve", "python_rollout", "python-rollout");
}

// The Python trainer's inbox is the CURVE server here: the built-in rollout's batches reach it
// only if it took the job's keys (its own and its rollouts') from the placement.
TEST(UserActors, PythonTrainerTrainsTheBuiltInRolloutsOverCurve) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    if (!net::curve_available()) GTEST_SKIP() << "this libzmq has no CURVE";
    run_example_over_curve("user-curve-trainer", "pytorch_grpo", "pytorch-grpo");
}

}  // namespace
}  // namespace tandem::testing
