#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/config/loader.h"

namespace tandem::config {
namespace {

namespace fs = std::filesystem;

class ConfigFileTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("tandem_config_test_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string write(const std::string& name, const std::string& text) {
        const fs::path p = dir_ / name;
        std::ofstream(p) << text;
        return p.string();
    }
    // The first error line of loading `text` as a job file.
    std::string job_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
        const std::string path = write("job.yaml", text);
        auto ov = parse_overrides(overrides);
        EXPECT_TRUE(ov.ok());
        auto r = load_job_file(path, *ov);
        EXPECT_FALSE(r.ok()) << "loaded without error: " << text;
        return r.ok() ? "" : r.status().message();
    }
    std::string cluster_error(const std::string& text) {
        auto r = load_cluster_file(write("cluster.yaml", text));
        EXPECT_FALSE(r.ok()) << "loaded without error: " << text;
        return r.ok() ? "" : r.status().message();
    }
    fs::path dir_;
};

constexpr const char* kMinimalJob = "name: j\nkind: grpo\n";
constexpr const char* kMinimalCluster =
    "nodes:\n"
    "  - id: t0\n"
    "    role: trainer\n";

TEST_F(ConfigFileTest, CheckedInClusterAndJobFilesLoad) {
    const std::string src = TANDEM_SOURCE_DIR;
    auto cluster = load_cluster_file(src + "/configs/clusters/local.yaml");
    ASSERT_TRUE(cluster.ok()) << cluster.status().message();
    ASSERT_EQ(cluster->nodes.size(), 3u);
    EXPECT_EQ(cluster->nodes[0].role, ActorRole::kTrainer);
    EXPECT_EQ(cluster->nodes[1].role, ActorRole::kRollout);
    EXPECT_EQ(cluster->nodes[2].id, "rollout-1");

    for (const auto& entry : fs::directory_iterator(src + "/configs/jobs")) {
        auto spec = load_job_file(entry.path().string());
        EXPECT_TRUE(spec.ok()) << entry.path() << ": " << spec.status().message();
    }
    auto jsonl = load_job_file(src + "/configs/jobs/grpo-jsonl.yaml");
    ASSERT_TRUE(jsonl.ok());
    EXPECT_TRUE(fs::exists(jsonl->task.dataset)) << jsonl->task.dataset;
}

TEST_F(ConfigFileTest, RelativeDatasetIsBesideTheJobFileOrInTheCurrentDirectoryForAnOverride) {
    const std::string text = "name: j\nkind: grpo\ntask:\n  name: jsonl\n  dataset: data/a.jsonl\n";
    fs::create_directories(dir_ / "jobs");
    const std::string path = write("jobs/j.yaml", text);
    auto spec = load_job_file(path);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_EQ(spec->task.dataset, (dir_ / "jobs" / "data" / "a.jsonl").string());

    auto ov = parse_overrides({"task.dataset=b.jsonl"});
    ASSERT_TRUE(ov.ok());
    auto overridden = load_job_file(path, *ov);
    ASSERT_TRUE(overridden.ok()) << overridden.status().message();
    EXPECT_EQ(overridden->task.dataset, (fs::current_path() / "b.jsonl").string());

    auto absolute = parse_overrides({"task.dataset=/srv/c.jsonl"});
    ASSERT_TRUE(absolute.ok());
    EXPECT_EQ(load_job_file(path, *absolute)->task.dataset, "/srv/c.jsonl");
}

TEST_F(ConfigFileTest, DefaultsFillWhatTheFileOmits) {
    auto spec = load_job_file(write("j.yaml", kMinimalJob));
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    const JobSpec defaults{};
    EXPECT_EQ(spec->name, "j");
    EXPECT_EQ(spec->rollout.replicas, defaults.rollout.replicas);
    EXPECT_EQ(spec->trainer.chunk_bytes, 4 << 20);
    EXPECT_EQ(spec->async.max_staleness, 0);
    EXPECT_EQ(spec->task.name, TaskName::kReverse);

    auto cluster = load_cluster_file(write("c.yaml", kMinimalCluster));
    ASSERT_TRUE(cluster.ok()) << cluster.status().message();
    EXPECT_EQ(cluster->coordinator.heartbeat_ms, 1000);
    EXPECT_EQ(cluster->coordinator.dead_after_ms, 5000);
    EXPECT_EQ(cluster->nodes[0].host, "127.0.0.1");
    EXPECT_FALSE(cluster->nodes[0].resources.cpus.has_value());
}

TEST_F(ConfigFileTest, ValuesOfEveryTypeDecode) {
    auto cluster = load_cluster_file(write("c.yaml",
                                           "nodes:\n"
                                           "  - id: r0\n"
                                           "    role: rollout\n"
                                           "    resources: {cpus: 2.5, memory_mb: 4096, gpus: 1}\n"
                                           "    labels: {zone: a, rack: '7'}\n"));
    ASSERT_TRUE(cluster.ok()) << cluster.status().message();
    const auto& n = cluster->nodes[0];
    EXPECT_DOUBLE_EQ(*n.resources.cpus, 2.5);
    EXPECT_EQ(*n.resources.memory_mb, 4096);
    EXPECT_EQ(*n.resources.gpus, 1);
    EXPECT_EQ(n.labels.at("rack"), "7");

    auto job = load_job_file(write("j.yaml",
                                   "name: j\nkind: diagnostic\n"
                                   "placement: {strategy: spread, colocate: true}\n"
                                   "diagnostic: {fail_after_s: 1.5}\n"
                                   "logging: {level: debug}\n"));
    ASSERT_TRUE(job.ok()) << job.status().message();
    EXPECT_EQ(job->kind, JobKind::kDiagnostic);
    EXPECT_EQ(job->placement.strategy, PlacementStrategy::kSpread);
    EXPECT_TRUE(job->placement.colocate);
    EXPECT_DOUBLE_EQ(*job->diagnostic.fail_after_s, 1.5);
    EXPECT_EQ(job->logging.level, LogLevel::kDebug);
}

TEST_F(ConfigFileTest, SyntaxErrorNamesFileLineAndColumn) {
    const std::string path = write("bad.yaml", "name: j\nkind: grpo\nrollout: [1, 2\n");
    auto r = load_job_file(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(path + ":"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("YAML syntax error"), std::string::npos);
}

TEST_F(ConfigFileTest, UnknownKeyIsNamedWithLineAndSuggestion) {
    const std::string msg = job_error("name: j\nkind: grpo\nrollout:\n  replicaz: 4\n");
    EXPECT_NE(msg.find("job.yaml:4:3: rollout.replicaz: unknown key (did you mean 'replicas'?)"),
              std::string::npos)
        << msg;
}

TEST_F(ConfigFileTest, WrongTypeIsNamedWithValue) {
    const std::string msg = job_error("name: j\nkind: grpo\nrollout:\n  replicas: two\n");
    EXPECT_NE(msg.find("job.yaml:4:13: rollout.replicas: expected an integer, got \"two\""),
              std::string::npos)
        << msg;
}

TEST_F(ConfigFileTest, MappingWhereScalarExpected) {
    const std::string msg = job_error("name: j\nkind: grpo\nasync: 3\n");
    EXPECT_NE(msg.find(":3:8: async: expected a mapping, got \"3\""), std::string::npos) << msg;
}

TEST_F(ConfigFileTest, MissingRequiredFieldIsNamed) {
    const std::string msg = job_error("kind: grpo\n");
    EXPECT_NE(msg.find("job.yaml:1:1: name: missing required field"), std::string::npos) << msg;
    const std::string cmsg = cluster_error("nodes:\n  - role: trainer\n");
    EXPECT_NE(cmsg.find("nodes[0].id: missing required field"), std::string::npos) << cmsg;
}

TEST_F(ConfigFileTest, OutOfRangeValueIsNamedWithBounds) {
    const std::string msg =
        job_error("name: j\nkind: grpo\nrollout:\n  sampling:\n    top_p: 1.5\n");
    EXPECT_NE(msg.find(":5:12: rollout.sampling.top_p: 1.5 is out of range [0, 1]"),
              std::string::npos)
        << msg;
}

TEST_F(ConfigFileTest, BadEnumListsTheChoices) {
    const std::string msg = job_error("name: j\nkind: ppo\n");
    EXPECT_NE(msg.find(":2:7: kind: expected one of grpo, diagnostic, got \"ppo\""),
              std::string::npos)
        << msg;
}

TEST_F(ConfigFileTest, ZeroHeadsAreRefusedByTheirRangeNotBySigfpe) {
    // Found by tandem_fuzz_config: the divisibility checks divided by the zero they refuse.
    std::string msg = job_error("name: j\nkind: grpo\nmodel: {num_heads: 0}\n");
    EXPECT_NE(msg.find("model.num_heads"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("must divide hidden_size"), std::string::npos) << msg;
    msg = job_error("name: j\nkind: grpo\nmodel: {num_heads: 4, num_kv_heads: 0}\n");
    EXPECT_NE(msg.find("model.num_kv_heads"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("must divide num_heads"), std::string::npos) << msg;
}

TEST_F(ConfigFileTest, CrossFieldRulesAreChecked) {
    std::string msg = job_error("name: j\nkind: grpo\nmodel: {hidden_size: 64, num_heads: 5}\n");
    EXPECT_NE(msg.find("model.num_heads: must divide hidden_size (64)"), std::string::npos) << msg;
    msg = job_error("name: j\nkind: grpo\ntask: {name: jsonl}\n");
    EXPECT_NE(msg.find("task.dataset: is required when name is jsonl"), std::string::npos) << msg;
    msg = cluster_error(std::string(kMinimalCluster) +
                        "coordinator: {heartbeat_ms: 1000, dead_after_ms: 500}\n");
    EXPECT_NE(msg.find("coordinator.dead_after_ms: must be greater than heartbeat_ms (1000)"),
              std::string::npos)
        << msg;
}

TEST_F(ConfigFileTest, DuplicateNodeIdsAreRefused) {
    const std::string msg = cluster_error(
        "nodes:\n  - {id: a, role: trainer}\n  - {id: b, role: rollout}\n  - {id: a, role: "
        "rollout}\n");
    EXPECT_NE(msg.find("node id \"a\" is used twice (nodes[0] and nodes[2])"), std::string::npos)
        << msg;
}

TEST_F(ConfigFileTest, DuplicateKeyIsRefused) {
    const std::string msg = job_error("name: j\nkind: grpo\nname: k\n");
    EXPECT_NE(msg.find(":3:1: name: duplicate key"), std::string::npos) << msg;
}

TEST_F(ConfigFileTest, EveryErrorIsReportedNotJustTheFirst) {
    const std::string msg =
        job_error("name: j\nkind: grpo\nrollout: {replicas: x}\ntrainer: {slots: 3}\n");
    EXPECT_NE(msg.find("rollout.replicas"), std::string::npos) << msg;
    EXPECT_NE(msg.find("trainer.slots: unknown key"), std::string::npos) << msg;
}

TEST_F(ConfigFileTest, EmptyOrNonMappingFilesAreRefused) {
    auto r = load_job_file(write("empty.yaml", ""));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("empty.yaml: the document is empty"), std::string::npos);
    r = load_job_file(write("list.yaml", "- a\n- b\n"));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("expected a mapping at the top"), std::string::npos);
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
    auto r = load_job_file((dir_ / "nope.yaml").string());
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
    EXPECT_NE(r.status().message().find("nope.yaml"), std::string::npos);
}

TEST_F(ConfigFileTest, KindIsDetectedAndMismatchRefused) {
    auto r = load_job_file(write("c.yaml", kMinimalCluster));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("expected a job file, this is a cluster file"),
              std::string::npos);
    auto root = parse_yaml("foo: 1\n", "x.yaml");
    ASSERT_TRUE(root.ok());
    EXPECT_FALSE(detect_kind(*root, "x.yaml").ok());
}

TEST_F(ConfigFileTest, ResolvedYamlRoundTrips) {
    auto spec = load_job_file(write("j.yaml", "name: j\nkind: grpo\nrollout: {replicas: 5}\n"));
    ASSERT_TRUE(spec.ok());
    const std::string text = to_yaml(*spec);
    EXPECT_NE(text.find("max_staleness: 0"), std::string::npos) << text;
    auto again = parse_job_text(text, "resolved");
    ASSERT_TRUE(again.ok()) << again.status().message() << "\n" << text;
    EXPECT_EQ(again->rollout.replicas, 5);
    EXPECT_EQ(to_yaml(*again), text);

    auto cluster = load_cluster_file(write("c.yaml", kMinimalCluster));
    ASSERT_TRUE(cluster.ok());
    auto croot = parse_yaml(to_yaml(*cluster), "resolved");
    ASSERT_TRUE(croot.ok());
    auto cagain = decode_document<ClusterSpec>(*croot, "resolved");
    ASSERT_TRUE(cagain.ok()) << cagain.status().message();
    EXPECT_EQ(to_yaml(*cagain), to_yaml(*cluster));
}

TEST_F(ConfigFileTest, GrpoJobsAllowThreeRestartsUnlessTheySayOtherwise) {
    auto grpo = load_job_file(write("g.yaml", "name: g\nkind: grpo\n"));
    ASSERT_TRUE(grpo.ok()) << grpo.status().message();
    EXPECT_EQ(grpo->max_actor_restarts, kGrpoMaxActorRestarts);
    auto zero = load_job_file(write("z.yaml", "name: z\nkind: grpo\nmax_actor_restarts: 0\n"));
    ASSERT_TRUE(zero.ok());
    EXPECT_EQ(zero->max_actor_restarts, 0);
    auto overridden = load_job_file(write("o.yaml", "name: o\nkind: grpo\n"),
                                    *parse_overrides({"max_actor_restarts=1"}));
    ASSERT_TRUE(overridden.ok());
    EXPECT_EQ(overridden->max_actor_restarts, 1);
    auto diag = load_job_file(write("d.yaml", "name: d\nkind: diagnostic\n"));
    ASSERT_TRUE(diag.ok());
    EXPECT_EQ(diag->max_actor_restarts, 0);
    auto text = parse_job_text("name: t\nkind: grpo\n", "submitted");
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(text->max_actor_restarts, kGrpoMaxActorRestarts);
}

TEST_F(ConfigFileTest, ResolvedYamlPrintsFloatsInTheirShortestForm) {
    auto spec = load_job_file(write("j.yaml", "name: j\nkind: grpo\nalgorithm: {clip_eps: 0.2}\n"));
    ASSERT_TRUE(spec.ok());
    const std::string text = to_yaml(*spec);
    EXPECT_NE(text.find("clip_eps: 0.2\n"), std::string::npos) << text;
    EXPECT_EQ(text.find("0000000"), std::string::npos) << text;
    EXPECT_EQ(format_double(0.1), "0.1");
    EXPECT_EQ(format_double(3.0e-4), "0.0003");
    EXPECT_EQ(format_double(1.0), "1.0");  // still reads as a float
    EXPECT_EQ(format_double(1e300), "1e+300");
    EXPECT_EQ(format_double(-HUGE_VAL), "-.inf");
    for (double v : {0.1, 0.2, 1.0 / 3.0, 3.0e-4, 1e-12, 123456.789}) {
        EXPECT_EQ(parse_double(format_double(v)), v) << format_double(v);
    }
}

TEST_F(ConfigFileTest, UserActorCommandStartsBesideTheJobFileAndRoundTrips) {
    fs::create_directories(dir_ / "jobs");
    const std::string path = write("jobs/j.yaml",
                                   "name: j\nkind: grpo\n"
                                   "trainer:\n  command: [/usr/bin/python3, train.py, --fast]\n"
                                   "  env: {OMP_NUM_THREADS: \"1\"}\n"
                                   "rollout:\n  command: [./roll.sh]\n  working_dir: sub\n");
    auto spec = load_job_file(path);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_EQ(spec->trainer.user.command,
              (std::vector<std::string>{"/usr/bin/python3", "train.py", "--fast"}));
    EXPECT_EQ(spec->trainer.user.working_dir, (dir_ / "jobs").string());
    EXPECT_EQ(spec->trainer.user.env.at("OMP_NUM_THREADS"), "1");
    EXPECT_EQ(spec->rollout.user.working_dir, (dir_ / "jobs" / "sub").string());
    // What the coordinator stores and the agent parses again.
    auto again = parse_job_text(to_yaml(*spec), "resolved");
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_EQ(again->trainer.user.command, spec->trainer.user.command);
    EXPECT_EQ(again->rollout.user.working_dir, spec->rollout.user.working_dir);

    auto builtin = load_job_file(write("b.yaml", kMinimalJob));
    ASSERT_TRUE(builtin.ok());
    EXPECT_TRUE(builtin->trainer.user.command.empty());
    EXPECT_TRUE(builtin->trainer.user.working_dir.empty());
}

TEST_F(ConfigFileTest, BadUserActorCommandsAreNamedWithFileAndField) {
    std::string msg = job_error("name: j\nkind: grpo\ntrainer:\n  command: python3 train.py\n");
    EXPECT_NE(msg.find("job.yaml:4:12: trainer.command: expected a list, got \"python3 train.py\""),
              std::string::npos)
        << msg;
    msg = job_error("name: j\nkind: grpo\nrollout:\n  command: [python3, \"\"]\n");
    EXPECT_NE(msg.find("job.yaml:4:12: rollout.command: an empty string is not a program"),
              std::string::npos)
        << msg;
    msg = job_error("name: j\nkind: grpo\ntrainer:\n  env: {A: b}\n");
    EXPECT_NE(msg.find("trainer.env: only a user actor"), std::string::npos) << msg;
    msg = job_error("name: j\nkind: grpo\ntrainer:\n  command: [x]\n  env: {TANDEM_JOB: y}\n");
    EXPECT_NE(msg.find("trainer.env: 'TANDEM_JOB': TANDEM_* variables are set by the node agent"),
              std::string::npos)
        << msg;
    msg = job_error("name: j\nkind: grpo\ntrainer:\n  comand: [x]\n");
    EXPECT_NE(msg.find("trainer.comand"), std::string::npos) << msg;
    EXPECT_NE(msg.find("command"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tandem::config
