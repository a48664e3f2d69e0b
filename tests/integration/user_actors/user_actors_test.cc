// User actors (a job file's `trainer: {command: [...]}`, docs/python.md): a program that exits
// without reporting is named with its exit code and last stderr lines, and the Python GRPO
// example (examples/pytorch_grpo) trains the built-in C++ rollouts through the SDK, and the
// Python rollout example (examples/python_rollout) feeds the built-in trainer; both examples also
// run on a cluster with CURVE forced on (the SDK's trajectory sockets then use the job's keys).
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/net/curve.h"
#include "tests/integration/control/cluster_harness.h"
#include "tests/integration/control/job_faults.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

// Why the Python example cannot run here, or "" when it can.
std::string python_missing() {
    const std::string sdk = std::string(TANDEM_BINARY_DIR) + "/python/tandem/__init__.py";
    if (!std::filesystem::exists(sdk)) return "the tandem Python module is not built (" + sdk + ")";
    if (std::system("/usr/bin/python3 -c 'import torch, yaml' >/dev/null 2>&1") != 0)
        return "/usr/bin/python3 lacks torch or yaml (python3-torch, python3-yaml)";
    return "";
}

std::string example_job_file(const std::string& example) {
    return std::string(TANDEM_SOURCE_DIR) + "/examples/" + example + "/job.yaml";
}

// Brings up `c`, runs examples/<example>/job.yaml (job `job`) for `steps` steps with `overrides`
// to the end, and hands back its metrics rows (one per step, checked) and log lines.
void run_example(LocalCluster& c, const std::string& example, const std::string& job, int steps,
                 const std::string& overrides, nlohmann::json* rows, std::string* logs) {
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    auto sub = c.cli("job submit -f " + example_job_file(example) +
                     " algorithm.steps=" + std::to_string(steps) + " " + overrides + " --follow");
    *logs = c.cli("job logs " + job).out;
    ASSERT_EQ(sub.code, 0) << sub.out << "\n" << *logs;
    auto m = c.get("/api/v1/jobs/" + job + "/metrics");
    ASSERT_TRUE(m.is_object()) << "no metrics";
    *rows = m["metrics"];
    ASSERT_EQ(rows->size(), static_cast<size_t>(steps)) << m.dump();
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
    constexpr int kSteps = 12;
    nlohmann::json rows;
    std::string logs;
    ASSERT_NO_FATAL_FAILURE(run_example(c, "pytorch_grpo", "pytorch-grpo", kSteps,
                                        "algorithm.warm_start_steps=10 algorithm.optimizer.lr=2e-3",
                                        &rows, &logs));
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
                                  << rows.dump();
    // The rollouts that read those versions are the built-in ones.
    EXPECT_NE(logs.find("rollout-0"), std::string::npos) << logs;
}

// A small, quick pytorch_grpo job for the fault cases: the faults are the point, not learning.
std::string tiny_pytorch_job(int steps, const std::string& more) {
    return "job submit -f " + example_job_file("pytorch_grpo") +
           fmt::format(
               " algorithm.steps={} algorithm.warm_start_steps=0 "
               "algorithm.prompts_per_step=8 algorithm.group_size=4 model.hidden_size=32 "
               "model.num_layers=1 model.intermediate_size=64 {}",
               steps, more);
}

// The coordinator's metrics rows of `job` by step (the newest row of a step that ran twice).
std::map<int64_t, nlohmann::json> metrics_by_step(const LocalCluster& c, const std::string& job) {
    std::map<int64_t, nlohmann::json> out;
    const auto m = c.get("/api/v1/jobs/" + job + "/metrics?limit=100000");
    if (!m.is_object()) return out;
    for (const auto& r : m["metrics"]) out[r["step"].get<int64_t>()] = r["values"];
    return out;
}

// kill -9 of the coordinator while the Python trainer trains and `tandem up` again (as
// GrpoFaults.CoordinatorKilledMidJob... does for the built-in trainer): the SDK's runtime waits
// out the restart through its agent (version numbers, metrics, endpoints are asked again), so no
// actor restarts, every step runs once on the version published before it, and the coordinator
// has every step's metrics.
TEST(UserActors, PythonTrainerSurvivesACoordinatorKillWithNothingLostAndNoRestart) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    LocalCluster c("user-coord-kill", /*rollout_nodes=*/2);
    ASSERT_EQ(c.up().code, 0);
    constexpr int kSteps = 30;
    auto sub = c.cli(tiny_pytorch_job(kSteps, ""));
    ASSERT_EQ(sub.code, 0) << sub.out;
    const std::string job = "pytorch-grpo";
    ASSERT_TRUE(wait_until([&] { return trainer_progress_step(c, job) >= 4; }, 90s))
        << job_story(c, job);
    const std::string events_before = c.cli("job events " + job).out;

    ASSERT_NO_FATAL_FAILURE(kill_and_bring_back_the_coordinator(c));
    const int64_t back_at_step = trainer_progress_step(c, job);

    ASSERT_TRUE(wait_until([&] { return c.job_state(job) == "SUCCEEDED"; }, 120s))
        << job_story(c, job);
    // The trainer waits for the coordinator's number of every version, so it cannot finish
    // while the coordinator is down.
    EXPECT_LT(back_at_step, kSteps) << "the job ended before the coordinator came back";
    const auto finished = c.job(job);
    EXPECT_EQ(finished["restarts_used"], 0);
    for (const auto& a : finished["actors"]) EXPECT_EQ(a["attempt"], 1) << a.dump();
    const std::string ev = c.cli("job events " + job).out;
    EXPECT_EQ(ev.find("actor_restarted"), std::string::npos) << ev;
    EXPECT_EQ(ev.rfind(events_before, 0), 0u) << "history changed";

    // Every step once at the coordinator, by the first attempt, strictly on-policy (trained on
    // the version published before it), with rising numbers.
    const auto rows = metrics_by_step(c, job);
    ASSERT_EQ(rows.size(), static_cast<size_t>(kSteps)) << job_story(c, job);
    int64_t prev = -1;
    for (const auto& [step, v] : rows) {
        EXPECT_EQ(v["trainer/attempt"], 1) << "step " << step;
        const int64_t version = v["weights/version"].get<int64_t>();
        if (prev >= 0) {
            EXPECT_GT(version, prev) << "step " << step;
            EXPECT_EQ(v["weights/consumed_version_min"].get<int64_t>(), prev) << "step " << step;
            EXPECT_EQ(v["weights/consumed_version_max"].get<int64_t>(), prev) << "step " << step;
        }
        prev = version;
    }
}

// kill -9 of the Python trainer after its second checkpoint: its agent starts it again (a new
// attempt, a new fence), it resumes from its newest checkpoint (tandem.Checkpoints: step,
// version, optimizer state), numbers its versions above every version before, trains only on
// trajectories of its own versions (a batch of the old fence, pushed to its new inbox, is
// dropped) and the job finishes.
TEST(UserActors, KilledPythonTrainerResumesFromItsCheckpointAndNumbersAboveTheOldVersions) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    LocalCluster c("user-trainer-kill", /*rollout_nodes=*/2);
    ASSERT_EQ(c.up().code, 0);
    constexpr int kSteps = 30, kEvery = 3;
    auto sub = c.cli(
        tiny_pytorch_job(kSteps, fmt::format("checkpoint.every_steps={} checkpoint.resume=auto "
                                             "checkpoint.keep_last=50 max_actor_restarts=2",
                                             kEvery)));
    ASSERT_EQ(sub.code, 0) << sub.out;
    const std::string job = "pytorch-grpo";
    const std::string ckpt_root = c.run_dir() + "/jobs/job-000001/checkpoints";
    const std::string second = fmt::format("{}/step-{:08d}", ckpt_root, 2 * kEvery);
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(second); }, 90s))
        << job_story(c, job);
    // The trainer actor: the child of the trainer node's agent.
    const auto kids = run_cmd(fmt::format("pgrep -P {}", c.pid_of("trainer-0")));
    const pid_t trainer = static_cast<pid_t>(std::atoi(kids.out.c_str()));
    ASSERT_GT(trainer, 0) << kids.out;
    ASSERT_EQ(::kill(trainer, SIGKILL), 0);

    // As soon as attempt 2 announces its inbox (before it trains), a batch of the old epoch
    // arrives there (what a rollout of the first run still had in flight): it is dropped.
    std::string inbox;
    ASSERT_TRUE(wait_until(
        [&] {
            for (const auto& a : c.job(job).value("actors", nlohmann::json::array())) {
                if (a.value("actor", "").ends_with("/trainer-0") && a.value("attempt", 0) == 2)
                    inbox =
                        a.value("endpoints", nlohmann::json::object()).value("trajectories", "");
            }
            return !inbox.empty();
        },
        90s))
        << job_story(c, job);
    constexpr int kOldEpochTrajectories = 7;
    const std::string forge = c.write_file(
        "old_epoch_batch.py",
        fmt::format(
            "import json, sys, tandem\n"
            "t = {{'p': [1, 5, 6], 'c': [7, 2], 'lp': [-1.0, -1.0], 'r': 1.0, 'g': 0, "
            "'v': 1}}\n"
            "batch = {{'rollout': 0, 'batch': 0, 'version': 1, "
            "'fence': {{'job_attempt': 1, 'trainer_epoch': 1}}, 'trajectories': [t] * {}}}\n"
            "tandem._tandem.TrajectoryOutbox(sys.argv[1], '{{}}')"
            ".send_json(json.dumps(batch), 10.0)\n",
            kOldEpochTrajectories));
    const auto pushed = run_cmd("PYTHONPATH=" + std::string(TANDEM_BINARY_DIR) +
                                "/python /usr/bin/python3 " + forge + " " + inbox);
    ASSERT_EQ(pushed.code, 0) << pushed.out;

    ASSERT_TRUE(wait_until([&] { return c.job_state(job) == "SUCCEEDED"; }, 120s))
        << job_story(c, job);
    const std::string ev = c.cli("job events " + job).out;
    EXPECT_NE(ev.find("/trainer-0 restarted"), std::string::npos) << ev;

    // It said where it resumed: a checkpoint at or after the second one.
    const std::string logs = c.cli("job logs " + job).out;
    const std::string said = "resumed from " + ckpt_root + "/step-";
    const size_t at = logs.find(said);
    ASSERT_NE(at, std::string::npos) << logs;
    const int64_t resumed_at = std::atoll(logs.c_str() + at + said.size());
    EXPECT_GE(resumed_at, 2 * kEvery);
    EXPECT_EQ(resumed_at % kEvery, 0);

    // Steps up to the checkpoint are the first attempt's; every later one ran (again) in the
    // second, under a higher fence, on versions numbered above all of the first attempt's.
    const auto rows = metrics_by_step(c, job);
    ASSERT_EQ(rows.size(), static_cast<size_t>(kSteps)) << job_story(c, job);
    int64_t prev = -1, first_epoch = -1, dropped_after_resume = 0;
    for (const auto& [step, v] : rows) {
        if (step > resumed_at)
            dropped_after_resume += v["weights/dropped_trajectories"].get<int64_t>();
        const int64_t attempt = v["trainer/attempt"].get<int64_t>();
        const int64_t epoch = v["weights/fence_trainer_epoch"].get<int64_t>();
        const int64_t version = v["weights/version"].get<int64_t>();
        const int64_t consumed_min = v["weights/consumed_version_min"].get<int64_t>();
        const int64_t consumed_max = v["weights/consumed_version_max"].get<int64_t>();
        EXPECT_EQ(attempt, step <= resumed_at ? 1 : 2) << "step " << step;
        if (step == 1) first_epoch = epoch;
        EXPECT_EQ(epoch > first_epoch, step > resumed_at) << "step " << step;
        EXPECT_GT(version, prev) << "step " << step;
        EXPECT_EQ(consumed_min, consumed_max) << "step " << step;
        if (step == resumed_at + 1) {
            // The resumed run's first version: the checkpoint's weights under a new number.
            EXPECT_GT(consumed_min, prev) << "step " << step << " trained on an old version";
        } else if (step > 1) {
            EXPECT_EQ(consumed_min, prev) << "step " << step;
        }
        prev = version;
    }
    // The old epoch's batch was dropped, not trained on (with whatever the first run's rollouts
    // still sent).
    EXPECT_GE(dropped_after_resume, kOldEpochTrajectories);
}

TEST(UserActors, PythonRolloutsReadEveryVersionOfTheBuiltInTrainer) {
    if (auto why = python_missing(); !why.empty()) GTEST_SKIP() << why;
    LocalCluster c("user-rollout", /*rollout_nodes=*/2);
    constexpr int kSteps = 5;
    nlohmann::json rows;
    std::string logs;
    ASSERT_NO_FATAL_FAILURE(run_example(c, "python_rollout", "python-rollout", kSteps,
                                        "algorithm.warm_start_steps=0", &rows, &logs));
    // The built-in trainer trained every step on the Python rollouts' trajectories...
    for (const auto& row : rows) {
        EXPECT_EQ(row["values"]["weights/rejected_unknown_version"], 0) << row.dump();
        EXPECT_EQ(row["values"]["weights/rejected_fenced"], 0) << row.dump();
    }
    // ...and each Python rollout fetched every version it generated with, in order. Agents ship
    // actor logs every 200 ms, so a rollout's last lines may reach the coordinator after the job
    // has ended: read the logs again until they are all there.
    const auto missing_fetch = [&](const std::string& logs) -> std::string {
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
                if (at == std::string::npos) return r + " never logged: " + line;
                from = at;
            }
        }
        return "";
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::string missing = missing_fetch(logs);
    while (!missing.empty() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        logs = c.cli("job logs python-rollout").out;
        missing = missing_fetch(logs);
    }
    EXPECT_EQ(missing, "") << logs;
}

// Runs examples/<example>/job.yaml (job `job`) for 2 steps on a one-rollout cluster with
// security.curve: on, and checks that its trainer trained both steps, refused no trajectory
// connection, and that the Python side logged its socket as CURVE.
void run_example_over_curve(const std::string& cluster, const std::string& example,
                            const std::string& job) {
    LocalCluster c(cluster, /*rollout_nodes=*/1);
    std::ofstream(c.cluster_file(), std::ios::app) << "security:\n  curve: on\n";
    constexpr int kSteps = 2;
    nlohmann::json rows;
    std::string logs;
    ASSERT_NO_FATAL_FAILURE(run_example(
        c, example, job, kSteps, "algorithm.warm_start_steps=0 rollout.replicas=1", &rows, &logs));
    for (const auto& row : rows) {
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
