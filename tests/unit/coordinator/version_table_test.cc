// VersionTable: versions are available, retired (slot reclaimed) or unavailable (publisher
// exited, replaced or its node lost) and say why; readers asking for such a version get the
// reason; readers joining a version form a breadth-first relay tree of the job's fan-out; all of
// it survives a coordinator restart. Also the agent messages that drive it, through the
// AgentDispatcher, and the HTTP endpoints readers use.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>

#include <boost/asio/io_context.hpp>

#include "coordinator/agent_dispatcher.h"
#include "coordinator/agent_server.h"
#include "coordinator/http_api.h"
#include "coordinator/version_table.h"
#include "tests/unit/coordinator/coordinator_fixture.h"

namespace tandem::coord::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A descriptor as the weight plane's to_json writes it (only the fields the table reads).
Json descriptor(const std::string& publisher, uint32_t shard = 0, uint32_t shard_count = 1) {
    return {
        {"layout_fingerprint", "00000000deadbeef"},
        {"shard_count", shard_count},
        {"shards", Json::array({{{"index", shard}, {"publisher", publisher}, {"bytes", 1024}}})}};
}
Json relay_source(const std::string& reader) {
    return {{"reader", reader}, {"worker_address", "AAAA"}, {"host", "h"}, {"pid", 7}};
}

class VersionStatesTest : public CoordinatorTest {
protected:
    VersionStatesTest() { versions_ = std::make_unique<VersionTable>(clock_, *store_); }

    // What main.cc does on start: a new table restored from the store.
    void restart() {
        versions_.reset();
        open();
        versions_ = std::make_unique<VersionTable>(clock_, *store_);
        for (JobId j : {JobId(1), JobId(2)}) {
            auto v = store_->versions(j);
            ASSERT_TRUE(v.ok()) << v.status().to_string();
            versions_->restore(j, std::move(*v));
        }
    }
    void publish(Version v, const std::string& actor = "job-000001/trainer-0",
                 const std::string& node = "t0", int64_t attempt = 0) {
        ASSERT_TRUE(
            versions_->publish(JobId(1), v, descriptor(actor), node, {actor, attempt, node}).ok());
    }
    // The parent of each reader, "" for the publishers, in join order.
    std::vector<std::string> parents(Version v) {
        std::vector<std::string> out;
        const auto rec = versions_->get(JobId(1), v);
        EXPECT_TRUE(rec.ok()) << rec.status().to_string();
        if (!rec.ok()) return out;
        for (const auto& r : rec->relays) out.push_back(r.parent);
        return out;
    }

    std::unique_ptr<VersionTable> versions_;
};

TEST_F(VersionStatesTest, PublishedVersionIsAvailableAndLatest) {
    publish(0);
    publish(1);
    auto v = versions_->get(JobId(1), 1);
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    EXPECT_EQ(v->state, VersionState::kAvailable);
    EXPECT_TRUE(v->available);
    ASSERT_EQ(v->publishers.size(), 1u);
    EXPECT_EQ(v->publishers[0].actor, "job-000001/trainer-0");
    EXPECT_EQ(v->publishers[0].node, "t0");
    EXPECT_EQ(versions_->latest(JobId(1))->version, 1u);
    auto missing = versions_->get(JobId(1), 9);
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
    EXPECT_THAT(missing.status().message(), HasSubstr("version 9 of job-000001"));
}

TEST_F(VersionStatesTest, RetiredVersionIsRefusedNamingTheReclaimAndLatestSkipsIt) {
    publish(0);
    publish(1);
    ASSERT_TRUE(versions_->retire(JobId(1), 1, 0, "job-000001/trainer-0").ok());
    auto v = versions_->get(JobId(1), 1);
    EXPECT_EQ(v.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(v.status().message(), HasSubstr("version 1 of job-000001 is retired"));
    EXPECT_THAT(v.status().message(),
                HasSubstr("job-000001/trainer-0 released the slot of shard 0"));
    EXPECT_EQ(versions_->latest(JobId(1))->version, 0u);
    EXPECT_EQ(versions_->list(JobId(1)).at(1).state, VersionState::kRetired);
    EXPECT_EQ(versions_->retire(JobId(1), 5, 0, "x").code(), StatusCode::kNotFound);
}

TEST_F(VersionStatesTest, GonePublisherMakesOnlyItsVersionsUnavailable) {
    publish(0, "job-000001/trainer-0");
    publish(1, "job-000001/trainer-1", "t1");
    std::vector<std::string> asked;
    versions_->check_publishers(
        [&](JobId, const VersionPublisher& p) -> std::optional<std::string> {
            asked.push_back(p.actor);
            if (p.actor == "job-000001/trainer-0") return std::string("trainer-0 FAILED (exit 9)");
            return std::nullopt;
        });
    EXPECT_THAT(asked, ElementsAre("job-000001/trainer-0", "job-000001/trainer-1"));
    auto v0 = versions_->get(JobId(1), 0);
    EXPECT_EQ(v0.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(v0.status().message(), HasSubstr("is unavailable: trainer-0 FAILED (exit 9)"));
    EXPECT_TRUE(versions_->get(JobId(1), 1).ok());
    // A gone publisher is not asked about again: it has no available versions left.
    asked.clear();
    versions_->check_publishers([&](JobId, const VersionPublisher& p) {
        asked.push_back(p.actor);
        return std::optional<std::string>();
    });
    EXPECT_THAT(asked, ElementsAre("job-000001/trainer-1"));
}

TEST_F(VersionStatesTest, LostNodeMakesItsVersionsUnavailableNamingTheNode) {
    publish(0, "job-000001/trainer-0", "t0");
    publish(1, "job-000001/trainer-1", "t1");
    versions_->on_node_dead("t0", "missed 3 heartbeats");
    auto v0 = versions_->get(JobId(1), 0);
    EXPECT_EQ(v0.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(v0.status().message(), HasSubstr("node t0 was lost: missed 3 heartbeats"));
    EXPECT_TRUE(versions_->get(JobId(1), 1).ok());
}

TEST_F(VersionStatesTest, RetiredStaysRetiredWhenItsPublisherDiesLater) {
    publish(0);
    ASSERT_TRUE(versions_->retire(JobId(1), 0, 0, "job-000001/trainer-0").ok());
    versions_->on_node_dead("t0");
    EXPECT_EQ(versions_->list(JobId(1)).at(0).state, VersionState::kRetired);
}

TEST_F(VersionStatesTest, FourReadersWithFanOutTwoFormATwoLevelTree) {
    publish(3);
    for (int i = 0; i < 4; ++i) {
        const std::string r = "job-000001/rollout-" + std::to_string(i);
        auto link = versions_->join_relay(JobId(1), 3, r, relay_source(r), 2);
        ASSERT_TRUE(link.ok()) << link.status().to_string();
        EXPECT_EQ(link->depth, i < 2 ? 1u : 2u);
    }
    // Two read the publisher, two read the first reader.
    EXPECT_THAT(parents(3), ElementsAre("", "", "job-000001/rollout-0", "job-000001/rollout-0"));
    auto a = versions_->relay_assignment(JobId(1), 3, "job-000001/rollout-3");
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ(a->link.parent, "job-000001/rollout-0");
    EXPECT_EQ(a->source, relay_source("job-000001/rollout-0"));
    auto direct = versions_->relay_assignment(JobId(1), 3, "job-000001/rollout-1");
    ASSERT_TRUE(direct.ok());
    EXPECT_TRUE(direct->source.is_null());
    EXPECT_EQ(versions_->relay_assignment(JobId(1), 3, "job-000001/rollout-9").status().code(),
              StatusCode::kNotFound);
}

TEST_F(VersionStatesTest, AsManyReadersAsTheFanOutAllReadThePublisher) {
    publish(0);
    for (int i = 0; i < 4; ++i) {
        const std::string r = "r" + std::to_string(i);
        ASSERT_TRUE(versions_->join_relay(JobId(1), 0, r, relay_source(r), 4).ok());
    }
    EXPECT_THAT(parents(0), ElementsAre("", "", "", ""));
}

TEST_F(VersionStatesTest, TreeFillsBreadthFirstAndSkipsReadersThatDoNotRelay) {
    publish(0);
    // r1 does not relay: it is never anyone's parent.
    for (int i = 0; i < 8; ++i) {
        const std::string r = "r" + std::to_string(i);
        ASSERT_TRUE(
            versions_->join_relay(JobId(1), 0, r, i == 1 ? Json(nullptr) : relay_source(r), 2)
                .ok());
    }
    EXPECT_THAT(parents(0), ElementsAre("", "", "r0", "r0", "r2", "r2", "r3", "r3"));
    EXPECT_EQ(versions_->get(JobId(1), 0)->relays.back().depth, 3u);
}

TEST_F(VersionStatesTest, JoiningTwiceKeepsTheFirstPlace) {
    publish(0);
    for (const std::string r : {"a", "b", "c", "a"}) {
        ASSERT_TRUE(versions_->join_relay(JobId(1), 0, r, relay_source(r), 1).ok());
    }
    EXPECT_THAT(parents(0), ElementsAre("", "a", "b"));
}

TEST_F(VersionStatesTest, JoiningAnUnavailableVersionFailsWithTheReason) {
    publish(0);
    versions_->on_node_dead("t0", "missed 3 heartbeats");
    const Status refused = versions_->join_relay(JobId(1), 0, "r0", relay_source("r0"), 2).status();
    EXPECT_EQ(refused.code(), StatusCode::kUnavailable);
    EXPECT_THAT(refused.message(), HasSubstr("node t0 was lost"));
    EXPECT_EQ(versions_->join_relay(JobId(1), 4, "r0", relay_source("r0"), 2).status().code(),
              StatusCode::kNotFound);
}

TEST_F(VersionStatesTest, StatesReasonsPublishersAndRelaysSurviveARestart) {
    publish(0);
    publish(1);
    publish(2);
    ASSERT_TRUE(versions_->retire(JobId(1), 0, 0, "job-000001/trainer-0").ok());
    for (const std::string r : {"a", "b", "c"})
        ASSERT_TRUE(versions_->join_relay(JobId(1), 2, r, relay_source(r), 2).ok());
    restart();
    const auto list = versions_->list(JobId(1));
    ASSERT_EQ(list.size(), 3u);
    EXPECT_EQ(list[0].state, VersionState::kRetired);
    EXPECT_THAT(list[0].reason, HasSubstr("released the slot"));
    EXPECT_EQ(list[1].state, VersionState::kAvailable);
    EXPECT_FALSE(list[2].descriptor.contains("version_table"));  // the table's own fields
    EXPECT_EQ(list[2].publishers.at(0).actor, "job-000001/trainer-0");
    EXPECT_THAT(parents(2), ElementsAre("", "", "a"));
    // The restored index still finds the publisher's available versions.
    versions_->check_publishers([](JobId, const VersionPublisher& p) {
        return p.actor == "job-000001/trainer-0" ? std::optional<std::string>("gone")
                                                 : std::nullopt;
    });
    EXPECT_EQ(versions_->get(JobId(1), 2).status().code(), StatusCode::kUnavailable);
    EXPECT_EQ(versions_->list(JobId(1))[0].state, VersionState::kRetired);
}

// Version numbers are the table's: rising per job, the same for the same fence and step, and a
// trainer whose fence was superseded is refused, both when it asks and when it announces.
Json descriptor_with_fence(const std::string& publisher, wire::Fence fence, int64_t step) {
    Json d = descriptor(publisher);
    d["info"] = {{"version", 0}, {"fence", fence.to_json()}, {"step", step}, {"data_cursor", 0}};
    return d;
}

TEST_F(VersionStatesTest, AssignsRisingNumbersAndTheSameNumberForTheSameStep) {
    const wire::Fence f{1, 1};
    EXPECT_EQ(*versions_->assign(JobId(1), f, 0, -1), 0u);
    EXPECT_EQ(*versions_->assign(JobId(1), f, 1, -1), 1u);
    EXPECT_EQ(*versions_->assign(JobId(1), f, 1, -1), 1u);  // asked again (a lost answer)
    EXPECT_EQ(*versions_->assign(JobId(1), f, 2, -1), 2u);
    EXPECT_EQ(*versions_->assign(JobId(2), f, 0, -1), 0u);  // per job
    // `after`: numbers a coordinator that died before recording them had handed out.
    EXPECT_EQ(*versions_->assign(JobId(1), f, 3, 10), 11u);
    EXPECT_EQ(versions_->fence(JobId(1)), f);
}

TEST_F(VersionStatesTest, NewerTrainerEpochFencesOffTheOlderTrainer) {
    ASSERT_TRUE(versions_->assign(JobId(1), {1, 1}, 0, -1).ok());
    ASSERT_TRUE(versions_->assign(JobId(1), {1, 1}, 1, -1).ok());
    // The trainer restarted (attempt 2) and resumed at step 0: a new number, not 0 again.
    auto v = versions_->assign(JobId(1), {1, 2}, 0, -1);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, 2u);
    auto old = versions_->assign(JobId(1), {1, 1}, 2, -1);
    ASSERT_FALSE(old.ok());
    EXPECT_EQ(old.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(old.status().message(), HasSubstr("fence 1.1 was fenced off"));
    EXPECT_THAT(old.status().message(), HasSubstr("fence 1.2"));
    // A fence raised by the coordinator (the new attempt was started) refuses before it asks.
    versions_->advance_fence(JobId(1), {1, 3});
    EXPECT_FALSE(versions_->assign(JobId(1), {1, 2}, 1, -1).ok());
    versions_->advance_fence(JobId(1), {1, 1});  // never lowered
    EXPECT_EQ(versions_->fence(JobId(1)), (wire::Fence{1, 3}));
}

TEST_F(VersionStatesTest, VersionAnnouncedByAFencedOffTrainerIsRefused) {
    const std::string t = "job-000001/trainer-0";
    ASSERT_TRUE(versions_->publish(JobId(1), 0, descriptor_with_fence(t, {1, 1}, 0), "t0").ok());
    versions_->advance_fence(JobId(1), {1, 2});
    const Status s = versions_->publish(JobId(1), 1, descriptor_with_fence(t, {1, 1}, 1), "t0");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnavailable);
    EXPECT_THAT(s.message(), HasSubstr("fence 1.1"));
    EXPECT_FALSE(versions_->get(JobId(1), 1).ok());  // not recorded
    EXPECT_TRUE(versions_->publish(JobId(1), 2, descriptor_with_fence(t, {1, 2}, 0), "t0").ok());
    EXPECT_EQ(versions_->latest(JobId(1))->version, 2u);
}

TEST_F(VersionStatesTest, NumbersAndFenceSurviveACoordinatorRestart) {
    const std::string t = "job-000001/trainer-0";
    for (int64_t step = 0; step < 3; ++step) {
        auto v = versions_->assign(JobId(1), {1, 2}, step, -1);
        ASSERT_TRUE(v.ok());
        ASSERT_TRUE(
            versions_->publish(JobId(1), *v, descriptor_with_fence(t, {1, 2}, step), "t0").ok());
    }
    restart();
    EXPECT_EQ(versions_->fence(JobId(1)), (wire::Fence{1, 2}));
    EXPECT_EQ(*versions_->assign(JobId(1), {1, 2}, 3, -1), 3u);
    EXPECT_FALSE(versions_->assign(JobId(1), {1, 1}, 3, -1).ok());
}

// ---- through the agent messages and the HTTP API ----

class VersionMessagesTest : public VersionStatesTest {
protected:
    VersionMessagesTest() {
        static std::atomic<int> n{0};
        auto server = AgentServer::bind(
            io_, zmq_, fmt::format("inproc://version-table-test-{}-{}", ::getpid(), n++));
        EXPECT_TRUE(server.ok()) << server.status().to_string();
        server_ = std::move(*server);
        dispatcher_ =
            std::make_unique<AgentDispatcher>(clock_, *server_, *registry_, *jobs_, *versions_,
                                              *metrics_, DispatcherSettings{1000, store_->epoch()});
        auth_.add("actor-token", Role::kActor, "actors");
        api_ = std::make_unique<HttpApi>(clock_, *jobs_, *registry_, *versions_, *store_, *metrics_,
                                         auth_, ApiSettings{"test-cluster", store_->epoch()});
        for (const auto& [id, role] : {std::pair{"t0", "trainer"}, {"r0", "rollout"}}) {
            dispatcher_->handle("route-" + std::string(id),
                                wire::encode(wire::make_envelope(register_msg(id, role), 1)));
        }
        JobYaml y;
        y.name = "grpo";
        y.kind = "grpo";
        y.max_actor_restarts = 1;
        job_ = submit(y);
        for (const auto& a : job(job_).actors) {
            wire::ActorState m{a.name(), a.attempt, wire::ActorPhase::kRunning, 0, "", nullptr};
            send(a.node, m);
        }
    }
    ~VersionMessagesTest() override {
        api_.reset();
        dispatcher_.reset();
        server_.reset();
    }
    template <typename M>
    void send(const std::string& node, const M& m) {
        dispatcher_->handle("route-" + node, wire::encode(wire::make_envelope(m, ++seq_)));
    }
    std::string trainer() const { return job_.str() + "/trainer-0"; }
    HttpResponse get(const std::string& path, std::map<std::string, std::string> query = {}) {
        HttpRequest r;
        r.method = "GET";
        r.path = path;
        r.query = std::move(query);
        r.authorization = "Bearer actor-token";  // what the job's actors read versions with
        return api_->handle(r);
    }

    boost::asio::io_context io_;
    zmq::context_t zmq_;
    std::unique_ptr<AgentServer> server_;
    std::unique_ptr<AgentDispatcher> dispatcher_;
    Auth auth_;
    std::unique_ptr<HttpApi> api_;
    JobId job_;
    uint64_t seq_ = 10;
};

TEST_F(VersionMessagesTest, TrainerExitMakesItsVersionsUnavailableAndReadersAreToldWhy) {
    ASSERT_EQ(actor(job_, "trainer-0").node, "t0");
    send("t0", wire::VersionPublished{job_.str(), 4, descriptor(trainer())});
    const std::string path = "/api/v1/jobs/" + job_.str() + "/versions/4";
    ASSERT_EQ(get(path).status, 200) << get(path).body;
    EXPECT_EQ(versions_->get(job_, 4)->publishers.at(0).attempt, actor(job_, "trainer-0").attempt);

    wire::ActorState died{
        trainer(), actor(job_, "trainer-0").attempt, wire::ActorPhase::kFailed, 137, "killed",
        nullptr};
    send("t0", died);
    const HttpResponse r = get(path);
    EXPECT_EQ(r.status, 410) << r.body;
    EXPECT_THAT(r.body, HasSubstr("version 4 of " + job_.str() + " is unavailable"));
    EXPECT_THAT(r.body, HasSubstr(trainer() + " failed (exit code 137)"));
    EXPECT_EQ(get("/api/v1/jobs/" + job_.str() + "/versions/latest").status, 404);
    const Json list = Json::parse(get("/api/v1/jobs/" + job_.str() + "/versions").body);
    EXPECT_EQ(list["versions"][0]["state"], "unavailable");
    EXPECT_EQ(list["versions"][0]["available"], false);
}

TEST_F(VersionMessagesTest, RestartedPublisherKeepsOnlyItsNewAttemptsVersions) {
    send("t0", wire::VersionPublished{job_.str(), 1, descriptor(trainer())});
    const int64_t before = actor(job_, "trainer-0").attempt;
    send("t0", wire::ActorState{trainer(), before, wire::ActorPhase::kFailed, 1, "oops", nullptr});
    // max_actor_restarts: 1, so the JobManager restarts it in place under a new attempt.
    ASSERT_EQ(actor(job_, "trainer-0").attempt, before + 1);
    send("t0", wire::ActorState{trainer(), before + 1, wire::ActorPhase::kRunning, 0, "", nullptr});
    send("t0", wire::VersionPublished{job_.str(), 2, descriptor(trainer())});
    dispatcher_->sweep();
    auto old = versions_->get(job_, 1);
    EXPECT_EQ(old.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(old.status().message(), HasSubstr("failed (exit code 1): oops"));
    EXPECT_TRUE(versions_->get(job_, 2).ok());
    EXPECT_EQ(versions_->latest(job_)->version, 2u);
}

TEST_F(VersionMessagesTest, CancelledJobsVersionsBecomeUnavailableAtTheNextSweep) {
    send("t0", wire::VersionPublished{job_.str(), 3, descriptor(trainer())});
    ASSERT_TRUE(jobs_->cancel(job_, "cancelled by the user").ok());
    dispatcher_->sweep();
    auto v = versions_->get(job_, 3);
    EXPECT_EQ(v.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(v.status().message(), HasSubstr(job_.str()));
}

TEST_F(VersionMessagesTest, RetireMessageRetiresTheVersion) {
    send("t0", wire::VersionPublished{job_.str(), 2, descriptor(trainer())});
    send("t0", wire::VersionRetired{job_.str(), 2, 0, trainer()});
    const HttpResponse r = get("/api/v1/jobs/" + job_.str() + "/versions/2");
    EXPECT_EQ(r.status, 410) << r.body;
    EXPECT_THAT(r.body, HasSubstr("is retired: " + trainer() + " released the slot of shard 0"));
}

TEST_F(VersionMessagesTest, RelayJoinsUseTheJobsFanOutAndReadersFindTheirSource) {
    // The job spec's rollout.relay_fanout (default 2).
    ASSERT_EQ(job(job_).spec.rollout.relay_fanout, 2);
    send("t0", wire::VersionPublished{job_.str(), 5, descriptor(trainer())});
    for (int i = 0; i < 4; ++i) {
        const std::string r = job_.str() + "/rollout-" + std::to_string(i);
        send("r0", wire::RelayJoin{job_.str(), 5, r, relay_source(r)});
    }
    const std::string path = "/api/v1/jobs/" + job_.str() + "/versions/5/source";
    const HttpResponse r3 = get(path, {{"reader", job_.str() + "/rollout-3"}});
    ASSERT_EQ(r3.status, 200) << r3.body;
    const Json j3 = Json::parse(r3.body);
    EXPECT_EQ(j3["parent"], job_.str() + "/rollout-0");
    EXPECT_EQ(j3["depth"], 2);
    EXPECT_EQ(j3["source"], relay_source(job_.str() + "/rollout-0"));
    const Json j1 = Json::parse(get(path, {{"reader", job_.str() + "/rollout-1"}}).body);
    EXPECT_TRUE(j1["parent"].is_null());
    EXPECT_TRUE(j1["source"].is_null());
    EXPECT_EQ(get(path).status, 400);
    EXPECT_EQ(get(path, {{"reader", "nobody"}}).status, 404);
    // The tree is in the versions listing (who relays to whom).
    const Json list = Json::parse(get("/api/v1/jobs/" + job_.str() + "/versions").body);
    ASSERT_EQ(list["versions"][0]["relays"].size(), 4u);
    EXPECT_EQ(list["versions"][0]["relays"][2]["parent"], job_.str() + "/rollout-0");
}

TEST_F(VersionMessagesTest, MalformedVersionPathsAreNotFound) {
    EXPECT_EQ(get("/api/v1/jobs/" + job_.str() + "/versions/x").status, 404);
    EXPECT_EQ(get("/api/v1/jobs/" + job_.str() + "/versions/-1").status, 404);
    EXPECT_EQ(get("/api/v1/jobs/" + job_.str() + "/versions/1/other").status, 404);
    const HttpResponse r = get("/api/v1/jobs/" + job_.str() + "/versions/12");
    EXPECT_EQ(r.status, 404);
    EXPECT_THAT(r.body, HasSubstr("version 12 of " + job_.str() + " was never published"));
}

}  // namespace
}  // namespace tandem::coord::testing
