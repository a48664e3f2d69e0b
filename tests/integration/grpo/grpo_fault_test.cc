// Faults in a GRPO job on a real local cluster (coordinator, node agents and actors as processes):
//  - the trainer actor is killed (SIGKILL) after a checkpoint; the coordinator restarts it
//    (max_actor_restarts) and, with checkpoint.resume: auto, it continues from the checkpoint's
//    step and data cursor and numbers its versions above every version published before;
//  - a rollout node is killed (SIGKILL) mid-job; the coordinator restarts its actor on the other
//    rollout node and the job finishes. With CURVE forced on, batches pushed to the trainer's
//    socket by a peer that is not one of the job's rollouts (no CURVE, or a key of its own) are
//    refused at the socket and counted; trajectories of versions the trainer never published,
//    forged here and pushed with a rollout's key, are rejected by the trainer and counted.
//  - a rollout node and its actor are killed (SIGKILL) and no other node has room: the actor
//    waits as pending, the trainer takes each step from the live rollout, and the job finishes;
//    when the node registers again the pending actor is placed there and full steps resume.
// They read what the trainer consumed per step from its metrics file
// (<run_dir>/jobs/<job>/metrics.jsonl) and check it against the coordinator's version table.
#include <signal.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <zmq.hpp>

#include "common/net/trajectory_curve.h"
#include "common/rl/grpo_protocol.h"
#include "tests/integration/control/cluster_harness.h"
#include "tests/integration/control/job_faults.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr int kPrompts = 8;  // prompts_per_step

// A tiny policy and few steps: the faults are the point, not learning.
std::string tiny_job_overrides(int steps) {
    return fmt::format(
        "algorithm.warm_start_steps=0 algorithm.steps={} algorithm.prompts_per_step={} "
        "algorithm.group_size=4 model.hidden_size=32 model.num_layers=1 "
        "model.intermediate_size=64 max_actor_restarts=2",
        steps, kPrompts);
}

std::string job_file() {
    return std::string(TANDEM_SOURCE_DIR) + "/configs/jobs/grpo-reverse.yaml";
}

// The trainer's per-step rows, in the order it wrote them (every attempt appends).
std::vector<Json> metrics_rows(const LocalCluster& c, const std::string& job) {
    std::ifstream in(c.run_dir() + "/jobs/" + job + "/metrics.jsonl");
    std::vector<Json> rows;
    std::string line;
    while (std::getline(in, line)) {
        auto j = Json::parse(line, nullptr, false);
        if (j.is_object()) rows.push_back(std::move(j));
    }
    return rows;
}

std::string events_text(LocalCluster& c, const std::string& job) {
    return c.cli("job events " + job).out;
}

// Versions in the coordinator's table, by number, with the time each was published.
std::map<int64_t, int64_t> table_versions(const LocalCluster& c, const std::string& job) {
    std::map<int64_t, int64_t> out;
    const auto v = c.get("/api/v1/jobs/" + job + "/versions");
    if (!v.is_object()) return out;
    for (const auto& r : v["versions"]) out[r["version"].get<int64_t>()] = r["published_ns"];
    return out;
}

// Every row: the trajectories consumed for step k came from versions the trainer run that wrote
// the row published (not below its first version, not above the version it held), within the
// staleness bound, and every such version is in the coordinator's table. Returns the number of
// trajectories checked.
int64_t check_consumed_versions(const std::vector<Json>& rows,
                                const std::map<int64_t, int64_t>& table, int64_t max_staleness) {
    std::map<int64_t, int64_t> first_version_of_attempt;  // the version the run started at
    int64_t checked = 0;
    for (const auto& row : rows) {
        const Json& m = row["metrics"];
        const int64_t attempt = m["trainer/attempt"];
        const int64_t published = m["weights/version"];  // after this step
        const int64_t held = published - 1;              // while collecting
        if (!first_version_of_attempt.count(attempt)) first_version_of_attempt[attempt] = held;
        const int64_t first = first_version_of_attempt[attempt];
        for (const auto& [v_text, n] : m["weights/consumed_versions"].items()) {
            const int64_t v = std::stoll(v_text);
            EXPECT_GE(v, first) << "step " << row["step"] << " attempt " << attempt;
            EXPECT_LE(v, held) << "step " << row["step"];
            EXPECT_LE(held - v, max_staleness) << "step " << row["step"];
            EXPECT_TRUE(table.count(v)) << "version " << v << " is not in the coordinator's table";
            checked += n.get<int64_t>();
        }
    }
    return checked;
}

// Kills the trainer actor (or its node's agent, which takes the actor along) after the second
// checkpoint and checks that the restarted trainer resumed from the newest checkpoint.
void resume_after_trainer_kill(bool kill_node) {
    // Two trainer nodes: a trainer whose node is lost moves to the other one.
    LocalCluster c(kill_node ? "grpo_resume_node" : "grpo_resume", 2, kill_node ? 2 : 1);
    ASSERT_EQ(c.up().code, 0);
    // About 1 s of training on an idle machine: long enough that the kill lands mid-job.
    const int kSteps = 100, kEvery = 5;
    auto sub = c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(kSteps) +
                     fmt::format(" async.max_staleness=0 checkpoint.every_steps={} "
                                 "checkpoint.resume=auto checkpoint.keep_last=50",
                                 kEvery));
    ASSERT_EQ(sub.code, 0) << sub.out;
    const std::string job = "job-000001";
    const std::string ckpt_root = c.run_dir() + "/jobs/" + job + "/checkpoints";

    // Wait for the second checkpoint (so the restart must pick the newest, not the first).
    const std::string second = fmt::format("{}/step-{:08d}", ckpt_root, 2 * kEvery);
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(second); }, 40s))
        << c.job(job).dump(2);
    std::string node;
    const Json placed = c.job(job);
    for (const auto& a : placed["actors"]) {
        if (a["actor"] == job + "/trainer-0") node = a["node"];
    }
    ASSERT_FALSE(node.empty()) << placed.dump(2);
    const pid_t agent = c.pid_of(node);
    ASSERT_GT(agent, 0);
    if (kill_node) {
        ASSERT_EQ(::kill(agent, SIGKILL), 0);
    } else {
        // The trainer actor: the child of the trainer node's agent.
        const auto kids = run_cmd(fmt::format("pgrep -P {}", agent));
        const pid_t trainer = static_cast<pid_t>(std::atoi(kids.out.c_str()));
        ASSERT_GT(trainer, 0) << kids.out;
        ASSERT_EQ(::kill(trainer, SIGKILL), 0);
    }
    const auto killed_rows = metrics_rows(c, job).size();

    ASSERT_TRUE(wait_until([&] { return c.job_state(job) == "SUCCEEDED"; }, 50s))
        << job_story(c, job);
    const std::string ev = events_text(c, job);
    EXPECT_NE(ev.find(job + "/trainer-0 restarted"), std::string::npos) << ev;
    if (kill_node) {
        EXPECT_NE(ev.find("node_lost"), std::string::npos) << ev;
        const Json finished = c.job(job);
        for (const auto& a : finished["actors"]) {
            if (a["actor"] == job + "/trainer-0") {
                EXPECT_NE(a["node"], node);
            }
        }
    }

    const auto rows = metrics_rows(c, job);
    ASSERT_GT(rows.size(), killed_rows);
    // The rows of the first run and of the restarted one.
    std::vector<Json> first_run, resumed;
    for (const auto& r : rows) {
        (r["metrics"]["trainer/attempt"].get<int64_t>() == 1 ? first_run : resumed).push_back(r);
    }
    ASSERT_FALSE(first_run.empty());
    ASSERT_FALSE(resumed.empty());
    const int64_t died_after = first_run.back()["step"];
    EXPECT_GE(died_after, 2 * kEvery);
    // It resumed from the newest checkpoint written before the kill. The trainer reports a step
    // and then writes its checkpoint, so the kill may fall between the two for a step that is a
    // multiple of kEvery; otherwise the newest is the last multiple of kEvery reported.
    const int64_t resumed_at = resumed.front()["step"].get<int64_t>() - 1;
    const int64_t newest = died_after - died_after % kEvery;
    const bool between = died_after % kEvery == 0 && resumed_at == newest - kEvery;
    EXPECT_TRUE(resumed_at == newest || between)
        << "resumed at " << resumed_at << ", the first run reported up to " << died_after;
    EXPECT_GE(resumed_at, 2 * kEvery);
    // The checkpoint it resumed from says the same step and data cursor.
    std::ifstream st_file(fmt::format("{}/step-{:08d}/trainer_state.json", ckpt_root, resumed_at));
    const Json st = Json::parse(st_file, nullptr, false);
    ASSERT_TRUE(st.is_object());
    EXPECT_EQ(st["step"], resumed_at);
    EXPECT_EQ(st["data_cursor"], resumed_at * kPrompts);
    // Same data cursor: the first resumed step trained on the prompts right after the
    // checkpoint (synchronous mode: exactly the step's prompts), and the cursor moves on.
    const Json& m0 = resumed.front()["metrics"];
    EXPECT_EQ(m0["data/group_min"], resumed_at * kPrompts) << m0.dump();
    EXPECT_EQ(m0["data/group_max"], (resumed_at + 1) * kPrompts - 1) << m0.dump();
    EXPECT_EQ(m0["data/cursor"], (resumed_at + 1) * kPrompts);
    // Every step after the checkpoint ran once more, up to the last one.
    for (size_t i = 0; i < resumed.size(); ++i) {
        EXPECT_EQ(resumed[i]["step"], resumed_at + 1 + static_cast<int64_t>(i));
        EXPECT_EQ(resumed[i]["metrics"]["data/group_min"],
                  (resumed_at + static_cast<int64_t>(i)) * kPrompts);
    }
    EXPECT_EQ(resumed.back()["step"], kSteps);

    // Versions stay monotonic: the resumed run publishes above everything published before,
    // one per step, and the table's versions were published in increasing order.
    const int64_t last_before = first_run.back()["metrics"]["weights/version"];
    int64_t prev = last_before;
    for (const auto& r : resumed) {
        const int64_t v = r["metrics"]["weights/version"];
        EXPECT_GT(v, prev);
        prev = v;
    }
    const auto table = table_versions(c, job);
    ASSERT_FALSE(table.empty());
    int64_t prev_ns = 0;
    for (const auto& [v, ns] : table) {
        EXPECT_GE(ns, prev_ns) << "version " << v << " was published before a lower one";
        prev_ns = ns;
    }
    EXPECT_EQ(table.rbegin()->first, prev);
    // Nothing from the first run's versions was used by the resumed one.
    EXPECT_GT(check_consumed_versions(rows, table, 0), 0);
}

TEST(GrpoFaults, KilledTrainerResumesFromItsCheckpointWithTheSameDataCursor) {
    resume_after_trainer_kill(/*kill_node=*/false);
}

TEST(GrpoFaults, KilledTrainerNodeMovesTheTrainerWhichResumesFromItsCheckpoint) {
    resume_after_trainer_kill(/*kill_node=*/true);
}

TEST(GrpoFaults, ResubmittedJobResumesFromASharedCheckpointDirectory) {
    LocalCluster c("grpo_resubmit");
    ASSERT_EQ(c.up().code, 0);
    const std::string dir = c.path("checkpoints");
    const std::string common = fmt::format(
        " async.max_staleness=0 checkpoint.every_steps=5 checkpoint.resume=auto "
        "checkpoint.dir={}",
        dir);
    // The first job stops after 20 steps (as a killed job would, at its last checkpoint).
    auto first =
        c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(20) + common + " --follow");
    ASSERT_EQ(first.code, 0) << first.out;
    ASSERT_TRUE(std::filesystem::exists(dir + "/step-00000020"));
    // Resubmitted with more steps: a new job (new id, empty version table) on the same directory.
    auto second =
        c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(30) + common + " --follow");
    ASSERT_EQ(second.code, 0) << second.out;
    const auto rows = metrics_rows(c, "job-000002");
    ASSERT_EQ(rows.size(), 10u);
    const Json& m0 = rows.front()["metrics"];
    EXPECT_EQ(rows.front()["step"], 21);
    EXPECT_EQ(m0["data/group_min"], 20 * kPrompts) << m0.dump();
    EXPECT_EQ(m0["data/cursor"], 21 * kPrompts);
    // Its versions continue from the checkpoint's version.
    EXPECT_EQ(m0["weights/version"], 21);
    EXPECT_EQ(rows.back()["metrics"]["weights/version"], 30);
    const auto table = table_versions(c, "job-000002");
    ASSERT_FALSE(table.empty());
    EXPECT_EQ(table.begin()->first, 20);
    EXPECT_EQ(table.rbegin()->first, 30);
    EXPECT_GT(check_consumed_versions(rows, table, 0), 0);
}

// Pushes one batch of `n` well-formed trajectories claiming `version` of `fence` to the trainer's
// socket, as a CURVE client with `curve` (the placement's "trajectory_curve" of a rollout) when it
// is not null.
void push_forged_batch(const std::string& endpoint, int64_t version, int n,
                       wire::Fence fence = {1, 1}, const Json& curve = nullptr,
                       int linger_ms = 5000) {
    rl::TrajectoryBatch b;
    b.rollout = 99;
    b.batch = 0;
    b.version = version;
    b.fence = fence;
    for (int i = 0; i < n; ++i) {
        model::Trajectory t;
        t.prompt = {1, 5, 6};
        t.completion = {7, 2};
        t.behaviour_logprobs = {-1.0f, -1.0f};
        t.reward = 1.0;
        t.group = 0;
        t.version = version;
        b.trajectories.push_back(std::move(t));
    }
    zmq::context_t ctx(1);
    zmq::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, linger_ms);
    if (!curve.is_null()) {
        ASSERT_TRUE(net::secure_trajectory_client(push, {{"trajectory_curve", curve}}).ok());
    }
    push.connect(endpoint);
    const std::string bytes = b.encode();
    push.send(zmq::buffer(bytes), zmq::send_flags::none);
}

TEST(GrpoFaults, KilledRolloutNodeRestartsItsActorAndUnknownVersionsAreRejected) {
    LocalCluster c("grpo_rollout_kill");
    std::ofstream(c.cluster_file(), std::ios::app) << "security:\n  curve: on\n";
    ASSERT_EQ(c.up().code, 0);
    // The job pauses for the node's death (dead_after_ms) and the restart; 200 steps keep it
    // running well past that.
    const int kSteps = 200, kStaleness = 1;
    auto sub = c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(kSteps) +
                     fmt::format(" async.max_staleness={} placement.strategy=spread", kStaleness));
    ASSERT_EQ(sub.code, 0) << sub.out;
    const std::string job = "job-000001";

    ASSERT_TRUE(wait_until([&] { return trainer_progress_step(c, job) >= 8; }, 40s))
        << c.job(job).dump(2);
    // Trajectories of versions the trainer never published: far ahead, and negative.
    std::string endpoint, victim;
    const Json running = c.job(job);
    for (const auto& a : running["actors"]) {
        const std::string name = a["actor"];
        if (name.find("/trainer-") != std::string::npos)
            endpoint = a["endpoints"].value("trajectories", "");
        if (name.find("/rollout-1") != std::string::npos) victim = a["node"];
    }
    ASSERT_FALSE(endpoint.empty()) << running.dump(2);
    ASSERT_FALSE(victim.empty());
    // Not one of the job's rollouts: refused at the socket (no CURVE; a key of its own).
    auto coordinator_key = net::read_curve_keys(c.run_dir() + "/keys/coordinator.key");
    ASSERT_TRUE(coordinator_key.ok()) << coordinator_key.status().message();
    auto rollout_curve =
        net::trajectory_curve_for(coordinator_key->secret_z85, job + "/rollout-0", Json::object());
    ASSERT_TRUE(rollout_curve.ok()) << rollout_curve.status().message();
    Json stranger = *rollout_curve;
    stranger["secret_key"] = net::generate_curve_keys()->secret_z85;
    // With a rollout's own key: the trainer itself turns away versions it never published...
    push_forged_batch(endpoint, 1'000'000, 4, wire::Fence{1, 1}, *rollout_curve);
    push_forged_batch(endpoint, -7, 4, wire::Fence{1, 1}, *rollout_curve);
    // ...and a version it did publish, but under another fence (another trainer run).
    push_forged_batch(endpoint, 3, 4, wire::Fence{1, 7}, *rollout_curve);

    const int64_t killed_at_step = trainer_progress_step(c, job);
    ASSERT_EQ(::kill(c.pid_of(victim), SIGKILL), 0);
    // While the job waits for the lost node (a refused batch is never sent: the pushes wait out a
    // short linger, which would let a running job finish before the kill).
    push_forged_batch(endpoint, 2, 4, wire::Fence{1, 1}, nullptr, 500);
    push_forged_batch(endpoint, 2, 4, wire::Fence{1, 1}, stranger, 500);
    ASSERT_TRUE(wait_until([&] { return c.job_state(job) == "SUCCEEDED"; }, 50s))
        << job_story(c, job);
    EXPECT_LT(killed_at_step, kSteps) << "the job ended before the kill";

    const std::string ev = events_text(c, job);
    EXPECT_NE(ev.find("node_lost"), std::string::npos) << ev;
    EXPECT_NE(ev.find(job + "/rollout-1 restarted"), std::string::npos) << ev;
    const Json finished = c.job(job);
    for (const auto& a : finished["actors"]) {
        if (a["actor"].get<std::string>().find("/rollout-1") != std::string::npos) {
            EXPECT_NE(a["node"], victim);
            EXPECT_GE(a["attempt"], 2);
        }
    }

    const auto rows = metrics_rows(c, job);
    ASSERT_FALSE(rows.empty());
    EXPECT_EQ(rows.back()["step"], kSteps);
    for (const auto& r : rows) {
        EXPECT_EQ(r["metrics"]["trainer/attempt"], 1) << "the trainer was not restarted";
    }
    // The forged batches were turned away and counted, and never trained on: the strangers' at
    // the socket, the rollout key's by the trainer.
    EXPECT_GE(rows.back()["metrics"]["trajectories/refused_total"].get<int64_t>(), 2);
    EXPECT_GE(rows.back()["metrics"]["weights/rejected_unknown_version"].get<int64_t>(), 8);
    EXPECT_GE(rows.back()["metrics"]["weights/rejected_fenced"].get<int64_t>(), 4);
    const int64_t checked = check_consumed_versions(rows, table_versions(c, job), kStaleness);
    EXPECT_EQ(checked, int64_t{kSteps} * kPrompts * 4);  // every trajectory of every step
    // The coordinator's copy of the counters agrees.
    const Json last = finished["metrics"];
    ASSERT_TRUE(last.is_object()) << finished.dump(2);
    EXPECT_GE(last.value("weights/rejected_unknown_version", 0), 8) << last.dump();
}

// The actor record of `name` in a job's detail (null when absent).
Json actor_of(const Json& job_detail, const std::string& name) {
    if (!job_detail.is_object()) return nullptr;
    for (const auto& a : job_detail.value("actors", Json::array())) {
        if (a.value("actor", "") == name) return a;
    }
    return nullptr;
}

// Kills rollout-1's node agent and then its actor (SIGKILL, both for good) in a synchronous job
// whose rollouts each fill a rollout node, so no node can take the actor; waits until the
// coordinator has the actor pending. Returns the node it was on.
// `submitted`: the caller has submitted the job and waited for step 8 itself.
std::string kill_rollout_node_without_room(LocalCluster& c, const std::string& job, int steps,
                                           bool submitted = false) {
    if (!submitted) {
        auto sub = c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(steps) +
                         " async.max_staleness=0 rollout.resources.cpus=2");
        EXPECT_EQ(sub.code, 0) << sub.out;
        EXPECT_TRUE(wait_until([&] { return trainer_progress_step(c, job) >= 8; }, 40s))
            << c.job(job).dump(2);
    }
    const Json running = c.job(job);
    const std::string victim = actor_of(running, job + "/rollout-1").value("node", "");
    EXPECT_FALSE(victim.empty()) << running.dump(2);
    EXPECT_NE(victim, actor_of(running, job + "/rollout-0").value("node", ""))
        << "both rollouts on one node: " << running.dump(2);
    const pid_t agent = c.pid_of(victim);
    const pid_t actor =
        static_cast<pid_t>(std::atoi(run_cmd(fmt::format("pgrep -P {}", agent)).out.c_str()));
    EXPECT_GT(agent, 0);
    EXPECT_GT(actor, 0);
    EXPECT_EQ(::kill(agent, SIGKILL), 0);
    if (actor > 0) ::kill(actor, SIGKILL);  // may be gone already (it dies with its agent)
    EXPECT_TRUE(wait_until(
        [&] { return actor_of(c.job(job), job + "/rollout-1").value("phase", "") == "pending"; },
        20s))
        << job_story(c, job);
    return victim;
}

TEST(GrpoFaults, RolloutNodeLostWithNoRoomLeavesItsActorPendingAndTheJobFinishesOnTheOther) {
    LocalCluster c("grpo_rollout_pending");
    ASSERT_EQ(c.up().code, 0);
    const int kSteps = 400;
    const std::string job = "job-000001";
    // Fault injection: the trainer actor is frozen (SIGSTOP) from just before the rollout node is
    // killed until the pending status has been read, so the job cannot finish in between however
    // fast its steps are (a step of this tiny job takes a few ms). Its node agent keeps
    // heartbeating; SIGCONT lets it run on.
    struct Frozen {
        pid_t pid = 0;
        void thaw() {
            if (pid > 0) ::kill(pid, SIGCONT);
            pid = 0;
        }
        ~Frozen() { thaw(); }
    } trainer;
    const std::string victim = [&] {
        auto sub = c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(kSteps) +
                         " async.max_staleness=0 rollout.resources.cpus=2");
        EXPECT_EQ(sub.code, 0) << sub.out;
        EXPECT_TRUE(wait_until([&] { return trainer_progress_step(c, job) >= 8; }, 40s))
            << c.job(job).dump(2);
        const std::string node = actor_of(c.job(job), job + "/trainer-0").value("node", "");
        trainer.pid = static_cast<pid_t>(
            std::atoi(run_cmd(fmt::format("pgrep -P {}", c.pid_of(node))).out.c_str()));
        EXPECT_GT(trainer.pid, 0) << node;
        if (trainer.pid > 0) {
            EXPECT_EQ(::kill(trainer.pid, SIGSTOP), 0);
        }
        return kill_rollout_node_without_room(c, job, kSteps, /*submitted=*/true);
    }();
    (void)victim;

    // Pending, not failed: the job runs on, the status shows where the actor is.
    const Json pending = c.job(job);
    EXPECT_EQ(pending["state"], "RUNNING") << pending.dump(2);
    const Json lost = actor_of(pending, job + "/rollout-1");
    EXPECT_EQ(lost["node"], "") << lost.dump();
    EXPECT_EQ(pending["restarts_used"], 1);
    const std::string status = c.cli("job status " + job).out;
    EXPECT_NE(status.find("pending"), std::string::npos) << status;
    trainer.thaw();

    ASSERT_TRUE(wait_until([&] { return c.job_state(job) == "SUCCEEDED"; }, 40s))
        << job_story(c, job);
    const std::string ev = events_text(c, job);
    EXPECT_NE(ev.find("node_lost"), std::string::npos) << ev;
    EXPECT_NE(ev.find(job + "/rollout-1 waits for a node with room"), std::string::npos) << ev;
    EXPECT_NE(ev.find("continues on 1 live rollout actor"), std::string::npos) << ev;

    // Every step ran once, by the first trainer run; the data cursor moved on by a full step
    // each time and each step trained on prompts of its own range only (synchronous mode).
    const auto rows = metrics_rows(c, job);
    ASSERT_EQ(rows.size(), static_cast<size_t>(kSteps));
    int64_t half_steps = 0, trajectories = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
        const Json& m = rows[i]["metrics"];
        const int64_t step = rows[i]["step"];
        EXPECT_EQ(step, static_cast<int64_t>(i) + 1);
        EXPECT_EQ(m["trainer/attempt"], 1);
        EXPECT_EQ(m["data/cursor"], step * kPrompts);
        EXPECT_GE(m["data/group_min"].get<int64_t>(), (step - 1) * kPrompts) << m.dump();
        EXPECT_LT(m["data/group_max"].get<int64_t>(), step * kPrompts) << m.dump();
        const int64_t prompts = m["data/prompts"];
        EXPECT_TRUE(prompts == kPrompts || prompts == kPrompts / 2) << m.dump();
        if (prompts == kPrompts / 2) {
            ++half_steps;
            EXPECT_EQ(m["rollout/live_actors"], 1) << m.dump();
        }
        trajectories += prompts * 4;
    }
    // The steps after the loss ran on rollout-0's half of the prompts, up to the last one.
    EXPECT_GT(half_steps, 0);
    EXPECT_EQ(rows.back()["metrics"]["data/prompts"], kPrompts / 2);
    // And only on versions this trainer published, all of them in the coordinator's table.
    EXPECT_EQ(check_consumed_versions(rows, table_versions(c, job), 0), trajectories);
    const Json finished = c.job(job);
    EXPECT_EQ(actor_of(finished, job + "/rollout-1")["phase"], "stopped") << finished.dump(2);
}

TEST(GrpoFaults, PendingRolloutIsPlacedAgainWhenItsNodeRegistersAgain) {
    LocalCluster c("grpo_rollout_back");
    ASSERT_EQ(c.up().code, 0);
    const std::string job = "job-000001";
    // More steps than the test waits for: it cancels the job once full steps are back.
    const std::string victim = kill_rollout_node_without_room(c, job, 100000);
    // The trainer runs on rollout-0's half of the prompts meanwhile.
    auto first_with = [&](int64_t prompts, int64_t live, size_t from) -> std::optional<size_t> {
        const auto rows = metrics_rows(c, job);
        for (size_t i = from; i < rows.size(); ++i) {
            const Json& m = rows[i]["metrics"];
            if (m["data/prompts"] == prompts && m["rollout/live_actors"] == live) return i;
        }
        return std::nullopt;
    };
    std::optional<size_t> half;
    ASSERT_TRUE(
        wait_until([&] { return (half = first_with(kPrompts / 2, 1, 0)).has_value(); }, 20s))
        << job_story(c, job);

    // `tandem up` starts the agents that are not running: the lost node registers again.
    ASSERT_EQ(c.up().code, 0);
    ASSERT_TRUE(wait_until(
        [&] {
            const Json a = actor_of(c.job(job), job + "/rollout-1");
            return a.value("phase", "") == "running" && a.value("attempt", 0) == 2;
        },
        20s))
        << job_story(c, job);
    const Json back = c.job(job);
    EXPECT_EQ(actor_of(back, job + "/rollout-1")["node"], victim);
    EXPECT_EQ(back["state"], "RUNNING");
    const std::string ev = events_text(c, job);
    EXPECT_NE(ev.find(job + "/rollout-1 restarted on " + victim), std::string::npos) << ev;

    // The trainer takes full steps from both rollouts again.
    auto full_after_half = [&] { return first_with(kPrompts, 2, *half).has_value(); };
    ASSERT_TRUE(wait_until(full_after_half, 20s)) << job_story(c, job);
    EXPECT_EQ(c.cli("job cancel " + job).code, 0);
    const auto rows = metrics_rows(c, job);
    for (const auto& r : rows) EXPECT_EQ(r["metrics"]["trainer/attempt"], 1);
    int64_t trajectories = 0;
    for (const auto& r : rows) trajectories += r["metrics"]["data/prompts"].get<int64_t>() * 4;
    EXPECT_EQ(check_consumed_versions(rows, table_versions(c, job), 0), trajectories);
}

// kill -9 of the coordinator in the middle of a GRPO job and `tandem up` again: the actors never
// talk to the coordinator directly (their runtime waits through their agents), so none restarts,
// the job finishes every step, and the coordinator has every step's metrics.
TEST(GrpoFaults, CoordinatorKilledMidJobAndBroughtBackFinishesWithNothingLostAndNoRestart) {
    LocalCluster c("grpo_coord_kill");
    ASSERT_EQ(c.up().code, 0);
    const int kSteps = 300, kStaleness = 1;
    auto sub = c.cli("job submit -f " + job_file() + " " + tiny_job_overrides(kSteps) +
                     fmt::format(" async.max_staleness={}", kStaleness));
    ASSERT_EQ(sub.code, 0) << sub.out;
    const std::string job = "job-000001";
    ASSERT_TRUE(wait_until([&] { return trainer_progress_step(c, job) >= 8; }, 40s))
        << c.job(job).dump(2);
    const std::string events_before = events_text(c, job);

    ASSERT_NO_FATAL_FAILURE(kill_and_bring_back_the_coordinator(c));
    const int64_t back_at_step = trainer_progress_step(c, job);

    ASSERT_TRUE(wait_until([&] { return c.job_state(job) == "SUCCEEDED"; }, 60s))
        << job_story(c, job);
    EXPECT_LT(back_at_step, kSteps) << "the job ended before the coordinator came back";
    const Json finished = c.job(job);
    EXPECT_EQ(finished["restarts_used"], 0);
    for (const auto& a : finished["actors"]) EXPECT_EQ(a["attempt"], 1) << a.dump();
    const std::string ev = events_text(c, job);
    EXPECT_EQ(ev.find("actor_restarted"), std::string::npos) << ev;
    EXPECT_EQ(ev.rfind(events_before, 0), 0u) << "history changed";

    // Every step once, in order, in the trainer's file and in the coordinator's metrics.
    const auto rows = metrics_rows(c, job);
    ASSERT_EQ(rows.size(), static_cast<size_t>(kSteps));
    for (size_t i = 0; i < rows.size(); ++i) {
        EXPECT_EQ(rows[i]["step"], static_cast<int64_t>(i + 1));
        EXPECT_EQ(rows[i]["metrics"]["trainer/attempt"], 1);
    }
    const Json m = c.get("/api/v1/jobs/" + job + "/metrics?limit=100000");
    ASSERT_TRUE(m.is_object()) << m.dump();
    std::set<int64_t> steps;
    for (const auto& r : m["metrics"]) steps.insert(r["step"].get<int64_t>());
    EXPECT_EQ(steps.size(), static_cast<size_t>(kSteps)) << "steps missing at the coordinator";
    const int64_t checked = check_consumed_versions(rows, table_versions(c, job), kStaleness);
    EXPECT_EQ(checked, int64_t{kSteps} * kPrompts * 4);
}

}  // namespace
}  // namespace tandem::testing
