// JobManager: submission, placement, actor starts, the job state machine, the failure policy,
// node death, cancel, the pending queue, dry runs, restore after a coordinator restart and the
// per-job event log. Driven with a FakeClock, a temporary StateStore, a NodeRegistry of fake nodes
// and a RecordingAgentLink.
#include "coordinator/job_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "tests/unit/coordinator/coordinator_fixture.h"

namespace tandem::coord::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using wire::ActorPhase;

class JobManagerTest : public CoordinatorTest {
protected:
    // One trainer node and two rollout nodes, each with room for a few actors.
    void three_nodes() {
        add_node("t0", "trainer");
        add_node("r0", "rollout");
        add_node("r1", "rollout");
    }
    // Nodes that keep heartbeating while the clock passes `ms`; the others go silent.
    void silence(const std::vector<std::string>& silent, int64_t ms) {
        clock_.advance(std::chrono::milliseconds(ms));
        for (const auto& [id, e] : registry_->entries()) {
            if (std::find(silent.begin(), silent.end(), id) != silent.end()) continue;
            wire::Heartbeat hb;
            hb.node_id = id;
            ASSERT_NE(registry_->on_heartbeat(hb, e.routing_id), nullptr) << id;
        }
        for (const auto& [node, reason] : registry_->sweep()) jobs_->on_node_dead(node, reason);
    }
    std::map<std::string, std::string> start_targets() const {
        std::map<std::string, std::string> out;  // actor -> node
        for (const auto& [n, m] : link_.starts()) out[m.actor] = n;
        return out;
    }
};

JobYaml spread_job() {
    JobYaml y;
    y.strategy = "spread";
    return y;
}

// ---- submit, place, start ----

TEST_F(JobManagerTest, SubmittedJobIsPlacedAndEachActorStartedOnItsNode) {
    three_nodes();
    const JobId id = submit(spread_job());
    ASSERT_EQ(id.str(), "job-000001");
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_TRUE(job(id).reason.empty());

    EXPECT_EQ(start_targets(), (std::map<std::string, std::string>{
                                   {"job-000001/trainer-0", "t0"},
                                   {"job-000001/rollout-0", "r0"},
                                   {"job-000001/rollout-1", "r1"},
                               }));
    for (const auto& [node, m] : link_.starts()) {
        EXPECT_EQ(m.job, "job-000001");
        EXPECT_EQ(m.attempt, 1);
        EXPECT_EQ(m.spec_yaml, job(id).spec_yaml);
        // Every actor learns where the others run.
        EXPECT_EQ(m.placement["actors"]["job-000001/rollout-1"]["node"], "r1");
        EXPECT_EQ(m.placement["actors"]["job-000001/trainer-0"]["host"], "t0.local");
    }
    for (const auto& a : job(id).actors) {
        EXPECT_EQ(a.attempt, 1);
        EXPECT_EQ(a.phase, ActorPhase::kStarting);
    }
}

TEST_F(JobManagerTest, PlacedEventSaysWhereEachActorWent) {
    three_nodes();
    const JobId id = submit(spread_job());
    const auto ev = events(id);
    ASSERT_GE(ev.size(), 2u);
    EXPECT_EQ(ev[0].kind, "submitted");
    EXPECT_THAT(ev[0].message, HasSubstr("diag (diagnostic): 1 trainer and 2 rollout actors"));
    EXPECT_EQ(ev[1].kind, "placed");
    EXPECT_EQ(ev[1].message,
              "job-000001/trainer-0 on t0, job-000001/rollout-0 on r0, job-000001/rollout-1 on r1");
}

TEST_F(JobManagerTest, InvalidSpecIsRefusedNamingTheSourceAndNothingIsStored) {
    auto r = jobs_->submit("name: x\nkind: teleport\n", "bad-job.yaml", false);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("bad-job.yaml"));
    EXPECT_THAT(r.status().message(), HasSubstr("kind"));
    EXPECT_TRUE(jobs_->jobs().empty());
    EXPECT_THAT(*store_->load_jobs(), IsEmpty());
}

TEST_F(JobManagerTest, JobsAreFoundByIdNumberOrNewestName) {
    three_nodes();
    const JobId a = submit(spread_job());
    const JobId b = submit(spread_job());
    ASSERT_NE(jobs_->find("job-000001"), nullptr);
    EXPECT_EQ(jobs_->find("job-000001")->id, a);
    EXPECT_EQ(jobs_->find("2")->id, b);
    EXPECT_EQ(jobs_->find("diag")->id, b);
    EXPECT_EQ(jobs_->find("nope"), nullptr);
    EXPECT_EQ(jobs_->find(JobId(9)), nullptr);
}

// ---- success ----

TEST_F(JobManagerTest, DiagnosticJobSucceedsOnlyWhenEveryActorSucceeded) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    report(id, "trainer-0", ActorPhase::kSucceeded);
    report(id, "rollout-0", ActorPhase::kSucceeded);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    report(id, "rollout-1", ActorPhase::kSucceeded);
    EXPECT_EQ(job(id).state, JobState::kSucceeded);
    EXPECT_TRUE(job(id).reason.empty());
    EXPECT_GT(job(id).finished_ns, 0);
    EXPECT_THAT(link_.stops(), IsEmpty());  // nothing was left running
}

TEST_F(JobManagerTest, GrpoJobSucceedsWhenItsTrainersSucceedAndItsRolloutsAreStopped) {
    three_nodes();
    JobYaml y = spread_job();
    y.kind = "grpo";
    const JobId id = submit(y);
    run_all(id);
    report(id, "trainer-0", ActorPhase::kSucceeded);
    EXPECT_EQ(job(id).state, JobState::kSucceeded);

    std::vector<std::pair<std::string, std::string>> stops;
    for (const auto& [node, m] : link_.stops()) {
        stops.emplace_back(node, m.actor);
        EXPECT_EQ(m.reason, "job SUCCEEDED");
    }
    EXPECT_THAT(stops, UnorderedElementsAre(
                           std::pair<std::string, std::string>{"r0", "job-000001/rollout-0"},
                           std::pair<std::string, std::string>{"r1", "job-000001/rollout-1"}));
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kStopped);
}

TEST_F(JobManagerTest, ProgressIsKeptFromActorReports) {
    three_nodes();
    const JobId id = submit(spread_job());
    wire::ActorState m;
    m.actor = "job-000001/rollout-0";
    m.attempt = 1;
    m.phase = ActorPhase::kRunning;
    m.progress = {{"step", 3}, {"fraction", 0.5}};
    jobs_->on_actor_state("r0", m);
    EXPECT_EQ(actor(id, "rollout-0").progress["fraction"], 0.5);
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kRunning);
}

// ---- failure policy ----

TEST_F(JobManagerTest, FailureWithoutRestartsFailsTheJobNamingActorNodeAndError) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    report(id, "rollout-1", ActorPhase::kFailed, "CUDA error: out of memory", 1);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(job(id).reason, "actor job-000001/rollout-1 on r1 failed: CUDA error: out of memory");
    EXPECT_EQ(actor(id, "rollout-1").last_error, "CUDA error: out of memory");
    EXPECT_EQ(actor(id, "rollout-1").exit_code, 1);

    // The actors still running are stopped; the failed one is not.
    std::vector<std::string> stopped;
    for (const auto& [node, m] : link_.stops()) stopped.push_back(m.actor + "@" + node);
    EXPECT_THAT(stopped,
                UnorderedElementsAre("job-000001/trainer-0@t0", "job-000001/rollout-0@r0"));
    EXPECT_THAT(link_.starts(), ::testing::SizeIs(3));  // no restart
}

TEST_F(JobManagerTest, FailureWithoutErrorTextNamesTheExitCode) {
    three_nodes();
    const JobId id = submit(spread_job());
    report(id, "trainer-0", ActorPhase::kFailed, "", 3);
    EXPECT_EQ(job(id).reason, "actor job-000001/trainer-0 on t0 failed: exited with code 3");
}

TEST_F(JobManagerTest, UnexpectedStopCountsAsAFailure) {
    three_nodes();
    const JobId id = submit(spread_job());
    report(id, "rollout-0", ActorPhase::kStopped, "killed by signal 9", 137);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_THAT(job(id).reason, HasSubstr("killed by signal 9"));
}

TEST_F(JobManagerTest, FailedActorIsRestartedInPlaceWhenItsNodeIsAlive) {
    three_nodes();
    JobYaml y = spread_job();
    y.max_actor_restarts = 1;
    const JobId id = submit(y);
    run_all(id);
    link_.clear();
    report(id, "rollout-0", ActorPhase::kFailed, "boom");

    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(job(id).restarts_used, 1);
    EXPECT_EQ(actor(id, "rollout-0").node, "r0");
    EXPECT_EQ(actor(id, "rollout-0").attempt, 2);
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kStarting);
    ASSERT_EQ(link_.starts().size(), 1u);
    EXPECT_EQ(link_.starts()[0].first, "r0");
    EXPECT_EQ(link_.starts()[0].second.actor, "job-000001/rollout-0");
    EXPECT_EQ(link_.starts()[0].second.attempt, 2);
    EXPECT_EQ(events(id).back().kind, "actor_restarted");
    EXPECT_EQ(events(id).back().message,
              "job-000001/rollout-0 restarted on r0 (attempt 2, restart 1 of 1)");
    EXPECT_EQ(metrics_->counter_value("tandem_actor_restarts_total"), 1);
}

TEST_F(JobManagerTest, PackedJobRestartsInPlaceEvenWhenAnotherOfItsNodesHasRoom) {
    // rollout-0 fills r0; rollout-1 lands on r1, which still has room. A failure of rollout-0 on
    // a live r0 restarts it on r0, not beside rollout-1.
    add_node("t0", "trainer");
    add_node("r0", "rollout", {1, 8192, 0});
    add_node("r1", "rollout", {4, 8192, 0});
    JobYaml y;
    y.max_actor_restarts = 1;
    const JobId id = submit(y);
    ASSERT_EQ(actor(id, "rollout-0").node, "r0");
    ASSERT_EQ(actor(id, "rollout-1").node, "r1");
    run_all(id);
    report(id, "rollout-0", ActorPhase::kFailed, "boom");
    EXPECT_EQ(actor(id, "rollout-0").node, "r0");
    EXPECT_EQ(actor(id, "rollout-0").attempt, 2);
}

TEST_F(JobManagerTest, ActorOfADeadNodeIsRestartedElsewhere) {
    three_nodes();
    add_node("r2", "rollout");
    JobYaml y = spread_job();
    y.max_actor_restarts = 2;
    const JobId id = submit(y);
    ASSERT_EQ(actor(id, "rollout-0").node, "r0");
    run_all(id);
    link_.clear();

    silence({"r0"}, 6000);
    EXPECT_EQ(registry_->find("r0")->record.state, NodeState::kDead);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(actor(id, "rollout-0").node, "r2");  // not r0 (dead); r2 is unused (spread)
    EXPECT_EQ(actor(id, "rollout-0").attempt, 2);
    ASSERT_EQ(link_.starts().size(), 1u);
    EXPECT_EQ(link_.starts()[0].first, "r2");
    EXPECT_EQ(link_.starts()[0].second.attempt, 2);

    const auto kinds = event_kinds(id);
    const std::vector<std::string> tail(kinds.end() - 3, kinds.end());
    EXPECT_THAT(tail, ElementsAre("node_lost", "actor_failed", "actor_restarted"));
    EXPECT_THAT(events(id)[kinds.size() - 3].message,
                HasSubstr("node r0 missed heartbeats for 6.0 s"));
}

TEST_F(JobManagerTest, StaleAttemptAndWrongNodeReportsAreIgnored) {
    three_nodes();
    JobYaml y = spread_job();
    y.max_actor_restarts = 1;
    const JobId id = submit(y);
    run_all(id);
    report(id, "rollout-0", ActorPhase::kFailed, "boom");
    ASSERT_EQ(actor(id, "rollout-0").attempt, 2);

    // The first attempt's late "failed" and a report from a node the actor is not on change
    // nothing.
    wire::ActorState old;
    old.actor = "job-000001/rollout-0";
    old.attempt = 1;
    old.phase = ActorPhase::kFailed;
    old.error = "late";
    jobs_->on_actor_state("r0", old);
    wire::ActorState elsewhere = old;
    elsewhere.attempt = 2;
    jobs_->on_actor_state("r1", elsewhere);

    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(job(id).restarts_used, 1);
    EXPECT_EQ(actor(id, "rollout-0").attempt, 2);
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kStarting);

    // The current attempt's report counts.
    report(id, "rollout-0", ActorPhase::kRunning);
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kRunning);
}

TEST_F(JobManagerTest, ReportsForUnknownJobsOrActorsAreIgnored) {
    three_nodes();
    const JobId id = submit(spread_job());
    for (const char* name : {"job-000042/rollout-0", "job-000001/rollout-9", "garbage"}) {
        wire::ActorState m;
        m.actor = name;
        m.attempt = 1;
        m.phase = ActorPhase::kFailed;
        jobs_->on_actor_state("r0", m);
    }
    EXPECT_EQ(job(id).state, JobState::kRunning);
}

TEST_F(JobManagerTest, JobFailsWhenItsRestartsAreUsedUp) {
    three_nodes();
    JobYaml y = spread_job();
    y.max_actor_restarts = 1;
    const JobId id = submit(y);
    report(id, "rollout-0", ActorPhase::kFailed, "boom");
    ASSERT_EQ(job(id).state, JobState::kRunning);
    report(id, "rollout-1", ActorPhase::kFailed, "boom again");
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(job(id).reason,
              "actor job-000001/rollout-1 on r1 failed: boom again (after 1 restarts)");
}

TEST_F(JobManagerTest, JobFailsWhenNoNodeCanTakeTheRestartedActor) {
    add_node("t0", "trainer");
    add_node("r0", "rollout", {2, 8192, 0});
    JobYaml y;
    y.max_actor_restarts = 3;
    const JobId id = submit(y);
    run_all(id);
    silence({"r0"}, 6000);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_THAT(job(id).reason, HasSubstr("actor job-000001/rollout-0 on r0 failed: node r0 lost"));
    EXPECT_THAT(job(id).reason, HasSubstr("; no node to restart it: needs 1 rollout actor"));
    EXPECT_THAT(job(id).reason, HasSubstr("r0: avoided after a failure"));
}

TEST_F(JobManagerTest, NodeDeathFailsItsActorsWithoutRestarts) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    silence({"r1"}, 6000);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(
        job(id).reason,
        "actor job-000001/rollout-1 on r1 failed: node r1 lost (missed heartbeats for 6.0 s)");
}

TEST_F(JobManagerTest, NodeDeathDoesNotTouchJobsWithoutActorsThere) {
    three_nodes();
    add_node("r2", "rollout");
    const JobId id = submit(JobYaml{});  // one rollout each on r0 and r1; r2 holds none
    ASSERT_EQ(actor(id, "rollout-0").node, "r0");
    ASSERT_EQ(actor(id, "rollout-1").node, "r1");
    silence({"r2"}, 6000);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_THAT(event_kinds(id), ::testing::Not(::testing::Contains("node_lost")));
}

// ---- GRPO rollouts: pending, lost, and the no-live-rollout bound ----

// A GRPO job whose rollouts each fill one of two rollout nodes (t0, r0, r1): a lost rollout
// node leaves no room for its actor.
class GrpoRolloutTest : public JobManagerTest {
protected:
    JobId submit_full(int restarts, int64_t timeout_ms = 120000) {
        add_node("t0", "trainer");
        add_node("r0", "rollout", {2, 8192, 0});
        add_node("r1", "rollout", {2, 8192, 0});
        JobYaml y;
        y.kind = "grpo";
        y.max_actor_restarts = restarts;
        y.rollout.cpus = 2;
        y.none_alive_timeout_ms = timeout_ms;
        const JobId id = submit(y);
        EXPECT_EQ(actor(id, "rollout-0").node, "r0");
        EXPECT_EQ(actor(id, "rollout-1").node, "r1");
        run_all(id);
        link_.clear();
        return id;
    }
};

TEST_F(GrpoRolloutTest, LostRolloutWithNoNodeWaitsPendingAndTheJobKeepsRunning) {
    const JobId id = submit_full(2);
    silence({"r1"}, 6000);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(actor(id, "rollout-1").phase, ActorPhase::kPending);
    EXPECT_EQ(actor(id, "rollout-1").node, "");
    EXPECT_EQ(actor(id, "rollout-1").last_error, "node r1 lost (missed heartbeats for 6.0 s)");
    EXPECT_EQ(job(id).restarts_used, 1);  // counted when it went pending
    EXPECT_TRUE(link_.starts().empty());
    const auto kinds = event_kinds(id);
    EXPECT_THAT(std::vector<std::string>(kinds.end() - 3, kinds.end()),
                ElementsAre("node_lost", "actor_failed", "actor_pending"));
    EXPECT_EQ(events(id).back().message,
              "job-000001/rollout-1 waits for a node with room (restart 1 of 2): needs 1 rollout "
              "actor with 2 cpus, 512 MiB each; the 2 rollout nodes can take 0 (r0: 0 free cpus; "
              "r1: avoided after a failure); the job continues on 1 live rollout actor");
    // Nothing holds resources for it.
    for (const auto& c : jobs_->capacities()) {
        if (c.id == "r1") {
            EXPECT_EQ(c.actors, 0);
        }
    }
}

TEST_F(GrpoRolloutTest, PendingRolloutIsPlacedWhenANodeWithRoomRegisters) {
    const JobId id = submit_full(2);
    silence({"r1"}, 6000);
    ASSERT_EQ(actor(id, "rollout-1").phase, ActorPhase::kPending);
    add_node("r2", "rollout", {2, 8192, 0});
    EXPECT_EQ(actor(id, "rollout-1").node, "r2");
    EXPECT_EQ(actor(id, "rollout-1").attempt, 2);
    EXPECT_EQ(actor(id, "rollout-1").phase, ActorPhase::kStarting);
    ASSERT_EQ(link_.starts().size(), 1u);
    EXPECT_EQ(link_.starts()[0].first, "r2");
    EXPECT_EQ(link_.starts()[0].second.attempt, 2);
    EXPECT_EQ(job(id).restarts_used, 1);
    EXPECT_EQ(events(id).back().kind, "actor_restarted");
    EXPECT_EQ(events(id).back().message,
              "job-000001/rollout-1 restarted on r2 (attempt 2; it was pending)");
    EXPECT_EQ(metrics_->counter_value("tandem_actor_restarts_total"), 1);
}

TEST_F(GrpoRolloutTest, PendingRolloutIsPlacedOnItsOwnNodeWhenItRegistersAgain) {
    const JobId id = submit_full(2);
    silence({"r1"}, 6000);
    ASSERT_EQ(actor(id, "rollout-1").phase, ActorPhase::kPending);
    // The same node back with a new agent (new instance): its actor goes there again.
    ASSERT_TRUE(registry_
                    ->on_register(register_msg("r1", "rollout", {2, 8192, 0}, "r1-second"),
                                  "route-r1-again")
                    .ok());
    (void)jobs_->reconcile("r1", {}, /*registering=*/true);
    jobs_->schedule();
    EXPECT_EQ(actor(id, "rollout-1").node, "r1");
    EXPECT_EQ(actor(id, "rollout-1").attempt, 2);
    EXPECT_EQ(job(id).state, JobState::kRunning);
}

TEST_F(GrpoRolloutTest, PendingSurvivesACoordinatorRestartAndIsStoppedWhenTheJobEnds) {
    const JobId id = submit_full(2);
    silence({"r1"}, 6000);
    open();
    registry_->restore(*store_->load_nodes());
    jobs_->restore(*store_->load_jobs());
    EXPECT_EQ(actor(id, "rollout-1").phase, ActorPhase::kPending);
    EXPECT_EQ(actor(id, "rollout-1").node, "");
    report(id, "trainer-0", ActorPhase::kSucceeded);
    EXPECT_EQ(job(id).state, JobState::kSucceeded);
    EXPECT_EQ(actor(id, "rollout-1").phase, ActorPhase::kStopped);
}

TEST_F(GrpoRolloutTest, RolloutWithItsRestartsUsedUpStaysFailedAndTheJobContinues) {
    const JobId id = submit_full(0);
    report(id, "rollout-0", ActorPhase::kFailed, "boom", 1);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kFailed);
    EXPECT_TRUE(link_.starts().empty());
    EXPECT_EQ(events(id).back().kind, "actor_lost");
    EXPECT_EQ(events(id).back().message,
              "job-000001/rollout-0 will not be restarted: the job's 0 restarts are used up; the "
              "job continues on 1 live rollout actor");

    // The last one too: no rollout can come back, so the job fails now, naming them.
    report(id, "rollout-1", ActorPhase::kFailed, "boom again", 1);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(job(id).reason,
              "no rollout actor of job-000001 can run any more (restarts used up: 0 of 0): "
              "job-000001/rollout-0 failed on r0 (boom); job-000001/rollout-1 failed on r1 "
              "(boom again)");
}

TEST_F(GrpoRolloutTest, NoLiveRolloutForLongerThanTheBoundFailsTheJobNamingItsActors) {
    const JobId id = submit_full(3, 5000);
    silence({"r0", "r1"}, 6000);
    ASSERT_EQ(actor(id, "rollout-0").phase, ActorPhase::kPending);
    ASSERT_EQ(actor(id, "rollout-1").phase, ActorPhase::kPending);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(event_kinds(id).back(), "no_rollout_alive");
    EXPECT_THAT(events(id).back().message,
                HasSubstr("the job fails unless one runs again within 5.0 s "
                          "(rollout.none_alive_timeout_ms)"));

    clock_.advance(std::chrono::milliseconds(4900));
    jobs_->sweep();
    EXPECT_EQ(job(id).state, JobState::kRunning);
    clock_.advance(std::chrono::milliseconds(200));
    jobs_->sweep();
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(job(id).reason,
              "no rollout actor of job-000001 was alive for 5.1 s "
              "(rollout.none_alive_timeout_ms = 5000): job-000001/rollout-0 pending (node r0 lost "
              "(missed heartbeats for 6.0 s)); job-000001/rollout-1 pending (node r1 lost (missed "
              "heartbeats for 6.0 s))");
    // The trainer is stopped; the pending actors end stopped.
    EXPECT_EQ(actor(id, "rollout-0").phase, ActorPhase::kStopped);
    ASSERT_EQ(link_.stops().size(), 1u);
    EXPECT_EQ(link_.stops()[0].second.actor, "job-000001/trainer-0");
}

TEST_F(GrpoRolloutTest, ARolloutPlacedAgainStopsTheNoRolloutClock) {
    const JobId id = submit_full(3, 5000);
    silence({"r0", "r1"}, 6000);
    ASSERT_EQ(event_kinds(id).back(), "no_rollout_alive");
    add_node("r2", "rollout", {2, 8192, 0});  // room for one of them
    EXPECT_EQ(actor(id, "rollout-0").node, "r2");
    EXPECT_EQ(actor(id, "rollout-1").phase, ActorPhase::kPending);
    clock_.advance(std::chrono::seconds(60));
    jobs_->sweep();
    EXPECT_EQ(job(id).state, JobState::kRunning);
}

TEST_F(GrpoRolloutTest, ATrainerBeyondItsRestartsStillFailsTheJob) {
    const JobId id = submit_full(0);
    report(id, "trainer-0", ActorPhase::kFailed, "boom", 1);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(job(id).reason, "actor job-000001/trainer-0 on t0 failed: boom");
}

TEST_F(GrpoRolloutTest, ATrainerWithNoNodeToRestartOnStillFailsTheJob) {
    const JobId id = submit_full(2);
    silence({"t0"}, 6000);
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_THAT(job(id).reason, HasSubstr("actor job-000001/trainer-0 on t0 failed"));
    EXPECT_THAT(job(id).reason, HasSubstr("no node to restart it"));
}

TEST_F(GrpoRolloutTest, TheBoundIsValidatedNamingTheField) {
    JobYaml y;
    y.kind = "grpo";
    y.none_alive_timeout_ms = -1;
    auto r = jobs_->submit(y.str(), "test.yaml", false);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr("rollout.none_alive_timeout_ms"));
}

// ---- cancel ----

TEST_F(JobManagerTest, CancelStopsEveryLiveActor) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    ASSERT_TRUE(jobs_->cancel(id, "cancelled by the user").ok());
    EXPECT_EQ(job(id).state, JobState::kCancelled);
    EXPECT_EQ(job(id).reason, "cancelled by the user");
    std::vector<std::string> stopped;
    for (const auto& [node, m] : link_.stops()) {
        stopped.push_back(m.actor + "@" + node);
        EXPECT_EQ(m.reason, "job CANCELLED");
    }
    EXPECT_THAT(stopped, UnorderedElementsAre("job-000001/trainer-0@t0", "job-000001/rollout-0@r0",
                                              "job-000001/rollout-1@r1"));
    EXPECT_EQ(events(id).back().message, "CANCELLED: cancelled by the user");

    // Reports arriving after the cancel change nothing.
    report(id, "rollout-0", ActorPhase::kFailed, "late");
    EXPECT_EQ(job(id).state, JobState::kCancelled);
}

TEST_F(JobManagerTest, CancellingAFinishedOrUnknownJobIsRefused) {
    three_nodes();
    const JobId id = submit(spread_job());
    ASSERT_TRUE(jobs_->cancel(id, "x").ok());
    const Status again = jobs_->cancel(id, "x");
    EXPECT_EQ(again.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(again.message(), "job-000001 is already CANCELLED");
    const Status unknown = jobs_->cancel(JobId(77), "x");
    EXPECT_EQ(unknown.code(), StatusCode::kNotFound);
    EXPECT_EQ(unknown.message(), "no job job-000077");
}

TEST_F(JobManagerTest, CancellingAPendingJobSendsNothing) {
    const JobId id = submit(JobYaml{});
    ASSERT_EQ(job(id).state, JobState::kPending);
    ASSERT_TRUE(jobs_->cancel(id, "changed my mind").ok());
    EXPECT_EQ(job(id).state, JobState::kCancelled);
    EXPECT_TRUE(link_.sent.empty());
    three_nodes();  // a cancelled job is never placed
    EXPECT_EQ(job(id).state, JobState::kCancelled);
    EXPECT_TRUE(link_.sent.empty());
}

// ---- pending queue ----

TEST_F(JobManagerTest, PendingJobSaysWhyAndIsPlacedWhenNodesRegister) {
    auto r = jobs_->submit(JobYaml{}.str(), "test.yaml", false);
    ASSERT_TRUE(r.ok());
    const JobId id = r->id;
    EXPECT_EQ(job(id).state, JobState::kPending);
    EXPECT_EQ(r->pending_reason,
              "needs 1 trainer actor with 1 cpu, 512 MiB each; the cluster has no trainer nodes");
    EXPECT_EQ(job(id).reason, r->pending_reason);
    EXPECT_TRUE(link_.sent.empty());

    add_node("t0", "trainer");
    EXPECT_EQ(job(id).state, JobState::kPending);
    EXPECT_THAT(job(id).reason, HasSubstr("the cluster has no rollout nodes"));
    add_node("r0", "rollout");
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(link_.starts().size(), 3u);
    EXPECT_THAT(event_kinds(id), ElementsAre("submitted", "pending", "pending", "placed"));
}

TEST_F(JobManagerTest, AnUnchangedPendingReasonIsRecordedOnce) {
    const JobId id = submit(JobYaml{});
    jobs_->schedule();
    jobs_->schedule();
    EXPECT_THAT(event_kinds(id), ElementsAre("submitted", "pending"));
}

TEST_F(JobManagerTest, HigherPriorityIsPlacedFirstThenSubmissionOrder) {
    // Room for exactly one job at a time.
    JobYaml low, high_first, high_second;
    low.name = "low";
    high_first.name = "high-first";
    high_first.priority = 5;
    high_second.name = "high-second";
    high_second.priority = 5;
    const JobId a = submit(low);
    const JobId b = submit(high_first);
    const JobId c = submit(high_second);
    add_node("t0", "trainer", {1, 8192, 0});
    add_node("r0", "rollout", {2, 8192, 0});

    EXPECT_EQ(job(b).state, JobState::kRunning);
    EXPECT_EQ(job(c).state, JobState::kPending);
    EXPECT_EQ(job(a).state, JobState::kPending);
    EXPECT_THAT(job(c).reason, HasSubstr("t0: 0 free cpus"));

    // Finishing a job frees its nodes for the next one in the queue.
    ASSERT_TRUE(jobs_->cancel(b, "done").ok());
    EXPECT_EQ(job(c).state, JobState::kRunning);
    EXPECT_EQ(job(a).state, JobState::kPending);
    run_all(c);
    report(c, "trainer-0", ActorPhase::kSucceeded);
    report(c, "rollout-0", ActorPhase::kSucceeded);
    report(c, "rollout-1", ActorPhase::kSucceeded);
    EXPECT_EQ(job(c).state, JobState::kSucceeded);
    EXPECT_EQ(job(a).state, JobState::kRunning);
}

TEST_F(JobManagerTest, ResourcesOfRunningJobsAreNotGivenTwice) {
    add_node("t0", "trainer", {1, 8192, 0});
    add_node("r0", "rollout", {2, 8192, 0});
    const JobId first = submit(JobYaml{});
    const JobId second = submit(JobYaml{});
    EXPECT_EQ(job(first).state, JobState::kRunning);
    EXPECT_EQ(job(second).state, JobState::kPending);
    const auto caps = jobs_->capacities();
    ASSERT_EQ(caps.size(), 2u);
    for (const auto& c : caps) {
        EXPECT_EQ(c.free_cpus, 0) << c.id;
        EXPECT_EQ(c.actors, c.id == "t0" ? 1 : 2) << c.id;
    }
}

// ---- dry run ----

TEST_F(JobManagerTest, DryRunPlansWithoutPersistingOrStarting) {
    three_nodes();
    auto r = jobs_->submit(spread_job().str(), "test.yaml", true);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_FALSE(r->id.valid());
    ASSERT_TRUE(r->plan.has_value());
    EXPECT_EQ(r->plan->size(), 3u);
    EXPECT_EQ(r->plan->at("job-000000/rollout-1"), "r1");
    EXPECT_TRUE(r->pending_reason.empty());
    EXPECT_THAT(r->spec_yaml, HasSubstr("name: diag"));
    EXPECT_TRUE(jobs_->jobs().empty());
    EXPECT_THAT(*store_->load_jobs(), IsEmpty());
    EXPECT_TRUE(link_.sent.empty());
    // No job id was used up.
    EXPECT_EQ(submit(spread_job()).str(), "job-000001");
}

TEST_F(JobManagerTest, DryRunThatCannotBePlacedSaysWhy) {
    add_node("t0", "trainer");
    JobYaml y;
    y.rollout.gpus = 1;
    auto r = jobs_->submit(y.str(), "test.yaml", true);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->plan.has_value());
    EXPECT_EQ(r->pending_reason,
              "needs 2 rollout actors with 1 gpu, 1 cpu, 512 MiB each; the cluster has no rollout "
              "nodes");
    EXPECT_TRUE(jobs_->jobs().empty());
}

// ---- reconcile with agent reports ----

wire::ActorReport running(const std::string& actor, int64_t attempt = 1) {
    return {actor, attempt, ActorPhase::kRunning, 0, ""};
}

TEST_F(JobManagerTest, ReconcileAsksToStopActorsThatAreNotWanted) {
    three_nodes();
    JobYaml y = spread_job();
    y.max_actor_restarts = 1;
    const JobId id = submit(y);
    run_all(id);
    const auto stop = jobs_->reconcile(
        "r0", {running("job-000001/rollout-0"),     // wanted
               running("job-000042/rollout-0"),     // no such job
               running("job-000001/rollout-1"),     // runs on r1, not here
               running("job-000001/trainer-0", 7),  // an attempt that is not the current one
               {"job-000007/rollout-3", 1, ActorPhase::kSucceeded, 0, ""},  // ended anyway
               running("garbage")});
    EXPECT_THAT(stop, UnorderedElementsAre("job-000042/rollout-0", "job-000001/rollout-1",
                                           "job-000001/trainer-0", "garbage"));
    EXPECT_EQ(job(id).state, JobState::kRunning);
}

TEST_F(JobManagerTest, ReconcileStopsActorsOfFinishedJobs) {
    three_nodes();
    const JobId id = submit(spread_job());
    ASSERT_TRUE(jobs_->cancel(id, "x").ok());
    EXPECT_THAT(jobs_->reconcile("r0", {running("job-000001/rollout-0")}),
                ElementsAre("job-000001/rollout-0"));
}

TEST_F(JobManagerTest, ReconcileAppliesTheStatesAgentsReport) {
    three_nodes();
    const JobId id = submit(spread_job());
    EXPECT_THAT(jobs_->reconcile("t0", {running("job-000001/trainer-0")}), IsEmpty());
    EXPECT_EQ(actor(id, "trainer-0").phase, ActorPhase::kRunning);
    (void)jobs_->reconcile("t0", {{"job-000001/trainer-0", 1, ActorPhase::kSucceeded, 0, ""}});
    (void)jobs_->reconcile("r0", {{"job-000001/rollout-0", 1, ActorPhase::kSucceeded, 0, ""}});
    (void)jobs_->reconcile("r1", {{"job-000001/rollout-1", 1, ActorPhase::kSucceeded, 0, ""}});
    EXPECT_EQ(job(id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, RunningActorMissingFromItsNodesReportHasFailed) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    EXPECT_THAT(jobs_->reconcile("r0", {}), IsEmpty());
    EXPECT_EQ(job(id).state, JobState::kFailed);
    EXPECT_EQ(job(id).reason,
              "actor job-000001/rollout-0 on r0 failed: not running on r0 any more (agent "
              "restarted?)");
}

TEST_F(JobManagerTest, StartsLostWhileAnAgentWasAwayAreSentAgainWhenItRegisters) {
    three_nodes();
    link_.unreachable = {"r0"};
    const JobId id = submit(spread_job());
    ASSERT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(start_targets().count("job-000001/rollout-0"), 0u);
    link_.unreachable.clear();

    // A heartbeat without the actor: the start may still be in flight, nothing happens.
    (void)jobs_->reconcile("r0", {});
    EXPECT_EQ(start_targets().count("job-000001/rollout-0"), 0u);
    EXPECT_EQ(job(id).state, JobState::kRunning);

    // A registration without it: the start is sent again, same attempt.
    (void)jobs_->reconcile("r0", {}, /*registering=*/true);
    ASSERT_EQ(start_targets().count("job-000001/rollout-0"), 1u);
    EXPECT_EQ(start_targets().at("job-000001/rollout-0"), "r0");
    EXPECT_EQ(actor(id, "rollout-0").attempt, 1);
}

// ---- restart of the coordinator ----

TEST_F(JobManagerTest, RestoreKeepsRunningJobsAndMatchingReportsRestartNothing) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    const auto before = events(id);
    const uint64_t epoch = store_->epoch();

    // A new coordinator on the same state directory.
    link_.clear();
    open();
    EXPECT_EQ(store_->epoch(), epoch + 1);
    registry_->restore(*store_->load_nodes());
    jobs_->restore(*store_->load_jobs());
    ASSERT_NE(jobs_->find(id), nullptr);
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(actor(id, "trainer-0").node, "t0");
    EXPECT_EQ(actor(id, "rollout-1").node, "r1");
    for (const auto& a : job(id).actors) {
        EXPECT_EQ(a.attempt, 1) << a.name();
        EXPECT_EQ(a.phase, ActorPhase::kRunning) << a.name();
    }

    // The agents re-register with what they run.
    const std::map<std::string, std::string> runs = {{"t0", "job-000001/trainer-0"},
                                                     {"r0", "job-000001/rollout-0"},
                                                     {"r1", "job-000001/rollout-1"}};
    for (const auto& [node, actor_name] : runs) {
        const std::string role = node[0] == 't' ? "trainer" : "rollout";
        ASSERT_TRUE(registry_->on_register(register_msg(node, role), "new-route-" + node).ok());
        EXPECT_THAT(jobs_->reconcile(node, {running(actor_name)}, true), IsEmpty());
    }
    jobs_->schedule();
    EXPECT_TRUE(link_.sent.empty())
        << link_.sent.size() << " messages, first " << link_.sent.front().envelope.type;
    EXPECT_EQ(job(id).state, JobState::kRunning);
    EXPECT_EQ(job(id).restarts_used, 0);
    for (const auto& a : job(id).actors) EXPECT_EQ(a.attempt, 1) << a.name();
    EXPECT_EQ(events(id).size(), before.size());
}

TEST_F(JobManagerTest, EventsBeforeAndAfterACoordinatorRestartAreAllKept) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    const size_t before = events(id).size();  // submitted, placed, 3 x actor_started

    open();
    registry_->restore(*store_->load_nodes());
    jobs_->restore(*store_->load_jobs());
    for (const char* a : {"trainer-0", "rollout-0", "rollout-1"}) {
        report(id, a, ActorPhase::kSucceeded);
    }
    ASSERT_EQ(job(id).state, JobState::kSucceeded);

    const auto ev = events(id);
    EXPECT_EQ(ev.size(), before + 4);  // 3 x actor_exited, finished
    std::vector<std::string> kinds;
    for (const auto& e : ev) kinds.push_back(e.kind);
    EXPECT_THAT(
        kinds, ElementsAre("submitted", "placed", "actor_started", "actor_started", "actor_started",
                           "actor_exited", "actor_exited", "actor_exited", "finished"));
}

TEST_F(JobManagerTest, RestoredPendingJobIsPlacedWhenNodesComeBack) {
    const JobId id = submit(JobYaml{});
    open();
    jobs_->restore(*store_->load_jobs());
    EXPECT_EQ(job(id).state, JobState::kPending);
    three_nodes();
    EXPECT_EQ(job(id).state, JobState::kRunning);
    // Job ids keep counting after a restart.
    EXPECT_EQ(submit(JobYaml{}).str(), "job-000002");
}

// ---- event log, logs, metrics ----

TEST_F(JobManagerTest, EventsOfAJobAreRecordedInOrder) {
    three_nodes();
    const JobId id = submit(spread_job());
    run_all(id);
    for (const char* a : {"trainer-0", "rollout-0", "rollout-1"}) {
        clock_.advance(std::chrono::milliseconds(10));
        report(id, a, ActorPhase::kSucceeded);
    }
    const auto ev = events(id);
    std::vector<std::string> kinds;
    for (const auto& e : ev) kinds.push_back(e.kind);
    EXPECT_THAT(
        kinds, ElementsAre("submitted", "placed", "actor_started", "actor_started", "actor_started",
                           "actor_exited", "actor_exited", "actor_exited", "finished"));
    for (size_t i = 0; i < ev.size(); ++i) {
        EXPECT_EQ(ev[i].seq, static_cast<int64_t>(i + 1));
        if (i > 0) {
            EXPECT_GE(ev[i].ts_ns, ev[i - 1].ts_ns);
        }
    }
    EXPECT_EQ(ev[2].message, "job-000001/trainer-0 running on t0 (attempt 1)");
    EXPECT_EQ(ev[5].message, "job-000001/trainer-0 on t0 succeeded");
    EXPECT_EQ(ev.back().message, "SUCCEEDED");
}

TEST_F(JobManagerTest, LogLinesAndMetricsAreStoredUnderTheirJob) {
    three_nodes();
    const JobId id = submit(spread_job());
    jobs_->on_log_lines("r0", {"job-000001",
                               {{"job-000001/rollout-0", 11, "info", "first"},
                                {"job-000001/rollout-0", 12, "warn", "second"}}});
    jobs_->on_log_lines("r0", {"job-000099", {{"job-000099/rollout-0", 13, "info", "lost"}}});
    auto logs = store_->logs(id, 0, 100);
    ASSERT_TRUE(logs.ok());
    ASSERT_EQ(logs->size(), 2u);
    EXPECT_EQ((*logs)[0].seq, 1);
    EXPECT_EQ((*logs)[1].msg, "second");
    EXPECT_EQ((*logs)[1].level, "warn");

    jobs_->on_metrics({"job-000001", 5, {{"loss", 0.25}}});
    jobs_->on_metrics({"job-000001", 3, {{"loss", 0.5}}});  // late: step stays at the newest
    EXPECT_EQ(job(id).step, 5);
    auto m = store_->metrics(id, 0, 100);
    ASSERT_TRUE(m.ok());
    ASSERT_EQ(m->size(), 2u);
    EXPECT_EQ((*m)[0].first, 3);
    EXPECT_EQ((*m)[1].second["loss"], 0.25);
}

TEST_F(JobManagerTest, EndpointsAreKeptForTheCurrentAttemptOnly) {
    three_nodes();
    JobYaml y = spread_job();
    y.max_actor_restarts = 1;
    const JobId id = submit(y);
    jobs_->on_endpoint("t0", {"job-000001/trainer-0", 1, "trajectories", "tcp://t0:4000"});
    jobs_->on_endpoint("t0", {"job-000001/trainer-0", 0, "stale", "tcp://t0:1"});  // old attempt
    jobs_->on_endpoint("r0", {"job-000001/trainer-0", 1, "elsewhere", "tcp://r0:1"});  // wrong node
    EXPECT_EQ(actor(id, "trainer-0").endpoints, Json({{"trajectories", "tcp://t0:4000"}}));
    EXPECT_EQ((*store_->load_jobs())[0].actors[0].endpoints,
              Json({{"trajectories", "tcp://t0:4000"}}));

    // A restarted actor announces again; the old address is gone.
    report(id, "trainer-0", ActorPhase::kFailed, "boom");
    ASSERT_EQ(actor(id, "trainer-0").attempt, 2);
    EXPECT_EQ(actor(id, "trainer-0").endpoints, Json::object());
}

TEST_F(JobManagerTest, JobsGaugeCountsJobsByState) {
    three_nodes();
    submit(spread_job());
    submit(JobYaml{.rollouts = 100});  // never fits
    const std::string text = metrics_->render();
    EXPECT_THAT(text, HasSubstr("tandem_jobs{state=\"RUNNING\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tandem_jobs{state=\"PENDING\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tandem_jobs{state=\"FAILED\"} 0\n"));
    EXPECT_EQ(metrics_->counter_value("tandem_scheduler_decisions_total", {{"outcome", "placed"}}),
              1);
}

}  // namespace
}  // namespace tandem::coord::testing
