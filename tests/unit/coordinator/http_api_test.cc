// HttpApi::handle without sockets: JSON shapes of the GET endpoints, tokens and roles (401/403,
// submitters cancel only their own jobs, descriptors only for actor and admin), submit (201), dry
// run (200 with a plan or a pending reason), 400/404/405/415, deep JSON, and /metrics.
#include "coordinator/http_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <sstream>
#include <string>

#include <boost/asio/io_context.hpp>
#include <zmq.hpp>

#include "common/version.h"
#include "common/wire/zmq_io.h"
#include "coordinator/agent_dispatcher.h"
#include "coordinator/agent_server.h"
#include "coordinator/json_depth.h"
#include "coordinator/version_table.h"
#include "tests/unit/coordinator/coordinator_fixture.h"

namespace tandem::coord::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kToken = "s3cret-token";

class HttpApiTest : public CoordinatorTest {
protected:
    HttpApiTest() {
        versions_ = std::make_unique<VersionTable>(clock_, *store_);
        auth_.add(kToken, Role::kAdmin, "admin");
        api_ = std::make_unique<HttpApi>(clock_, *jobs_, *registry_, *versions_, *store_, *metrics_,
                                         auth_, ApiSettings{"test-cluster", store_->epoch()});
    }

    HttpResponse get(const std::string& path, std::map<std::string, std::string> query = {},
                     const std::string& auth = std::string("Bearer ") + kToken) {
        HttpRequest r;
        r.method = "GET";
        r.path = path;
        r.query = std::move(query);
        r.authorization = auth;
        r.remote = "127.0.0.1:5555";
        return api_->handle(r);
    }
    HttpResponse post(const std::string& path, const std::string& body,
                      const std::string& auth = std::string("Bearer ") + kToken) {
        HttpRequest r;
        r.method = "POST";
        r.path = path;
        r.body = body;
        r.authorization = auth;
        r.remote = "127.0.0.1:5555";
        return api_->handle(r);
    }
    static Json body_of(const HttpResponse& r) {
        Json j = Json::parse(r.body, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << r.body;
        return j;
    }
    static std::string submit_body(const JobYaml& y, bool dry_run = false) {
        return Json{{"spec_yaml", y.str()}, {"dry_run", dry_run}}.dump();
    }
    // Submits through the API; returns the job name.
    std::string submit_ok(const JobYaml& y) {
        const HttpResponse r = post("/api/v1/jobs", submit_body(y));
        EXPECT_EQ(r.status, 201) << r.body;
        return body_of(r).value("job", "");
    }

    std::unique_ptr<VersionTable> versions_;
    Auth auth_;
    std::unique_ptr<HttpApi> api_;
};

// ---- read endpoints ----

TEST_F(HttpApiTest, HealthzIsOk) {
    const auto r = get("/healthz");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "ok\n");
}

TEST_F(HttpApiTest, ClusterSummaryCountsNodesAndJobs) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    clock_.advance(std::chrono::seconds(3));
    const auto r = get("/api/v1/cluster");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "application/json");
    const Json j = body_of(r);
    EXPECT_EQ(j["name"], "test-cluster");
    EXPECT_TRUE(j["version"].is_string());
    EXPECT_EQ(j["epoch"], store_->epoch());
    EXPECT_DOUBLE_EQ(j["uptime_s"].get<double>(), 3.0);
    EXPECT_EQ(j["nodes"], Json({{"alive", 2}, {"dead", 0}}));
    EXPECT_EQ(j["jobs"], Json({{"RUNNING", 1}}));
}

TEST_F(HttpApiTest, NodesListResourcesFreeCapacityAndState) {
    add_node("t0", "trainer", {4, 8192, 1});
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    const auto r = get("/api/v1/nodes");
    ASSERT_EQ(r.status, 200);
    const Json nodes = body_of(r)["nodes"];
    ASSERT_EQ(nodes.size(), 2u);
    const Json& r0 = nodes[0];  // ordered by id
    EXPECT_EQ(r0["id"], "r0");
    EXPECT_EQ(r0["role"], "rollout");
    EXPECT_EQ(r0["host"], "r0.local");
    EXPECT_EQ(r0["state"], "alive");
    EXPECT_EQ(r0["connected"], true);
    EXPECT_EQ(r0["resources"], Json({{"cpus", 4.0}, {"memory_mb", 8192}, {"gpus", 0}}));
    EXPECT_EQ(r0["free"], Json({{"cpus", 2.0}, {"memory_mb", 8192 - 1024}, {"gpus", 0}}));
    EXPECT_EQ(r0["actors"], 2);
    EXPECT_EQ(r0["agent_version"], kVersion);
    EXPECT_EQ(r0["dead_reason"], "");
    EXPECT_EQ(nodes[1]["id"], "t0");
    EXPECT_EQ(nodes[1]["resources"]["gpus"], 1);
    for (const char* key : {"labels", "last_seen_s_ago"}) EXPECT_TRUE(r0.contains(key)) << key;
}

// A rolling upgrade: an agent of another release on the same protocol major joins, and the API
// lists it as left to upgrade; one of the coordinator's release does not show up.
TEST_F(HttpApiTest, AnAgentOfAnotherReleaseJoinsAndIsListedAsSkewed) {
    auto old = register_msg("r0", "rollout");
    old.agent_version = std::string(kVersion) + "-older";
    ASSERT_TRUE(registry_->on_register(old, "route-r0").ok());
    auto same = register_msg("t0", "trainer");
    same.agent_version = kVersion;
    ASSERT_TRUE(registry_->on_register(same, "route-t0").ok());
    const auto r = get("/api/v1/nodes");
    ASSERT_EQ(r.status, 200);
    const Json j = body_of(r);
    EXPECT_EQ(j["coordinator_version"], kVersion);
    ASSERT_EQ(j["nodes"].size(), 2u);
    EXPECT_EQ(j["nodes"][0]["id"], "r0");
    EXPECT_EQ(j["nodes"][0]["agent_version"], old.agent_version);
    EXPECT_EQ(j["nodes"][0]["version_skew"], true);
    EXPECT_EQ(j["nodes"][1]["version_skew"], false);
}

TEST_F(HttpApiTest, JobsListAndJobDetail) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    const std::string name = submit_ok(JobYaml{});
    ASSERT_EQ(name, "job-000001");

    const Json list = body_of(get("/api/v1/jobs"))["jobs"];
    ASSERT_EQ(list.size(), 1u);
    const Json& s = list[0];
    EXPECT_EQ(s["job"], "job-000001");
    EXPECT_EQ(s["name"], "diag");
    EXPECT_EQ(s["kind"], "diagnostic");
    EXPECT_EQ(s["state"], "RUNNING");
    for (const char* key :
         {"reason", "priority", "submitted_ns", "started_ns", "finished_ns", "restarts_used",
          "max_actor_restarts", "step", "versions", "progress"}) {
        EXPECT_TRUE(s.contains(key)) << key;
    }
    EXPECT_FALSE(s.contains("actors"));  // only in the detail

    for (const char* ref : {"job-000001", "1", "diag"}) {
        SCOPED_TRACE(ref);
        const auto r = get(std::string("/api/v1/jobs/") + ref);
        ASSERT_EQ(r.status, 200);
        const Json d = body_of(r);
        EXPECT_EQ(d["job"], "job-000001");
        EXPECT_THAT(d["spec_yaml"].get<std::string>(), HasSubstr("name: diag"));
        ASSERT_EQ(d["actors"].size(), 3u);
        EXPECT_EQ(d["actors"][0]["actor"], "job-000001/trainer-0");
        EXPECT_EQ(d["actors"][0]["node"], "t0");
        EXPECT_EQ(d["actors"][0]["attempt"], 1);
        EXPECT_EQ(d["actors"][0]["phase"], "starting");
        EXPECT_EQ(d["actors"][0]["endpoints"], Json::object());
        EXPECT_TRUE(d.contains("metrics"));
    }
}

TEST_F(HttpApiTest, JobProgressIsTheSlowestActorsFraction) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    EXPECT_TRUE(body_of(get("/api/v1/jobs/1"))["progress"].is_null());
    for (auto [a, f] : {std::pair{"trainer-0", 0.75}, std::pair{"rollout-0", 0.25}}) {
        wire::ActorState m;
        m.actor = std::string("job-000001/") + a;
        m.attempt = 1;
        m.phase = wire::ActorPhase::kRunning;
        m.progress = {{"fraction", f}};
        jobs_->on_actor_state(a[0] == 't' ? "t0" : "r0", m);
    }
    EXPECT_EQ(body_of(get("/api/v1/jobs/1"))["progress"], 0.25);
}

TEST_F(HttpApiTest, MalformedProgressFromAnAgentDoesNotBreakTheJobEndpoints) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    wire::ActorState m;
    m.actor = "job-000001/rollout-0";
    m.attempt = 1;
    m.phase = wire::ActorPhase::kRunning;
    m.progress = {{"fraction", "most of it"}};
    jobs_->on_actor_state("r0", m);
    EXPECT_EQ(get("/api/v1/jobs").status, 200);
    EXPECT_EQ(get("/api/v1/jobs/1").status, 200);
}

TEST_F(HttpApiTest, EventsLogsMetricsAndVersionsOfAJob) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    jobs_->on_log_lines("r0", {"job-000001",
                               {{"job-000001/rollout-0", 1, "info", "a"},
                                {"job-000001/rollout-0", 2, "info", "b"},
                                {"job-000001/rollout-0", 3, "info", "c"}}});
    jobs_->on_metrics({"job-000001", 1, {{"loss", 1.0}}});
    ASSERT_TRUE(versions_->publish(JobId(1), 0, {{"fingerprint", "f"}}, "t0").ok());

    const Json ev = body_of(get("/api/v1/jobs/job-000001/events"));
    EXPECT_EQ(ev["job"], "job-000001");
    ASSERT_EQ(ev["events"].size(), 3u);
    EXPECT_EQ(ev["events"][0]["kind"], "submitted");
    EXPECT_EQ(ev["events"][1]["kind"], "placed");
    EXPECT_EQ(ev["events"][2]["kind"], "owner");  // the submitting token's name
    EXPECT_EQ(ev["events"][2]["message"], "admin");
    for (const char* key : {"seq", "ts_ns", "kind", "message"}) {
        EXPECT_TRUE(ev["events"][0].contains(key)) << key;
    }

    const Json logs = body_of(get("/api/v1/jobs/1/logs", {{"after", "1"}, {"limit", "1"}}));
    ASSERT_EQ(logs["logs"].size(), 1u);
    EXPECT_EQ(logs["logs"][0]["seq"], 2);
    EXPECT_EQ(logs["logs"][0]["msg"], "b");
    EXPECT_EQ(logs["logs"][0]["actor"], "job-000001/rollout-0");
    // A query value that is not a number falls back to the default.
    EXPECT_EQ(body_of(get("/api/v1/jobs/1/logs", {{"after", "x"}}))["logs"].size(), 3u);

    const Json metrics = body_of(get("/api/v1/jobs/1/metrics"));
    ASSERT_EQ(metrics["metrics"].size(), 1u);
    EXPECT_EQ(metrics["metrics"][0], Json({{"step", 1}, {"values", {{"loss", 1.0}}}}));

    const Json versions = body_of(get("/api/v1/jobs/1/versions"));
    ASSERT_EQ(versions["versions"].size(), 1u);
    EXPECT_EQ(versions["versions"][0]["version"], 0);
    EXPECT_EQ(versions["versions"][0]["available"], true);
    EXPECT_EQ(versions["versions"][0]["descriptor"]["fingerprint"], "f");
    EXPECT_EQ(body_of(get("/api/v1/jobs/1"))["latest_version"], 0);
}

TEST_F(HttpApiTest, LatestVersionSaysWhetherNoneWasPublishedOrAllWereRetired) {
    submit_ok(JobYaml{});
    const auto none = get("/api/v1/jobs/1/versions/latest");
    EXPECT_EQ(none.status, 404);
    EXPECT_THAT(none.body, HasSubstr("job-000001 has no published version yet"));

    ASSERT_TRUE(versions_->publish(JobId(1), 0, {{"fingerprint", "f"}}, "t0").ok());
    ASSERT_TRUE(versions_->retire(JobId(1), 0, 0, "t0").ok());
    const auto retired = get("/api/v1/jobs/1/versions/latest");
    EXPECT_EQ(retired.status, 404);
    EXPECT_THAT(retired.body, HasSubstr("job-000001 has no available version: the newest, v0, is"));
    EXPECT_THAT(retired.body, Not(HasSubstr("yet")));
}

TEST_F(HttpApiTest, UnknownJobIsNotFound) {
    for (const char* path :
         {"/api/v1/jobs/job-000042", "/api/v1/jobs/nope/events", "/api/v1/jobs/7/logs"}) {
        SCOPED_TRACE(path);
        const auto r = get(path);
        EXPECT_EQ(r.status, 404);
        EXPECT_THAT(body_of(r)["error"].get<std::string>(), HasSubstr("no job"));
    }
    EXPECT_EQ(post("/api/v1/jobs/job-000042/cancel", "").status, 404);
}

TEST_F(HttpApiTest, UnknownEndpointIsNotFound) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    EXPECT_EQ(get("/api/v2/jobs").status, 404);
    EXPECT_EQ(get("/").status, 404);
    const auto r = get("/api/v1/jobs/1/secrets");
    EXPECT_EQ(r.status, 404);
    EXPECT_THAT(body_of(r)["error"].get<std::string>(), HasSubstr("no such endpoint"));
}

TEST_F(HttpApiTest, PathThatIsNotUtf8IsNotFoundNotAServerError) {
    // The error message quotes the path; any bytes may arrive there.
    for (const char* path : {"/api/v1/jobs/\xff\xfe", "/api/\xc3"}) {
        HttpResponse r;
        ASSERT_NO_THROW(r = get(path));
        EXPECT_EQ(r.status, 404);
        EXPECT_TRUE(body_of(r).contains("error"));
    }
}

TEST_F(HttpApiTest, WrongMethodIsRefused) {
    HttpRequest r;
    r.method = "DELETE";
    r.path = "/api/v1/jobs";
    r.authorization = std::string("Bearer ") + kToken;
    EXPECT_EQ(api_->handle(r).status, 405);
}

// ---- the API token ----

TEST_F(HttpApiTest, PostWithoutTokenIsUnauthorizedAndSubmitsNothing) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    const auto r = post("/api/v1/jobs", submit_body(JobYaml{}), "");
    EXPECT_EQ(r.status, 401);
    EXPECT_THAT(body_of(r)["error"].get<std::string>(), HasSubstr("missing API token"));
    EXPECT_TRUE(jobs_->jobs().empty());
}

TEST_F(HttpApiTest, PostWithWrongTokenIsUnauthorized) {
    for (const std::string& auth :
         {std::string("Bearer wrong"), std::string(kToken), std::string("Basic ") + kToken,
          std::string("Bearer ") + kToken + "x", std::string("bearer ") + kToken}) {
        SCOPED_TRACE(auth);
        EXPECT_EQ(post("/api/v1/jobs", submit_body(JobYaml{}), auth).status, 401);
    }
    EXPECT_TRUE(jobs_->jobs().empty());
    EXPECT_EQ(metrics_->counter_value("tandem_http_requests_total", {{"code", "4xx"}}), 5);
}

TEST_F(HttpApiTest, CancelNeedsTheTokenToo) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    submit_ok(JobYaml{});
    EXPECT_EQ(post("/api/v1/jobs/1/cancel", "", "Bearer nope").status, 401);
    EXPECT_EQ(job(JobId(1)).state, JobState::kRunning);

    const auto r = post("/api/v1/jobs/1/cancel", "");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(body_of(r)["state"], "CANCELLED");
    EXPECT_EQ(job(JobId(1)).state, JobState::kCancelled);
    // Twice: the job is already final.
    EXPECT_EQ(post("/api/v1/jobs/1/cancel", "").status, 400);
}

TEST_F(HttpApiTest, EveryEndpointButHealthzNeedsAToken) {
    for (const char* p : {"/api/v1/jobs", "/api/v1/nodes", "/api/v1/cluster", "/metrics",
                          "/api/v1/jobs/1", "/no/such/endpoint"}) {
        SCOPED_TRACE(p);
        EXPECT_EQ(get(p, {}, "").status, 401);
        EXPECT_EQ(get(p, {}, "Bearer wrong").status, 401);
    }
    EXPECT_EQ(get("/healthz", {}, "").status, 200);
    EXPECT_EQ(get("/api/v1/jobs").status, 200);
    EXPECT_EQ(get("/metrics").status, 200);
}

// ---- roles ----

class HttpApiRolesTest : public HttpApiTest {
protected:
    HttpApiRolesTest() {
        for (Role r : {Role::kScrape, Role::kViewer, Role::kActor}) {
            auth_.add(std::string(role_name(r)) + "-token", r, std::string(role_name(r)));
        }
        auth_.add("alice-token", Role::kSubmitter, "alice");
        auth_.add("bob-token", Role::kSubmitter, "bob");
        add_node("t0", "trainer");
        add_node("r0", "rollout");
    }
    static std::string bearer(const std::string& t) { return "Bearer " + t; }
};

TEST_F(HttpApiRolesTest, ScrapeTokenOpensOnlyMetrics) {
    EXPECT_EQ(get("/metrics", {}, bearer("scrape-token")).status, 200);
    const auto r = get("/api/v1/jobs", {}, bearer("scrape-token"));
    EXPECT_EQ(r.status, 403);
    EXPECT_THAT(body_of(r)["error"].get<std::string>(), HasSubstr("has role scrape"));
    EXPECT_EQ(post("/api/v1/jobs", submit_body(JobYaml{}), bearer("scrape-token")).status, 403);
}

TEST_F(HttpApiRolesTest, ViewerReadsButCannotSubmitOrCancel) {
    const std::string job = submit_ok(JobYaml{});
    for (const std::string& p :
         std::vector<std::string>{"/api/v1/jobs", "/api/v1/nodes", "/api/v1/cluster", "/metrics",
                                  "/api/v1/jobs/" + job, "/api/v1/jobs/" + job + "/events"}) {
        EXPECT_EQ(get(p, {}, bearer("viewer-token")).status, 200) << p;
    }
    EXPECT_EQ(post("/api/v1/jobs", submit_body(JobYaml{}), bearer("viewer-token")).status, 403);
    EXPECT_EQ(post("/api/v1/jobs/" + job + "/cancel", "", bearer("viewer-token")).status, 403);
    EXPECT_EQ(post("/api/v1/tokens", R"({"role":"admin"})", bearer("viewer-token")).status, 403);
    EXPECT_EQ(jobs_->jobs().size(), 1u);
}

TEST_F(HttpApiRolesTest, SubmitterCancelsOnlyItsOwnJobsAndAdminCancelsAny) {
    const auto a = post("/api/v1/jobs", submit_body(JobYaml{}), bearer("alice-token"));
    ASSERT_EQ(a.status, 201) << a.body;
    const std::string alices = body_of(a)["job"];
    const auto b = post("/api/v1/jobs", submit_body(JobYaml{}), bearer("bob-token"));
    ASSERT_EQ(b.status, 201) << b.body;
    const std::string bobs = body_of(b)["job"];

    const auto refused = post("/api/v1/jobs/" + bobs + "/cancel", "", bearer("alice-token"));
    EXPECT_EQ(refused.status, 403);
    EXPECT_THAT(body_of(refused)["error"].get<std::string>(),
                HasSubstr("may cancel only the jobs it submitted"));
    EXPECT_NE(job(JobId::parse(bobs).value()).state, JobState::kCancelled);

    EXPECT_EQ(post("/api/v1/jobs/" + alices + "/cancel", "", bearer("alice-token")).status, 200);
    EXPECT_EQ(post("/api/v1/jobs/" + bobs + "/cancel", "").status, 200);  // admin
    EXPECT_EQ(job(JobId::parse(bobs).value()).state, JobState::kCancelled);
}

TEST_F(HttpApiRolesTest, OwnershipSurvivesARestartOfTheApi) {
    const auto a = post("/api/v1/jobs", submit_body(JobYaml{}), bearer("alice-token"));
    ASSERT_EQ(a.status, 201) << a.body;
    // A new HttpApi over the same store knows the owner from the job's events.
    api_ = std::make_unique<HttpApi>(clock_, *jobs_, *registry_, *versions_, *store_, *metrics_,
                                     auth_, ApiSettings{"test-cluster", store_->epoch()});
    const std::string job = body_of(a)["job"];
    EXPECT_EQ(post("/api/v1/jobs/" + job + "/cancel", "", bearer("bob-token")).status, 403);
    EXPECT_EQ(post("/api/v1/jobs/" + job + "/cancel", "", bearer("alice-token")).status, 200);
}

TEST_F(HttpApiRolesTest, DescriptorsOnlyForActorsAndAdmin) {
    submit_ok(JobYaml{});
    // "c2VjcmV0" is the rkey, "aXBjLXNlY3JldA==" a CUDA IPC handle, "ZGV2LXNlY3JldA==" a device
    // slot's rkey: capabilities all.
    const Json descriptor = {{"fingerprint", "f"},
                             {"shards",
                              {{{"rkey", "c2VjcmV0"},
                                {"cuda_ipc_handle", "aXBjLXNlY3JldA=="},
                                {"device_rkey", "ZGV2LXNlY3JldA=="},
                                {"device_remote_address", 1234567}}}}};
    ASSERT_TRUE(versions_->publish(JobId(1), 0, descriptor, "t0").ok());
    for (const std::string p : {"/api/v1/jobs/1/versions/latest", "/api/v1/jobs/1/versions/0",
                                "/api/v1/jobs/1/versions/0/source"}) {
        SCOPED_TRACE(p);
        EXPECT_EQ(get(p, {{"reader", "job-000001/rollout-0"}}, bearer("viewer-token")).status, 403);
        EXPECT_EQ(get(p, {{"reader", "job-000001/rollout-0"}}, bearer("alice-token")).status, 403);
        // (no relay assignment for this reader: 404, but not refused)
        EXPECT_NE(get(p, {{"reader", "job-000001/rollout-0"}}, bearer("actor-token")).status, 403);
    }
    const auto viewed = get("/api/v1/jobs/1/versions", {}, bearer("viewer-token"));
    ASSERT_EQ(viewed.status, 200);
    EXPECT_THAT(viewed.body, Not(HasSubstr("c2VjcmV0")));
    EXPECT_THAT(viewed.body, Not(HasSubstr("aXBjLXNlY3JldA==")));
    EXPECT_THAT(viewed.body, Not(HasSubstr("ZGV2LXNlY3JldA==")));
    EXPECT_THAT(viewed.body, Not(HasSubstr("1234567")));
    EXPECT_EQ(body_of(viewed)["versions"][0]["descriptor"]["fingerprint"], "f");  // the rest stays
    EXPECT_THAT(get("/api/v1/jobs/1/versions", {}, bearer("actor-token")).body,
                HasSubstr("c2VjcmV0"));
    EXPECT_THAT(get("/api/v1/jobs/1/versions", {}, bearer("actor-token")).body,
                HasSubstr("aXBjLXNlY3JldA=="));
}

TEST_F(HttpApiRolesTest, AdminCreatesTokensThatWorkAtOnce) {
    const auto r = post("/api/v1/tokens", R"({"role":"viewer","name":"ci"})");
    ASSERT_EQ(r.status, 201) << r.body;
    const std::string token = body_of(r)["token"];
    EXPECT_GE(token.size(), 32u);
    EXPECT_EQ(get("/api/v1/jobs", {}, bearer(token)).status, 200);
    EXPECT_EQ(post("/api/v1/jobs", submit_body(JobYaml{}), bearer(token)).status, 403);
    for (const std::string body : {R"({"role":"root"})", R"({})", "[", R"({"role":1})"}) {
        EXPECT_EQ(post("/api/v1/tokens", body).status, 400) << body;
    }
}

// ---- hostile bodies ----

TEST_F(HttpApiTest, DeeplyNestedJsonIsRefusedBeforeParsing) {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    const auto r = post("/api/v1/jobs", deep);
    EXPECT_EQ(r.status, 400);
    EXPECT_THAT(body_of(r)["error"].get<std::string>(), HasSubstr("nests deeper than 64"));
    // Brackets inside strings do not count.
    EXPECT_TRUE(json_depth_within(R"({"a": "[[[[[[[[[[[[[[[["})", 2));
    EXPECT_FALSE(json_depth_within("[[[", 2));
}

TEST_F(HttpApiTest, BodyThatSaysItIsNotJsonIsUnsupported) {
    HttpRequest r;
    r.method = "POST";
    r.path = "/api/v1/jobs";
    r.body = "spec_yaml=x";
    r.content_type = "application/x-www-form-urlencoded";
    r.authorization = std::string("Bearer ") + kToken;
    EXPECT_EQ(api_->handle(r).status, 415);
    r.content_type = "application/json; charset=utf-8";
    EXPECT_EQ(api_->handle(r).status, 400);  // JSON by its header, but not JSON
}

// ---- submit ----

TEST_F(HttpApiTest, SubmitWithTokenCreatesTheJob) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    const auto r = post("/api/v1/jobs", submit_body(JobYaml{}));
    ASSERT_EQ(r.status, 201) << r.body;
    const Json j = body_of(r);
    EXPECT_EQ(j["job"], "job-000001");
    EXPECT_EQ(j["state"], "RUNNING");
    EXPECT_EQ(j["pending_reason"], "");
    EXPECT_THAT(j["spec_yaml"].get<std::string>(), HasSubstr("name: diag"));
    EXPECT_EQ(jobs_->jobs().size(), 1u);
    EXPECT_EQ(link_.starts().size(), 3u);
}

TEST_F(HttpApiTest, SubmitThatCannotBePlacedIsCreatedPendingWithItsReason) {
    const auto r = post("/api/v1/jobs", submit_body(JobYaml{}));
    ASSERT_EQ(r.status, 201) << r.body;
    const Json j = body_of(r);
    EXPECT_EQ(j["state"], "PENDING");
    EXPECT_THAT(j["pending_reason"].get<std::string>(),
                HasSubstr("needs 1 trainer actor with 1 cpu, 512 MiB each"));
}

TEST_F(HttpApiTest, DryRunReturnsThePlanAndCreatesNothing) {
    add_node("t0", "trainer");
    add_node("r0", "rollout");
    const auto r = post("/api/v1/jobs", submit_body(JobYaml{}, true));
    ASSERT_EQ(r.status, 200) << r.body;
    const Json j = body_of(r);
    EXPECT_FALSE(j.contains("job"));
    EXPECT_EQ(j["plan"], Json({{"job-000000/trainer-0", "t0"},
                               {"job-000000/rollout-0", "r0"},
                               {"job-000000/rollout-1", "r0"}}));
    EXPECT_EQ(j["pending_reason"], "");
    EXPECT_TRUE(jobs_->jobs().empty());
    EXPECT_TRUE(link_.sent.empty());
}

TEST_F(HttpApiTest, DryRunThatCannotBePlacedReturnsTheReason) {
    add_node("t0", "trainer");
    JobYaml y;
    y.rollout.gpus = 2;
    const auto r = post("/api/v1/jobs", submit_body(y, true));
    ASSERT_EQ(r.status, 200) << r.body;
    const Json j = body_of(r);
    EXPECT_TRUE(j["plan"].is_null());
    EXPECT_EQ(j["pending_reason"],
              "needs 2 rollout actors with 2 gpus, 1 cpu, 512 MiB each; the cluster has no "
              "rollout nodes");
    EXPECT_TRUE(jobs_->jobs().empty());
}

TEST_F(HttpApiTest, DryRunStillNeedsTheToken) {
    EXPECT_EQ(post("/api/v1/jobs", submit_body(JobYaml{}, true), "").status, 401);
}

TEST_F(HttpApiTest, BadSubmitBodyIsBadRequest) {
    for (const std::string& body :
         {std::string(""), std::string("not json"), std::string("[]"), std::string("{}"),
          std::string(R"({"spec_yaml": 5})"), std::string(R"({"spec": "name: x"})")}) {
        SCOPED_TRACE(body);
        const auto r = post("/api/v1/jobs", body);
        EXPECT_EQ(r.status, 400);
        EXPECT_THAT(body_of(r)["error"].get<std::string>(), HasSubstr("spec_yaml"));
    }
    EXPECT_TRUE(jobs_->jobs().empty());
}

TEST_F(HttpApiTest, InvalidJobSpecIsBadRequestNamingTheProblem) {
    const auto r =
        post("/api/v1/jobs", Json{{"spec_yaml", "name: x\nkind: diagnostic\npriority: lots\n"},
                                  {"source", "my-job.yaml"}}
                                 .dump());
    EXPECT_EQ(r.status, 400);
    const std::string error = body_of(r)["error"].get<std::string>();
    EXPECT_THAT(error, HasSubstr("my-job.yaml"));
    EXPECT_THAT(error, HasSubstr("priority"));
}

// ---- /metrics ----

class HttpApiMetricsTest : public HttpApiTest {
protected:
    HttpApiMetricsTest() {
        static std::atomic<int> n{0};
        auto server = AgentServer::bind(
            io_, zmq_, fmt::format("inproc://http-api-test-{}-{}", ::getpid(), n++));
        EXPECT_TRUE(server.ok()) << server.status().to_string();
        server_ = std::move(*server);
        dispatcher_ =
            std::make_unique<AgentDispatcher>(clock_, *server_, *registry_, *jobs_, *versions_,
                                              *metrics_, DispatcherSettings{1000, store_->epoch()});
    }
    ~HttpApiMetricsTest() override {
        dispatcher_.reset();
        server_.reset();
    }

    boost::asio::io_context io_;
    zmq::context_t zmq_;
    std::unique_ptr<AgentServer> server_;
    std::unique_ptr<AgentDispatcher> dispatcher_;
};

TEST_F(HttpApiMetricsTest, MetricsAreInPrometheusTextFormat) {
    // A node registers through the dispatcher, as over the wire; one message is garbage.
    dispatcher_->handle("agent-1",
                        wire::encode(wire::make_envelope(register_msg("r0", "rollout"), 1)));
    dispatcher_->handle("agent-1", {"junk"});
    submit_ok(JobYaml{});

    const auto r = get("/metrics");
    ASSERT_EQ(r.status, 200);
    EXPECT_THAT(r.content_type, HasSubstr("text/plain"));
    const std::string& text = r.body;
    EXPECT_THAT(text, HasSubstr("# TYPE tandem_nodes gauge\n"));
    EXPECT_THAT(text, HasSubstr("tandem_nodes{state=\"alive\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tandem_nodes{state=\"dead\"} 0\n"));
    EXPECT_THAT(text, HasSubstr("# TYPE tandem_jobs gauge\n"));
    EXPECT_THAT(text, HasSubstr("tandem_jobs{state=\"PENDING\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("# TYPE tandem_agent_messages_total counter\n"));
    EXPECT_THAT(text, HasSubstr("tandem_agent_messages_total{type=\"register\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tandem_agent_messages_total{type=\"invalid\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("# TYPE tandem_heartbeat_rtt_seconds histogram\n"));
    EXPECT_THAT(text, HasSubstr("tandem_http_requests_total{code=\"2xx\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tandem_scheduler_decisions_total{outcome=\"pending\"} 1\n"));
    // Every sample line is "name{labels} value" or "name value".
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#') continue;
        EXPECT_TRUE(line.starts_with("tandem_")) << line;
        EXPECT_NE(line.rfind(' '), std::string::npos) << line;
    }
}

// The dispatcher answers a heartbeat only when the agent asks (echo) or when the node has had no
// answer for dead_after_ms, and reconciles actors only when the heartbeat carries its list.
TEST_F(HttpApiMetricsTest, HeartbeatsAreAnsweredWhenAskedOrWhenTheNodeHeardNothingForAWhile) {
    server_->set_handler([this](const std::string& routing, const std::vector<std::string>& f) {
        dispatcher_->handle(routing, f);
    });
    zmq::socket_t agent(zmq_, zmq::socket_type::dealer);
    agent.set(zmq::sockopt::linger, 0);
    agent.connect(server_->endpoint());
    uint64_t seq = 0;
    auto send = [&](wire::Envelope e) {
        e.seq = ++seq;
        ASSERT_TRUE(wire::send_envelope(agent, e).ok());
    };
    // The types the agent received while the loop ran for `ms`.
    auto received = [&](int ms) {
        std::vector<std::string> types;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (std::chrono::steady_clock::now() < deadline) {
            io_.run_for(std::chrono::milliseconds(5));
            while (auto frames = wire::try_recv_frames(agent)) {
                auto e = wire::decode(*frames);
                if (e.ok()) types.push_back(e->type);
            }
        }
        return types;
    };
    auto heartbeat = [&](bool echo, bool with_actors) {
        wire::Heartbeat h;
        h.node_id = "r0";
        h.sent_ns = 42;
        h.actors.push_back({"job-000009/rollout-0", 1, wire::ActorPhase::kRunning, 0, ""});
        auto e = wire::make_envelope(h, 0);
        if (echo) e.body["echo"] = true;
        if (!with_actors) e.body.erase("actors");
        send(e);
    };
    send(wire::make_envelope(register_msg("r0", "rollout"), 0));
    EXPECT_EQ(received(200), std::vector<std::string>{"register_ack"});

    heartbeat(false, false);  // just after the register_ack, nothing new: no answer
    EXPECT_TRUE(received(100).empty());
    heartbeat(true, false);  // asked for
    EXPECT_EQ(received(200), std::vector<std::string>{"heartbeat_ack"});
    clock_.advance(std::chrono::milliseconds(coordinator_spec().dead_after_ms / 2));
    heartbeat(false, false);  // dead_after_ms / 2 without an answer: still none
    EXPECT_TRUE(received(100).empty());
    clock_.advance(std::chrono::milliseconds(coordinator_spec().dead_after_ms / 2));
    heartbeat(false, false);  // dead_after_ms without an answer
    EXPECT_EQ(received(200), std::vector<std::string>{"heartbeat_ack"});
    heartbeat(false, true);  // its list names an actor of no job: stop it
    EXPECT_EQ(received(200), std::vector<std::string>{"stop_actor"});
}

// Releases both ways over the wire: the register_ack names the coordinator's release; a
// registration in another protocol major is answered with an error naming the node, both releases
// and both protocols, and carrying the coordinator's release for an agent that cannot decode it.
TEST_F(HttpApiMetricsTest, RegistrationTellsTheReleaseAndRefusesAnotherProtocolMajorByName) {
    server_->set_handler([this](const std::string& routing, const std::vector<std::string>& f) {
        dispatcher_->handle(routing, f);
    });
    auto next_reply = [&](zmq::socket_t& s) -> std::optional<std::vector<std::string>> {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (std::chrono::steady_clock::now() < deadline) {
            io_.run_for(std::chrono::milliseconds(5));
            if (auto frames = wire::try_recv_frames(s)) return frames;
        }
        return std::nullopt;
    };
    zmq::socket_t agent(zmq_, zmq::socket_type::dealer);
    agent.set(zmq::sockopt::linger, 0);
    agent.connect(server_->endpoint());
    ASSERT_TRUE(
        wire::send_envelope(agent, wire::make_envelope(register_msg("r0", "rollout"), 1)).ok());
    auto frames = next_reply(agent);
    ASSERT_TRUE(frames.has_value()) << "no register_ack";
    auto ack = wire::decode(*frames);
    ASSERT_TRUE(ack.ok()) << ack.status().to_string();
    ASSERT_EQ(ack->type, wire::RegisterAck::kType);
    EXPECT_EQ(wire::body_as<wire::RegisterAck>(*ack)->coordinator_version, kVersion);

    zmq::socket_t future(zmq_, zmq::socket_type::dealer);
    future.set(zmq::sockopt::linger, 0);
    future.connect(server_->endpoint());
    auto reg = register_msg("r1", "rollout");
    reg.agent_version = "99.0.0";
    wire::Envelope e = wire::make_envelope(reg, 7);
    e.major = wire::kProtocolMajor + 1;
    ASSERT_TRUE(wire::send_envelope(future, e).ok());
    frames = next_reply(future);
    ASSERT_TRUE(frames.has_value()) << "no answer to a registration in another protocol major";
    auto refusal = wire::decode(*frames);
    ASSERT_TRUE(refusal.ok()) << refusal.status().to_string();
    ASSERT_EQ(refusal->type, wire::Error::kType);
    const auto err = *wire::body_as<wire::Error>(*refusal);
    EXPECT_EQ(err.in_reply_to, 7u);
    EXPECT_EQ(err.coordinator_version, kVersion);
    EXPECT_THAT(err.message,
                HasSubstr(fmt::format("node r1 will not join: the agent (tandem 99.0.0) speaks "
                                      "control protocol {}.{}, the coordinator (tandem {}) speaks "
                                      "{}.{}",
                                      wire::kProtocolMajor + 1, wire::kProtocolMinor, kVersion,
                                      wire::kProtocolMajor, wire::kProtocolMinor)));
    EXPECT_EQ(registry_->find("r1"), nullptr);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
    Metrics m;
    m.describe_histogram("tandem_x_seconds", "x", {0.1, 0.01, 1});
    for (double v : {0.005, 0.05, 0.05, 0.5, 5.0}) m.observe("tandem_x_seconds", v);
    const std::string text = m.render();
    EXPECT_THAT(text, HasSubstr("tandem_x_seconds_bucket{le=\"0.01\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tandem_x_seconds_bucket{le=\"0.1\"} 3\n"));
    EXPECT_THAT(text, HasSubstr("tandem_x_seconds_bucket{le=\"1\"} 4\n"));
    EXPECT_THAT(text, HasSubstr("tandem_x_seconds_bucket{le=\"+Inf\"} 5\n"));
    EXPECT_THAT(text, HasSubstr("tandem_x_seconds_count 5\n"));
    EXPECT_EQ(m.histogram_count("tandem_x_seconds"), 5u);
}

TEST(Metrics, CountersAddUpPerLabelSetAndEscapeLabelValues) {
    Metrics m;
    m.describe_counter("tandem_c_total", "c");
    m.inc("tandem_c_total", {{"type", "a"}});
    m.inc("tandem_c_total", {{"type", "a"}}, 2);
    m.inc("tandem_c_total", {{"type", "say \"hi\"\n"}});
    EXPECT_EQ(m.counter_value("tandem_c_total", {{"type", "a"}}), 3);
    EXPECT_EQ(m.counter_value("tandem_c_total", {{"type", "b"}}), 0);
    const std::string text = m.render();
    EXPECT_THAT(text, HasSubstr("# HELP tandem_c_total c\n# TYPE tandem_c_total counter\n"));
    EXPECT_THAT(text, HasSubstr("tandem_c_total{type=\"a\"} 3\n"));
    EXPECT_THAT(text, HasSubstr("tandem_c_total{type=\"say \\\"hi\\\"\\n\"} 1\n"));
    EXPECT_THAT(text, Not(HasSubstr("\"\n\"")));
}

}  // namespace
}  // namespace tandem::coord::testing
