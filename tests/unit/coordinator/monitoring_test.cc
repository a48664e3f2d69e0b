// The monitoring pieces of the coordinator: Prometheus families computed at render time
// (cluster_metrics.h, Metrics::collector), their names and values, and the dashboard's static file
// serving (dashboard.h).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "common/rl/weight_telemetry.h"
#include "coordinator/cluster_metrics.h"
#include "coordinator/dashboard.h"
#include "coordinator/metrics.h"
#include "tests/unit/coordinator/coordinator_fixture.h"

namespace tandem::coord {
namespace {

using testing::TempDir;

TEST(JobMetricFamily, MapsSlashesAndSpellsOutAbbreviatedUnits) {
    EXPECT_EQ(job_metric_family("timing_s/step"), "tandem_job_timing_seconds_step");
    EXPECT_EQ(job_metric_family("throughput/rollout_tokens_per_s"),
              "tandem_job_throughput_rollout_tokens_per_second");
    EXPECT_EQ(job_metric_family("rollout/reward_mean"), "tandem_job_rollout_reward_mean");
    EXPECT_EQ(job_metric_family("Weights/Fetch-MB"), "tandem_job_weights_fetch_megabytes");
    EXPECT_EQ(job_metric_family("x.y z"), "tandem_job_x_y_z");
    EXPECT_EQ(job_metric_family("trajectories/refused_total"), "tandem_job_trajectories_refused");
}

TEST(Metrics, RendersNonFiniteValuesAsTheTextFormatSpellsThem) {
    EXPECT_EQ(render_value(std::nan("")), "NaN");
    EXPECT_EQ(render_value(1.0 / 0.0), "+Inf");
    EXPECT_EQ(render_value(-1.0 / 0.0), "-Inf");
    EXPECT_EQ(render_value(0.25), "0.25");
}

TEST(Metrics, CollectedFamilyNeverReusesADescribedName) {
    Metrics m;
    m.describe_counter("tandem_things_total", "things");
    m.inc("tandem_things_total");
    m.collector([] {
        return std::vector<Metrics::Family>{
            {"tandem_things_total", "clash", "gauge", {{{}, 5}}},
            {"tandem_job_x", "x", "gauge", {{{{"job", "job-000001"}}, 2}}}};
    });
    const std::string text = m.render();
    EXPECT_EQ(text.find("clash"), std::string::npos) << text;
    EXPECT_NE(text.find("tandem_job_x{job=\"job-000001\"} 2\n"), std::string::npos) << text;
}

JobRecord job_with_metrics(const Json& metrics) {
    JobRecord j;
    j.id = JobId(7);
    j.spec.name = "grpo-reverse";
    j.step = 12;
    j.last_metrics = metrics;
    return j;
}

TEST(ClusterMetrics, ExportsTheLatestValueOfEveryNumericPerStepMetric) {
    std::map<std::string, Metrics::Family> out;
    append_job_step_families(job_with_metrics({{"timing_s/step", 0.5},
                                               {"rollout/reward_mean", 0.75},
                                               {"weights/staleness_hist", {{"0", 3}}},
                                               {"weights/staleness_hist/0", 3},
                                               {"note", "text"},
                                               {"flag", true}}),
                             out);
    ASSERT_EQ(out.size(), 3u);
    const auto& f = out.at("tandem_job_timing_seconds_step");
    ASSERT_EQ(f.samples.size(), 1u);
    EXPECT_EQ(f.samples[0].first.at("job"), "job-000007");
    EXPECT_EQ(f.samples[0].first.at("name"), "grpo-reverse");
    EXPECT_EQ(f.samples[0].second, 0.5);
    EXPECT_EQ(out.at("tandem_job_flag").samples[0].second, 1.0);
    EXPECT_NE(f.help.find("timing_s/step"), std::string::npos);
}

TEST(ClusterMetrics, RenderedJobFamiliesPassPromtool) {
    Metrics m;
    m.describe_counter("tandem_http_requests_total", "HTTP API requests by status class");
    m.inc("tandem_http_requests_total", {{"code", "2xx"}});
    m.collector([] {
        std::map<std::string, Metrics::Family> out;
        append_job_step_families(job_with_metrics({{"timing_s/step", 0.5},
                                                   {"throughput/rollout_tokens_per_s", 1e6},
                                                   {"train/kl", std::nan("")},
                                                   {"trajectories/refused_total", 3},
                                                   {"weights/staleness_mean", 1}}),
                                 out);
        std::vector<Metrics::Family> list;
        for (auto& [name, f] : out) list.push_back(f);
        return list;
    });
    if (std::system("command -v promtool >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "no promtool on PATH (apt-get install prometheus)";
    TempDir dir;
    const std::string file = dir.path().string() + "/metrics.txt";
    std::ofstream(file) << m.render();
    const std::string cmd = "promtool check metrics < " + file + " > " + file + ".out 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(file + ".out");
    const std::string said((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(rc, 0) << said << "\n" << m.render();
}

// A job whose trainer and one rollout reported their weight-plane counters as the actors do.
JobRecord job_with_weight_telemetry() {
    JobRecord j = job_with_metrics(Json::object());
    rl::WeightTelemetry trainer;
    trainer.set_publisher({.versions = 4,
                           .bytes = 4096,
                           .lease_waits = 1,
                           .live_leases = 2,
                           .served_bytes = 3072,
                           .seconds = 0.5});
    trainer.add_staleness({{"0", 6}, {"2", 2}});
    trainer.add_staleness({{"0", 2}, {"x", 9}});
    rl::WeightTelemetry rollout;
    rollout.on_fetch({.version = 1,
                      .start_ns = 10,
                      .seconds = 0.004,
                      .bytes = 1024,
                      .transport = "am",
                      .source = "publisher"});
    rollout.on_fetch({.version = 2,
                      .start_ns = 20,
                      .seconds = 0.2,
                      .bytes = 1024,
                      .transport = "am",
                      .source = "job-000007/rollout-1",
                      .rereads = 1});
    rollout.set_relay_served_bytes(512);
    for (const auto& [name, t] :
         {std::pair{"trainer-0", &trainer}, std::pair{"rollout-0", &rollout}}) {
        ActorRecord a;
        a.id = *ActorId::parse(std::string("job-000007/") + name);
        a.progress = {{"step", 3}, {"weights", t->to_json()}};
        j.actors.push_back(a);
    }
    ActorRecord odd;  // malformed reports are left out
    odd.id = *ActorId::parse("job-000007/rollout-1");
    odd.progress = {
        {"weights",
         {{"published_versions", "many"}, {"fetch_seconds", 3}, {"staleness", {{"-1", 4}}}}}};
    j.actors.push_back(odd);
    return j;
}

TEST(ClusterMetrics, ExportsEachActorsWeightPlaneCounters) {
    std::map<std::string, Metrics::Family> out;
    append_weight_families(job_with_weight_telemetry(), out);
    auto value = [&](const std::string& family, const Metrics::Labels& labels) {
        for (const auto& [l, v] : out.at(family).samples)
            if (l == labels) return v;
        ADD_FAILURE() << family << " has no sample " << render_labels(labels);
        return -1.0;
    };
    const Metrics::Labels trainer = {{"job", "job-000007"}, {"actor", "job-000007/trainer-0"}};
    const Metrics::Labels rollout = {{"job", "job-000007"}, {"actor", "job-000007/rollout-0"}};
    EXPECT_EQ(value("tandem_weights_versions_published_total", trainer), 4);
    EXPECT_EQ(out.at("tandem_weights_versions_published_total").samples.size(), 1u);
    EXPECT_EQ(out.at("tandem_weights_versions_published_total").type, "counter");
    EXPECT_EQ(value("tandem_weights_leases_held", trainer), 2);
    EXPECT_EQ(out.at("tandem_weights_leases_held").type, "gauge");
    auto with = [](Metrics::Labels l, const char* k, const char* v) {
        l[k] = v;
        return l;
    };
    EXPECT_EQ(value("tandem_weights_served_bytes_total", with(trainer, "source", "publisher")),
              3072);
    EXPECT_EQ(value("tandem_weights_served_bytes_total", with(rollout, "source", "relay")), 512);
    EXPECT_EQ(value("tandem_weights_fetched_bytes_total", with(rollout, "transport", "am")), 2048);
    EXPECT_EQ(value("tandem_weights_checksum_failures_total", rollout), 1);
    EXPECT_DOUBLE_EQ(value("tandem_weights_fetch_bytes_per_second", rollout), 1024 / 0.2);

    // The fetch histogram: cumulative buckets, +Inf, sum and count.
    const auto& h = out.at("tandem_weights_fetch_seconds");
    EXPECT_EQ(h.type, "histogram");
    std::map<std::string, double> buckets;
    double sum = -1, count = -1;
    for (const auto& s : h.suffixed) {
        if (s.suffix == "_bucket") buckets[s.labels.at("le")] = s.value;
        if (s.suffix == "_sum") sum = s.value;
        if (s.suffix == "_count") count = s.value;
    }
    EXPECT_EQ(buckets.at("0.0025"), 0);
    EXPECT_EQ(buckets.at("0.005"), 1);
    EXPECT_EQ(buckets.at("0.1"), 1);
    EXPECT_EQ(buckets.at("0.25"), 2);
    EXPECT_EQ(buckets.at("+Inf"), 2);
    EXPECT_DOUBLE_EQ(sum, 0.204);
    EXPECT_EQ(count, 2);

    // Staleness: one bucket per distance up to the largest seen, the unparsable key left out.
    const auto& st = out.at("tandem_weights_trajectory_staleness_versions");
    std::map<std::string, double> sb;
    for (const auto& s : st.suffixed) {
        if (s.suffix == "_bucket") sb[s.labels.at("le")] = s.value;
        if (s.suffix == "_sum") {
            EXPECT_EQ(s.value, 4);  // 2 trajectories 2 versions behind
        }
        EXPECT_EQ(s.labels.at("actor"), "job-000007/trainer-0");
    }
    EXPECT_EQ(sb, (std::map<std::string, double>{{"0", 8}, {"1", 8}, {"2", 10}, {"+Inf", 10}}));
}

TEST(ClusterMetrics, WeightPlaneFamiliesPassPromtool) {
    Metrics m;
    m.collector([] {
        std::map<std::string, Metrics::Family> out;
        append_weight_families(job_with_weight_telemetry(), out);
        std::vector<Metrics::Family> list;
        for (auto& [name, f] : out) list.push_back(f);
        return list;
    });
    const std::string text = m.render();
    EXPECT_NE(text.find("# TYPE tandem_weights_fetch_seconds histogram\n"), std::string::npos);
    EXPECT_NE(text.find("tandem_weights_fetch_seconds_count{actor=\"job-000007/rollout-0\","
                        "job=\"job-000007\",transport=\"am\"} 2\n"),
              std::string::npos)
        << text;
    if (std::system("command -v promtool >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "no promtool on PATH (apt-get install prometheus)";
    TempDir dir;
    const std::string file = dir.path().string() + "/metrics.txt";
    std::ofstream(file) << text;
    const std::string cmd = "promtool check metrics < " + file + " > " + file + ".out 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(file + ".out");
    const std::string said((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(rc, 0) << said << "\n" << text;
}

class DashboardFiles : public ::testing::Test {
protected:
    void SetUp() override {
        std::filesystem::create_directories(dir_.path().string() + "/web/vendor");
        std::ofstream(dir_.path().string() + "/web/index.html") << "<html>tandem</html>";
        std::ofstream(dir_.path().string() + "/web/app.js") << "main();";
        std::ofstream(dir_.path().string() + "/web/vendor/lib.css") << "body{}";
        std::ofstream(dir_.path().string() + "/secret.txt") << "not served";
    }
    HttpRequest get(const std::string& path) const { return {.method = "GET", .path = path}; }
    TempDir dir_;
};

TEST_F(DashboardFiles, ServesThePagesWithTheirContentTypes) {
    const Dashboard d({dir_.path().string() + "/web", false});
    auto index = d.handle(get("/"));
    ASSERT_TRUE(index);
    EXPECT_EQ(index->status, 200);
    EXPECT_EQ(index->body, "<html>tandem</html>");
    EXPECT_EQ(index->content_type, "text/html; charset=utf-8");
    auto js = d.handle(get("/ui/app.js"));
    ASSERT_TRUE(js);
    EXPECT_EQ(js->content_type, "text/javascript; charset=utf-8");
    auto css = d.handle(get("/ui/vendor/lib.css"));
    ASSERT_TRUE(css);
    EXPECT_EQ(css->status, 200);
    EXPECT_EQ(css->content_type, "text/css; charset=utf-8");
}

TEST_F(DashboardFiles, LeavesApiPathsToTheApi) {
    const Dashboard d({dir_.path().string() + "/web", false});
    EXPECT_FALSE(d.handle(get("/api/v1/jobs")));
    EXPECT_FALSE(d.handle(get("/metrics")));
    EXPECT_FALSE(d.handle(get("/healthz")));
}

TEST_F(DashboardFiles, RefusesPathsOutsideItsFolderAndWrites) {
    const Dashboard d({dir_.path().string() + "/web", false});
    for (const char* p : {"/ui/../secret.txt", "/ui/vendor/../../secret.txt", "/ui//etc/passwd",
                          "/ui/.hidden", "/ui/vendor", "/ui/nosuch.js", "/ui/a%2f..%2fb"}) {
        auto r = d.handle(get(p));
        ASSERT_TRUE(r) << p;
        EXPECT_EQ(r->status, 404) << p;
        EXPECT_EQ(r->body.find("not served"), std::string::npos) << p;
    }
    HttpRequest post = get("/");
    post.method = "POST";
    EXPECT_EQ(d.handle(post)->status, 405);
}

TEST_F(DashboardFiles, SaysWhichModeItServes) {
    EXPECT_EQ(Dashboard({dir_.path().string() + "/web", true}).handle(get("/ui/mode.json"))->body,
              R"({"mode": "history"})");
    EXPECT_EQ(Dashboard({dir_.path().string() + "/web", false}).handle(get("/ui/mode.json"))->body,
              R"({"mode": "live"})");
}

TEST_F(DashboardFiles, NamesTheMissingBuildFolder) {
    const Dashboard d({dir_.path().string() + "/not-built", false});
    auto r = d.handle(get("/"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_NE(r->body.find("tandem_web"), std::string::npos) << r->body;
}

TEST_F(DashboardFiles, ServesProcessLogsFromAnOffsetInWholeLines) {
    std::filesystem::create_directories(dir_.path() / "logs");
    const std::string a = R"({"ts":"t1","level":"info","msg":"first"})";
    const std::string b = R"({"ts":"t2","level":"warn","msg":"second","job":"job-000001"})";
    std::ofstream(dir_.path() / "logs/coordinator.jsonl") << a << "\n"
                                                          << b << "\n"
                                                          << "{\"partial";
    Auth auth;
    auth.add("viewer-token", Role::kViewer, "v");
    const Dashboard d(
        {.web_dir = dir_.path().string() + "/web", .run_dir = dir_.path().string(), .auth = &auth});
    HttpRequest r = get("/api/v1/process-logs");
    EXPECT_EQ(d.handle(r)->status, 401);  // a viewer token, like the API's reads
    r.authorization = "Bearer viewer-token";
    const Json list = Json::parse(d.handle(r)->body);
    ASSERT_EQ(list["processes"].size(), 1u) << list.dump();
    EXPECT_EQ(list["processes"][0]["process"], "coordinator");

    r.path = "/api/v1/process-logs/coordinator";
    r.query = {{"offset", "0"}};
    const Json all = Json::parse(d.handle(r)->body);
    ASSERT_EQ(all["lines"].size(), 2u) << all.dump();  // the unterminated line waits
    EXPECT_EQ(all["lines"][1]["job"], "job-000001");
    EXPECT_EQ(all["next_offset"], static_cast<int64_t>(a.size() + b.size() + 2));

    r.query = {{"offset", std::to_string(-static_cast<int64_t>(b.size() + 12))}};
    const Json tail = Json::parse(d.handle(r)->body);  // starts inside the first line: skipped
    ASSERT_EQ(tail["lines"].size(), 1u) << tail.dump();
    EXPECT_EQ(tail["lines"][0]["msg"], "second");

    for (const char* bad : {"/api/v1/process-logs/../secret", "/api/v1/process-logs/nosuch"}) {
        r.path = bad;
        EXPECT_EQ(d.handle(r)->status, 404) << bad;
    }
}

TEST_F(DashboardFiles, ServesTheTrainersMetricsFileWhenItIsOnThisMachine) {
    Auth auth;
    auth.add("viewer-token", Role::kViewer, "v");
    const Dashboard d(
        {.web_dir = dir_.path().string() + "/web", .run_dir = dir_.path().string(), .auth = &auth});
    HttpRequest r = get("/api/v1/trainer-metrics/job-000001");
    r.authorization = "Bearer viewer-token";
    auto none = d.handle(r);
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 200);  // not an error: the trainer may run elsewhere
    EXPECT_EQ(Json::parse(none->body)["available"], false);

    std::filesystem::create_directories(dir_.path() / "jobs/job-000001");
    std::ofstream(dir_.path() / "jobs/job-000001/metrics.jsonl")
        << R"({"step":1,"metrics":{"weights/staleness_hist":{"0":6,"1":2}}})"
        << "\n";
    const Json got = Json::parse(d.handle(r)->body);
    EXPECT_EQ(got["available"], true);
    ASSERT_EQ(got["lines"].size(), 1u) << got.dump();
    EXPECT_EQ(got["lines"][0]["metrics"]["weights/staleness_hist"]["1"], 2);
}

// deploy/monitoring: the Prometheus scrape config passes `promtool check config` (with a token file
// beside it, as the README says), and the Grafana dashboard is JSON whose panels use the
// provisioned data sources.
TEST(DeployMonitoring, PrometheusConfigPassesPromtool) {
    if (std::system("command -v promtool >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "no promtool on PATH (apt-get install prometheus)";
    TempDir dir;
    const std::string src = std::string(TANDEM_SOURCE_DIR) + "/deploy/monitoring/prometheus.yml";
    std::filesystem::copy_file(src, dir.path() / "prometheus.yml");
    std::ofstream(dir.path() / "scrape-token") << "token\n";
    const std::string out = (dir.path() / "promtool.out").string();
    const std::string cmd =
        "promtool check config " + (dir.path() / "prometheus.yml").string() + " > " + out + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(out);
    EXPECT_EQ(rc, 0) << std::string((std::istreambuf_iterator<char>(in)), {});
}

TEST(DeployMonitoring, GrafanaDashboardUsesTheProvisionedDataSources) {
    std::ifstream in(std::string(TANDEM_SOURCE_DIR) +
                     "/deploy/monitoring/grafana/dashboards/tandem.json");
    const Json d = Json::parse(in, nullptr, false);
    ASSERT_TRUE(d.is_object());
    ASSERT_TRUE(d.contains("panels"));
    int queries = 0;
    for (const auto& p : d["panels"]) {
        if (p.value("type", "") == "row") continue;
        const std::string uid = p["datasource"]["uid"];
        EXPECT_TRUE(uid == "tandem-prometheus" || uid == "tandem-loki") << p.dump();
        for (const auto& t : p["targets"]) {
            EXPECT_FALSE(t.value("expr", "").empty()) << p.dump();
            ++queries;
        }
    }
    EXPECT_GE(queries, 15);
}

// Grafana is not in Debian, so its panels are not seen rendering here; their PromQL is checked by
// Prometheus' own parser (each query as a recording rule, $job as .*).
TEST(DeployMonitoring, GrafanaPrometheusQueriesParse) {
    std::ifstream in(std::string(TANDEM_SOURCE_DIR) +
                     "/deploy/monitoring/grafana/dashboards/tandem.json");
    const Json d = Json::parse(in, nullptr, false);
    ASSERT_TRUE(d.is_object());
    std::string rules = "groups:\n  - name: grafana\n    rules:\n";
    int n = 0;
    for (const auto& p : d["panels"]) {
        if (p.value("type", "") == "row" || p["datasource"]["uid"] != "tandem-prometheus") continue;
        for (const auto& t : p["targets"]) {
            std::string expr = t.value("expr", "");
            for (size_t at; (at = expr.find("$job")) != std::string::npos;)
                expr.replace(at, 4, ".*");
            rules += fmt::format("      - record: grafana:panel_{}\n        expr: {}\n", n++,
                                 Json(expr).dump());  // a JSON string is a YAML string
        }
    }
    EXPECT_GE(n, 20);
    if (std::system("command -v promtool >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "no promtool on PATH (apt-get install prometheus)";
    TempDir dir;
    const std::string file = dir.path().string() + "/rules.yml", out = file + ".out";
    std::ofstream(file) << rules;
    const int rc = std::system(("promtool check rules " + file + " > " + out + " 2>&1").c_str());
    std::ifstream said(out);
    EXPECT_EQ(rc, 0) << std::string((std::istreambuf_iterator<char>(said)), {}) << "\n" << rules;
}

}  // namespace
}  // namespace tandem::coord
