// StateStore: everything written comes back after the database is closed and opened again (a
// coordinator restart), the epoch counts the opens, and a database of another schema version is
// refused. Also the VersionTable on top of it.
#include "coordinator/state_store.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/config/loader.h"
#include "coordinator/sqlite.h"
#include "coordinator/version_table.h"
#include "tests/unit/coordinator/coordinator_fixture.h"

namespace tandem::coord::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

class StateStoreTest : public ::testing::Test {
protected:
    StateStoreTest() { reopen(); }

    void reopen() {
        store_.reset();
        auto s = StateStore::open(dir_.str());
        ASSERT_TRUE(s.ok()) << s.status().to_string();
        store_ = std::move(*s);
    }

    TempDir dir_;
    std::unique_ptr<StateStore> store_;
};

NodeRecord sample_node(const std::string& id) {
    NodeRecord n;
    n.id = id;
    n.role = "trainer";
    n.host = "host-" + id;
    n.agent_version = "1.2.3";
    n.resources = {12.5, 98304, 4};
    n.labels = {{"rack", "b7"}, {"zone", "west"}};
    n.state = NodeState::kDead;
    n.first_seen_ns = 1000;
    n.last_seen_ns = 2000;
    n.dead_reason = "missed heartbeats for 5.1 s";
    return n;
}

JobRecord sample_job(uint64_t n) {
    JobRecord j;
    j.id = JobId(n);
    JobYaml y;
    y.name = "stored-" + std::to_string(n);
    y.priority = 7;
    y.max_actor_restarts = 2;
    j.spec_yaml = y.str();
    auto spec = config::parse_job_text(j.spec_yaml, "sample");
    EXPECT_TRUE(spec.ok()) << spec.status().to_string();
    j.spec = *spec;
    j.state = JobState::kRunning;
    j.reason = "why not";
    j.restarts_used = 1;
    j.submitted_ns = 10;
    j.started_ns = 20;
    j.finished_ns = 30;
    j.step = 44;
    j.last_metrics = {{"loss", 0.125}};
    // Saved out of order: they come back trainers first, then rollouts by index.
    for (auto [role, index] : std::vector<std::pair<ActorRole, uint32_t>>{
             {ActorRole::kRollout, 1}, {ActorRole::kTrainer, 0}, {ActorRole::kRollout, 0}}) {
        ActorRecord a;
        a.id = {j.id, role, index};
        a.node = role == ActorRole::kTrainer ? "t0" : "r" + std::to_string(index);
        a.attempt = 3;
        a.phase = wire::ActorPhase::kFailed;
        a.exit_code = 137;
        a.last_error = "killed";
        a.progress = {{"fraction", 0.5}};
        if (role == ActorRole::kRollout) a.gpus = {static_cast<int>(index), 3};
        j.actors.push_back(a);
    }
    return j;
}

TEST_F(StateStoreTest, NodesRoundTripWithEveryField) {
    ASSERT_TRUE(store_->save_node(sample_node("n1")).ok());
    ASSERT_TRUE(store_->save_node(sample_node("n0")).ok());
    reopen();
    auto nodes = store_->load_nodes();
    ASSERT_TRUE(nodes.ok()) << nodes.status().to_string();
    ASSERT_EQ(nodes->size(), 2u);
    const NodeRecord& n = (*nodes)[0];  // ordered by id
    const NodeRecord want = sample_node("n0");
    EXPECT_EQ(n.id, "n0");
    EXPECT_EQ(n.role, want.role);
    EXPECT_EQ(n.host, want.host);
    EXPECT_EQ(n.agent_version, want.agent_version);
    EXPECT_EQ(n.resources.cpus, 12.5);
    EXPECT_EQ(n.resources.memory_mb, 98304);
    EXPECT_EQ(n.resources.gpus, 4);
    EXPECT_EQ(n.labels, want.labels);
    EXPECT_EQ(n.state, NodeState::kDead);
    EXPECT_EQ(n.first_seen_ns, 1000);
    EXPECT_EQ(n.last_seen_ns, 2000);
    EXPECT_EQ(n.dead_reason, want.dead_reason);
}

TEST_F(StateStoreTest, SavingANodeAgainReplacesIt) {
    NodeRecord n = sample_node("n0");
    ASSERT_TRUE(store_->save_node(n).ok());
    n.state = NodeState::kAlive;
    n.dead_reason.clear();
    ASSERT_TRUE(store_->save_node(n).ok());
    auto nodes = store_->load_nodes();
    ASSERT_EQ(nodes->size(), 1u);
    EXPECT_EQ((*nodes)[0].state, NodeState::kAlive);
    EXPECT_TRUE((*nodes)[0].dead_reason.empty());
}

TEST_F(StateStoreTest, JobsWithTheirActorsRoundTrip) {
    const JobRecord want = sample_job(3);
    ASSERT_TRUE(store_->save_job(want).ok());
    ASSERT_TRUE(store_->save_job(sample_job(1)).ok());
    reopen();
    auto jobs = store_->load_jobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status().to_string();
    ASSERT_EQ(jobs->size(), 2u);
    EXPECT_EQ((*jobs)[0].id, JobId(1));  // ordered by id
    const JobRecord& j = (*jobs)[1];
    EXPECT_EQ(j.id, JobId(3));
    EXPECT_EQ(j.spec_yaml, want.spec_yaml);
    EXPECT_EQ(j.spec.name, "stored-3");
    EXPECT_EQ(j.spec.priority, 7);
    EXPECT_EQ(j.spec.max_actor_restarts, 2);
    EXPECT_EQ(j.state, JobState::kRunning);
    EXPECT_EQ(j.reason, "why not");
    EXPECT_EQ(j.restarts_used, 1);
    EXPECT_EQ(j.submitted_ns, 10);
    EXPECT_EQ(j.started_ns, 20);
    EXPECT_EQ(j.finished_ns, 30);
    EXPECT_EQ(j.step, 44);
    EXPECT_EQ(j.last_metrics, want.last_metrics);
    ASSERT_EQ(j.actors.size(), 3u);
    EXPECT_EQ(j.actors[0].name(), "job-000003/trainer-0");
    EXPECT_EQ(j.actors[1].name(), "job-000003/rollout-0");
    EXPECT_EQ(j.actors[2].name(), "job-000003/rollout-1");
    for (const auto& a : j.actors) {
        EXPECT_EQ(a.attempt, 3);
        EXPECT_EQ(a.phase, wire::ActorPhase::kFailed);
        EXPECT_EQ(a.exit_code, 137);
        EXPECT_EQ(a.last_error, "killed");
        EXPECT_EQ(a.progress, Json({{"fraction", 0.5}}));
    }
    EXPECT_EQ(j.actors[0].node, "t0");
    EXPECT_EQ(j.actors[2].node, "r1");
    // GPU slots survive a restart, so a new actor is never given one a running actor holds.
    EXPECT_TRUE(j.actors[0].gpus.empty());
    EXPECT_EQ(j.actors[2].gpus, (std::vector<int>{1, 3}));
}

// A state directory of schema 2 (before GPU slots were stored): opened for writing it gets the
// column and keeps its jobs; opened to read (tandem dashboard) its actors have no slots.
TEST_F(StateStoreTest, ASchema2DatabaseGetsTheGpuColumn) {
    ASSERT_TRUE(store_->save_job(sample_job(1)).ok());
    store_.reset();
    {
        auto db = Database::open(dir_.str() + "/state.db");
        ASSERT_TRUE(db.ok()) << db.status().to_string();
        ASSERT_TRUE((*db)->exec("ALTER TABLE actors DROP COLUMN gpus").ok());
        ASSERT_TRUE((*db)->exec("UPDATE meta SET value = '2' WHERE key = 'schema_version'").ok());
    }
    auto reader = StateStore::open_existing(dir_.str());
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    auto old = (*reader)->load_jobs();
    ASSERT_TRUE(old.ok()) << old.status().to_string();
    ASSERT_EQ(old->size(), 1u);
    EXPECT_TRUE((*old)[0].actors[2].gpus.empty());
    reader->reset();
    reopen();
    auto jobs = store_->load_jobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status().to_string();
    ASSERT_EQ(jobs->size(), 1u);
    JobRecord j = (*jobs)[0];
    EXPECT_TRUE(j.actors[2].gpus.empty());
    j.actors[2].gpus = {2};
    ASSERT_TRUE(store_->save_job(j).ok());
    reopen();
    EXPECT_EQ((*store_->load_jobs())[0].actors[2].gpus, (std::vector<int>{2}));
}

TEST_F(StateStoreTest, SavingAJobAgainUpdatesItAndItsActors) {
    JobRecord j = sample_job(1);
    ASSERT_TRUE(store_->save_job(j).ok());
    j.state = JobState::kSucceeded;
    j.actors[0].phase = wire::ActorPhase::kSucceeded;
    ASSERT_TRUE(store_->save_job(j).ok());
    auto jobs = store_->load_jobs();
    ASSERT_EQ(jobs->size(), 1u);
    EXPECT_EQ((*jobs)[0].state, JobState::kSucceeded);
    EXPECT_EQ((*jobs)[0].actors.size(), 3u);
    EXPECT_EQ((*jobs)[0].actors[2].phase, wire::ActorPhase::kSucceeded);  // rollout-1
}

TEST_F(StateStoreTest, JobIdsAreAllocatedOnceAcrossOpens) {
    EXPECT_EQ(*store_->allocate_job_id(), 1u);
    EXPECT_EQ(*store_->allocate_job_id(), 2u);
    reopen();
    EXPECT_EQ(*store_->allocate_job_id(), 3u);
}

TEST_F(StateStoreTest, EventsGetConsecutiveSequenceNumbersPerJob) {
    for (int64_t i = 1; i <= 3; ++i) {
        auto seq = store_->append_event(JobId(1), {0, 100 + i, "kind", "m"});
        ASSERT_TRUE(seq.ok()) << seq.status().to_string();
        EXPECT_EQ(*seq, i);
    }
    EXPECT_EQ(*store_->append_event(JobId(2), {0, 1, "other", "other job"}), 1);
    // The seq a caller passes is not used: the store assigns it, also after a reopen.
    reopen();
    EXPECT_EQ(*store_->append_event(JobId(1), {1, 104, "kind", "m"}), 4);
}

TEST_F(StateStoreTest, EventsComeBackInOrderAfterASeqWithALimit) {
    for (int64_t i = 1; i <= 5; ++i) {
        ASSERT_TRUE(store_
                        ->append_event(JobId(1), {0, 100 + i, "kind" + std::to_string(i),
                                                  "message " + std::to_string(i)})
                        .ok());
    }
    ASSERT_TRUE(store_->append_event(JobId(2), {0, 1, "other", "other job"}).ok());
    reopen();
    auto all = store_->events(JobId(1), 0, 100);
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 5u);
    EXPECT_EQ((*all)[0].seq, 1);
    EXPECT_EQ((*all)[0].ts_ns, 101);
    EXPECT_EQ((*all)[0].kind, "kind1");
    EXPECT_EQ((*all)[4].seq, 5);
    EXPECT_EQ((*all)[4].message, "message 5");

    auto page = store_->events(JobId(1), 2, 2);
    ASSERT_TRUE(page.ok());
    ASSERT_EQ(page->size(), 2u);
    EXPECT_EQ((*page)[0].seq, 3);
    EXPECT_EQ((*page)[1].seq, 4);
    EXPECT_THAT(*store_->events(JobId(1), 5, 100), IsEmpty());
    EXPECT_THAT(*store_->events(JobId(9), 0, 100), IsEmpty());
}

TEST_F(StateStoreTest, LogsComeBackInOrderAfterASeqWithALimit) {
    std::vector<LogRecord> lines;
    for (int64_t i = 1; i <= 3; ++i) {
        lines.push_back({0, 10 * i, "job-000001/rollout-0", "info", "line " + std::to_string(i)});
    }
    ASSERT_TRUE(store_->append_logs(JobId(1), lines).ok());
    ASSERT_TRUE(store_->append_logs(JobId(1), {}).ok());
    reopen();
    ASSERT_TRUE(
        store_->append_logs(JobId(1), {{0, 40, "job-000001/trainer-0", "warn", "line 4"}}).ok());
    auto page = store_->logs(JobId(1), 1, 2);
    ASSERT_TRUE(page.ok());
    ASSERT_EQ(page->size(), 2u);
    EXPECT_EQ((*page)[0].seq, 2);
    EXPECT_EQ((*page)[0].ts_ns, 20);
    EXPECT_EQ((*page)[0].actor, "job-000001/rollout-0");
    EXPECT_EQ((*page)[0].level, "info");
    EXPECT_EQ((*page)[1].msg, "line 3");
    auto all = store_->logs(JobId(1), 0, 100);
    ASSERT_EQ(all->size(), 4u);
    EXPECT_EQ((*all)[3].seq, 4);
    EXPECT_EQ((*all)[3].level, "warn");
    EXPECT_THAT(*store_->logs(JobId(2), 0, 100), IsEmpty());
}

TEST_F(StateStoreTest, MetricsComeBackByStep) {
    ASSERT_TRUE(store_->append_metrics(JobId(1), 2, 5, {{"loss", 2.0}}).ok());
    ASSERT_TRUE(store_->append_metrics(JobId(1), 1, 4, {{"loss", 1.0}}).ok());
    ASSERT_TRUE(store_->append_metrics(JobId(1), 3, 6, {{"loss", 3.0}, {"reward", 0.5}}).ok());
    reopen();
    auto m = store_->metrics(JobId(1), 1, 10);
    ASSERT_TRUE(m.ok());
    ASSERT_EQ(m->size(), 2u);
    EXPECT_EQ((*m)[0].first, 2);
    EXPECT_EQ((*m)[0].second, Json({{"loss", 2.0}}));
    EXPECT_EQ((*m)[1].second["reward"], 0.5);
    EXPECT_EQ(store_->metrics(JobId(1), 0, 1)->size(), 1u);
}

TEST_F(StateStoreTest, VersionsRoundTripInOrderAndCanBeUpdated) {
    const Json d = {{"fingerprint", "f00d"}, {"shards", Json::array({{{"bytes", 4096}}})}};
    ASSERT_TRUE(store_->save_version(JobId(1), {2, 200, true, d}).ok());
    ASSERT_TRUE(store_->save_version(JobId(1), {1, 100, true, d}).ok());
    ASSERT_TRUE(store_->save_version(JobId(1), {1, 100, false, d}).ok());  // publisher lost
    reopen();
    auto v = store_->versions(JobId(1));
    ASSERT_TRUE(v.ok());
    ASSERT_EQ(v->size(), 2u);
    EXPECT_EQ((*v)[0].version, 1u);
    EXPECT_EQ((*v)[0].published_ns, 100);
    EXPECT_FALSE((*v)[0].available);
    EXPECT_EQ((*v)[0].descriptor, d);
    EXPECT_EQ((*v)[1].version, 2u);
    EXPECT_TRUE((*v)[1].available);
    EXPECT_THAT(*store_->versions(JobId(2)), IsEmpty());
}

TEST_F(StateStoreTest, EpochIncreasesWithEveryOpen) {
    const uint64_t first = store_->epoch();
    EXPECT_EQ(first, 1u);
    reopen();
    EXPECT_EQ(store_->epoch(), first + 1);
    reopen();
    EXPECT_EQ(store_->epoch(), first + 2);
}

TEST_F(StateStoreTest, DatabaseOfAnotherSchemaVersionIsRefused) {
    store_.reset();
    {
        auto db = Database::open(dir_.str() + "/state.db");
        ASSERT_TRUE(db.ok()) << db.status().to_string();
        ASSERT_TRUE((*db)->exec("UPDATE meta SET value = '99' WHERE key = 'schema_version'").ok());
    }
    auto s = StateStore::open(dir_.str());
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(),
                HasSubstr(fmt::format("state.db: schema version 99 is not supported (expected {})",
                                      StateStore::kSchemaVersion)));
}

TEST_F(StateStoreTest, StateDirectoryThatCannotBeCreatedIsUnavailable) {
    const std::string file = dir_.str() + "/a-file";
    std::ofstream(file) << "x";
    auto s = StateStore::open(file + "/state");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(s.status().message(), HasSubstr("cannot create state directory"));
}

// ---- VersionTable ----

class VersionTableTest : public StateStoreTest {
protected:
    tandem::testing::FakeClock clock_;
};

TEST_F(VersionTableTest, PublishedVersionsAreListedAndPersisted) {
    VersionTable table(clock_, *store_);
    ASSERT_TRUE(table.publish(JobId(1), 0, {{"fingerprint", "f"}}, "t0").ok());
    clock_.advance(std::chrono::seconds(1));
    ASSERT_TRUE(table.publish(JobId(1), 1, {{"fingerprint", "f"}}, "t0").ok());
    EXPECT_EQ(table.count(JobId(1)), 2u);
    EXPECT_EQ(table.count(JobId(2)), 0u);
    ASSERT_TRUE(table.latest(JobId(1)).has_value());
    EXPECT_EQ(table.latest(JobId(1))->version, 1u);
    EXPECT_EQ(table.latest(JobId(1))->published_ns, clock_.wall_ns());
    EXPECT_EQ(table.list(JobId(1))[0].descriptor["publisher_nodes"], Json::array({"t0"}));

    auto stored = store_->versions(JobId(1));
    ASSERT_TRUE(stored.ok());
    EXPECT_EQ(stored->size(), 2u);
}

TEST_F(VersionTableTest, ShardsOfOneVersionAreMerged) {
    VersionTable table(clock_, *store_);
    ASSERT_TRUE(table.publish(JobId(1), 4, {{"shards", Json::array({{{"rank", 0}}})}}, "t0").ok());
    ASSERT_TRUE(table.publish(JobId(1), 4, {{"shards", Json::array({{{"rank", 1}}})}}, "t1").ok());
    const auto v = table.list(JobId(1));
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0].descriptor["shards"].size(), 2u);
    EXPECT_EQ(v[0].descriptor["publisher_nodes"], Json::array({"t0", "t1"}));
}

TEST_F(VersionTableTest, VersionsOfADeadPublisherBecomeUnavailable) {
    VersionTable table(clock_, *store_);
    ASSERT_TRUE(table.publish(JobId(1), 1, Json::object(), "t0").ok());
    ASSERT_TRUE(table.publish(JobId(1), 2, Json::object(), "t1").ok());
    table.on_node_dead("t1");
    ASSERT_TRUE(table.latest(JobId(1)).has_value());
    EXPECT_EQ(table.latest(JobId(1))->version, 1u);  // newest available
    EXPECT_FALSE(table.list(JobId(1))[1].available);
    EXPECT_FALSE((*store_->versions(JobId(1)))[1].available);
    table.on_node_dead("t0");
    EXPECT_FALSE(table.latest(JobId(1)).has_value());
}

TEST_F(VersionTableTest, RestoredVersionsAreListed) {
    ASSERT_TRUE(store_->save_version(JobId(3), {7, 70, true, Json::object()}).ok());
    VersionTable table(clock_, *store_);
    table.restore(JobId(3), *store_->versions(JobId(3)));
    EXPECT_EQ(table.count(JobId(3)), 1u);
    EXPECT_EQ(table.latest(JobId(3))->version, 7u);
}

}  // namespace
}  // namespace tandem::coord::testing
