// The control plane as users run it: real coordinator and node-agent processes on loopback,
// started with `tandem up`, driven with the `tandem` CLI and the HTTP API.
#include <signal.h>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

std::string diagnostic_job(double duration_s, int max_restarts = 0, const std::string& extra = "") {
    return fmt::format(
        "name: diag\nkind: diagnostic\nmax_actor_restarts: {}\ntrainer: {{replicas: 1}}\n"
        "rollout: {{replicas: 2}}\ndiagnostic: {{duration_s: {}, report_every_s: 0.1}}\n{}",
        max_restarts, duration_s, extra);
}

std::string events_text(LocalCluster& c, const std::string& job) {
    return c.cli("job events " + job).out;
}

TEST(ControlPlane, UpSubmitFollowDiagnosticJobSucceeds) {
    LocalCluster c("follow");
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    EXPECT_NE(up.out.find("3 nodes registered"), std::string::npos) << up.out;

    auto again = c.up();  // starts nothing that runs
    EXPECT_EQ(again.code, 0) << again.out;
    EXPECT_NE(again.out.find("nothing to start"), std::string::npos) << again.out;

    const std::string job_file = c.write_file("diag.yaml", diagnostic_job(1.0));
    auto sub = c.cli("job submit -f " + job_file + " --follow");
    EXPECT_EQ(sub.code, 0) << sub.out;
    EXPECT_NE(sub.out.find("SUCCEEDED"), std::string::npos) << sub.out;

    const std::string ev = events_text(c, "job-000001");
    for (const char* kind : {"submitted", "placed", "actor_started", "actor_exited", "finished"}) {
        EXPECT_NE(ev.find(kind), std::string::npos) << kind << "\n" << ev;
    }
    auto logs = c.cli("job logs job-000001");
    EXPECT_EQ(logs.code, 0);
    EXPECT_NE(logs.out.find("diagnostic actor job-000001/rollout-1"), std::string::npos)
        << logs.out;

    auto nodes = c.cli("nodes --output json");
    auto j = nlohmann::json::parse(nodes.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << nodes.out;
    EXPECT_EQ(j["nodes"].size(), 3u);

    auto metrics = net::http_call(c.address(), "GET", "/metrics", "", c.token());
    ASSERT_TRUE(metrics.ok());
    EXPECT_NE(metrics->body.find("tandem_jobs{state=\"SUCCEEDED\"} 1"), std::string::npos)
        << metrics->body;
    EXPECT_NE(metrics->body.find("tandem_heartbeat_rtt_seconds_count"), std::string::npos);
}

TEST(ControlPlane, FailingActorFailsJobNamingActorNodeAndError) {
    LocalCluster c("fail");
    ASSERT_EQ(c.up().code, 0);
    const std::string job_file = c.write_file("diag.yaml", diagnostic_job(5.0, 0, "") + "");
    auto sub = c.cli("job submit -f " + job_file + " diagnostic.fail_after_s=0.3 --follow");
    EXPECT_EQ(sub.code, 1) << sub.out;
    auto j = c.job("job-000001");
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["state"], "FAILED");
    const std::string reason = j["reason"].get<std::string>();
    EXPECT_NE(reason.find("actor job-000001/"), std::string::npos) << reason;
    EXPECT_NE(reason.find(" on "), std::string::npos) << reason;
    EXPECT_NE(reason.find("diagnostic failure after"), std::string::npos) << reason;
}

TEST(ControlPlane, KilledRolloutNodeIsDeclaredDeadAndItsActorsRestartElsewhere) {
    LocalCluster c("killnode");
    ASSERT_EQ(c.up().code, 0);
    const std::string job_file = c.write_file("diag.yaml", diagnostic_job(4.0, 2));
    auto sub = c.cli("job submit -f " + job_file);
    ASSERT_EQ(sub.code, 0) << sub.out;
    ASSERT_TRUE(wait_until(
        [&] {
            auto j = c.job("job-000001");
            if (!j.is_object()) return false;
            for (const auto& a : j["actors"]) {
                if (a["phase"] != "running") return false;
            }
            return true;
        },
        10s));
    // The rollouts are on distinct nodes (replicas of one role spread): kill rollout-1's node
    // agent (its actor dies with it).
    std::string victim;
    const auto placed = c.job("job-000001");
    for (const auto& a : placed["actors"]) {
        if (a["actor"] == "job-000001/rollout-1") victim = a["node"].get<std::string>();
    }
    ASSERT_FALSE(victim.empty());
    const auto killed_at = std::chrono::steady_clock::now();
    ASSERT_EQ(::kill(c.pid_of(victim), SIGKILL), 0);
    ASSERT_TRUE(wait_until(
        [&] {
            const auto nodes = c.get("/api/v1/nodes");
            for (const auto& n : nodes["nodes"]) {
                if (n["id"] == victim && n["state"] == "dead") return true;
            }
            return false;
        },
        5s));
    const double dead_after =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
    // dead_after_ms plus one heartbeat, with slack for the sweep period and a loaded machine.
    EXPECT_LE(dead_after, (LocalCluster::kDeadAfterMs + LocalCluster::kHeartbeatMs) / 1000.0 + 0.5);
    ASSERT_TRUE(wait_until([&] { return c.job_state("job-000001") == "SUCCEEDED"; }, 20s))
        << c.job("job-000001").dump(2);
    const std::string ev = events_text(c, "job-000001");
    EXPECT_NE(ev.find("node_lost"), std::string::npos) << ev;
    EXPECT_NE(ev.find("actor_restarted"), std::string::npos) << ev;
    const auto finished = c.job("job-000001");
    for (const auto& a : finished["actors"]) {
        if (a["actor"].get<std::string>().find("rollout") != std::string::npos) {
            EXPECT_NE(a["node"], victim);
            // Only the victim's actor was restarted.
            EXPECT_EQ(a["attempt"], a["actor"] == "job-000001/rollout-1" ? 2 : 1) << a.dump();
        }
    }
}

TEST(ControlPlane, CoordinatorKilledMidJobComesBackWithNothingLost) {
    LocalCluster c("killcoord");
    ASSERT_EQ(c.up().code, 0);
    const std::string job_file = c.write_file("diag.yaml", diagnostic_job(4.0));
    ASSERT_EQ(c.cli("job submit -f " + job_file).code, 0);
    ASSERT_TRUE(wait_until([&] { return c.job_state("job-000001") == "RUNNING"; }, 10s));
    ASSERT_TRUE(wait_until(
        [&] {
            auto j = c.job("job-000001");
            for (const auto& a : j["actors"]) {
                if (a["phase"] != "running") return false;
            }
            return true;
        },
        10s));
    const std::string events_before = events_text(c, "job-000001");
    ASSERT_EQ(::kill(c.pid_of("coordinator"), SIGKILL), 0);
    ASSERT_TRUE(wait_until([&] { return c.get("/healthz").is_null(); }, 5s));

    const auto restart_at = std::chrono::steady_clock::now();
    auto up = c.up();  // brings back only the coordinator
    ASSERT_EQ(up.code, 0) << up.out;
    EXPECT_NE(up.out.find("started coordinator"), std::string::npos) << up.out;
    EXPECT_EQ(up.out.find("started tandem-"), std::string::npos) << up.out;
    const double reregistered =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - restart_at).count();
    // `up` returns once all nodes are registered again: within two heartbeat intervals of the
    // coordinator answering (plus its start-up).
    EXPECT_LT(reregistered, 2 * LocalCluster::kHeartbeatMs / 1000.0 + 1.5);

    ASSERT_TRUE(wait_until([&] { return c.job_state("job-000001") == "SUCCEEDED"; }, 20s))
        << c.job("job-000001").dump(2);
    auto j = c.job("job-000001");
    EXPECT_EQ(j["restarts_used"], 0);
    for (const auto& a : j["actors"]) EXPECT_EQ(a["attempt"], 1) << a.dump();  // never restarted
    const std::string events_after = events_text(c, "job-000001");
    EXPECT_EQ(events_after.rfind(events_before, 0), 0u) << "history changed:\n"
                                                        << events_before << "\n---\n"
                                                        << events_after;
    EXPECT_EQ(events_after.find("actor_restarted"), std::string::npos) << events_after;
    auto cluster = c.get("/api/v1/cluster");
    EXPECT_EQ(cluster["epoch"], 2);
}

TEST(ControlPlane, WrongApiTokenIsRefused) {
    LocalCluster c("token");
    ASSERT_EQ(c.up().code, 0);
    const std::string spec = nlohmann::json({{"spec_yaml", diagnostic_job(0.1)}}).dump();
    auto none = net::http_call(c.address(), "POST", "/api/v1/jobs", spec);
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(none->status, 401);
    auto wrong = net::http_call(c.address(), "POST", "/api/v1/jobs", spec, "not-the-token");
    ASSERT_TRUE(wrong.ok());
    EXPECT_EQ(wrong->status, 401);
    auto right = net::http_call(c.address(), "POST", "/api/v1/jobs", spec, c.token());
    ASSERT_TRUE(right.ok());
    EXPECT_EQ(right->status, 201) << right->body;
    auto jobs = c.get("/api/v1/jobs");
    EXPECT_EQ(jobs["jobs"].size(), 1u);  // the refused ones left nothing behind
}

TEST(ControlPlane, WrongClusterSecretAndDuplicateNodeIdAreRefused) {
    LocalCluster c("secret");
    ASSERT_EQ(c.up().code, 0);
    const std::string bin = std::string(TANDEM_BINARY_DIR) + "/bin/tandem-rollout-node";
    const std::string bad_secret = c.write_file("bad-secret", "not-the-secret\n");
    auto refused = run_cmd(
        fmt::format("timeout 20 {} --cluster {} --node rollout-1 --run-dir {} secret_file={}", bin,
                    c.cluster_file(), c.path("other-run"), bad_secret));
    EXPECT_EQ(refused.code, 2) << refused.out;
    EXPECT_NE(refused.out.find("wrong cluster secret"), std::string::npos) << refused.out;

    auto duplicate = run_cmd(fmt::format("timeout 20 {} --cluster {} --node rollout-1 --run-dir {}",
                                         bin, c.cluster_file(), c.run_dir()));
    EXPECT_EQ(duplicate.code, 2) << duplicate.out;
    EXPECT_NE(duplicate.out.find("already registered by a live agent"), std::string::npos)
        << duplicate.out;
}

TEST(ControlPlane, UnplaceableJobStaysPendingWithReasonAndDryRunExplains) {
    LocalCluster c("pending", 1);
    ASSERT_EQ(c.up().code, 0);
    const std::string job_file = c.write_file("gpu.yaml", diagnostic_job(1.0, 0, ""));
    auto dry = c.cli("job submit -f " + job_file + " rollout.resources.gpus=1 --dry-run");
    EXPECT_EQ(dry.code, 1) << dry.out;  // a plan that cannot be placed: the dry run fails
    EXPECT_NE(dry.out.find("cannot be placed now: needs 2 rollout actors with 1 gpu"),
              std::string::npos)
        << dry.out;
    auto sub = c.cli("job submit -f " + job_file + " rollout.resources.gpus=1");
    EXPECT_EQ(sub.code, 0) << sub.out;
    EXPECT_EQ(c.job_state("job-000001"), "PENDING");
    EXPECT_NE(c.job("job-000001")["reason"].get<std::string>().find("rollout-0: 0 free gpus"),
              std::string::npos)
        << c.job("job-000001").dump();
    EXPECT_EQ(c.cli("job cancel job-000001").code, 0);
    EXPECT_EQ(c.job_state("job-000001"), "CANCELLED");
    auto bad = c.cli("job submit -f " + job_file + " rollout.replicas=lots");
    EXPECT_EQ(bad.code, 2) << bad.out;
    EXPECT_NE(bad.out.find("override 'rollout.replicas=lots'"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace tandem::testing
