// Runs the built `tandem` binary the way a user does and checks output and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/config/loader.h"
#include "common/model/job_setup.h"
#include "common/model/model_weights.h"
#include "common/model/vocab.h"

namespace {

struct CliRun {
    int code;
    std::string out;  // stdout and stderr together
};

CliRun run(const std::string& args) {
    const std::string cmd = std::string(TANDEM_BINARY_DIR) + "/bin/tandem " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
    const int status = pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

const std::string kSrc = TANDEM_SOURCE_DIR;

TEST(TandemCli, VersionAndHelp) {
    CliRun v = run("--version");
    EXPECT_EQ(v.code, 0);
    EXPECT_EQ(v.out.rfind("tandem ", 0), 0u) << v.out;
    CliRun h = run("--help");
    EXPECT_EQ(h.code, 0);
    EXPECT_NE(h.out.find("config check"), std::string::npos);
    EXPECT_EQ(run("").code, 2);
    EXPECT_EQ(run("frobnicate").code, 2);
}

TEST(TandemCli, HelpListsEveryJobSubcommandAndTheTokenOptions) {
    CliRun h = run("--help");
    for (const char* word : {"job list | summary JOB | cancel JOB", "--token", "TANDEM_TOKEN",
                             "TANDEM_ADDRESS", "--output text|json"}) {
        EXPECT_NE(h.out.find(word), std::string::npos) << word << "\n" << h.out;
    }
}

TEST(TandemCli, SubmitOfAMissingFileIsBadUsageBeforeAnyCluster) {
    CliRun r = run("job submit -f /nonexistent/job.yaml --run-dir /nonexistent");
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find("/nonexistent/job.yaml"), std::string::npos) << r.out;
}

TEST(TandemCli, SubmitRunsTheChecksConfigCheckRuns) {
    const std::string args = "-f " + kSrc +
                             "/configs/jobs/copy-long-context.yaml "
                             "rollout.max_tokens_per_device=30";
    CliRun check = run("config check " + args);
    CliRun submit = run("job submit " + args + " --run-dir /nonexistent");
    EXPECT_EQ(check.code, 2);
    EXPECT_EQ(submit.code, 2) << submit.out;
    EXPECT_EQ(submit.out, check.out);  // the same messages, before any coordinator is needed
    EXPECT_NE(submit.out.find("does not fit rollout.context_parallel"), std::string::npos);
}

TEST(TandemCli, UnknownOutputFormatIsBadUsage) {
    CliRun r = run("job list --output yaml --address 127.0.0.1:9");
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find("--output: expected text or json, got \"yaml\""), std::string::npos)
        << r.out;
}

TEST(TandemCli, FollowIsRefusedWhereItDoesNotApply) {
    CliRun r = run("job summary some-job --follow --address 127.0.0.1:9");
    EXPECT_EQ(r.code, 2) << r.out;
}

TEST(TandemCli, ConfigCheckPrintsFloatsInTheirShortestForm) {
    CliRun r = run("config check -f " + kSrc + "/configs/jobs/grpo-reverse.yaml");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("clip_eps: 0.2\n"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("0000000"), std::string::npos) << r.out;
}

TEST(TandemCli, ConfigCheckPrintsResolvedClusterWithDefaults) {
    CliRun r = run("config check -f " + kSrc + "/configs/clusters/local.yaml");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("valid cluster file"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("dead_after_ms: 5000"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("id: rollout-1"), std::string::npos) << r.out;
}

TEST(TandemCli, ConfigCheckAppliesOverrides) {
    CliRun r = run("config check -f " + kSrc +
                   "/configs/jobs/grpo-reverse.yaml async.max_staleness=2 rollout.replicas=3");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("max_staleness: 2"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("replicas: 3"), std::string::npos) << r.out;
}

TEST(TandemCli, ConfigCheckBadInputExitsTwoWithLocation) {
    const auto dir =
        std::filesystem::temp_directory_path() / ("tandem_cli_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto bad = (dir / "bad.yaml").string();
    std::ofstream(bad) << "name: j\nkind: grpo\nrollout:\n  replicas: two\n";
    CliRun r = run("config check -f " + bad);
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.out.find(bad + ":4:13: rollout.replicas: expected an integer, got \"two\""),
              std::string::npos)
        << r.out;

    CliRun o = run("config check -f " + kSrc + "/configs/jobs/grpo-reverse.yaml rollout.nope=1");
    EXPECT_EQ(o.code, 2);
    EXPECT_NE(o.out.find("override 'rollout.nope=1'"), std::string::npos) << o.out;

    EXPECT_EQ(run("config check").code, 2);
    EXPECT_EQ(run("config check -f " + (dir / "missing.yaml").string()).code, 2);
    std::filesystem::remove_all(dir);
}

// A scratch directory of this test process, removed at the end of the test.
struct TempDir {
    std::filesystem::path path = std::filesystem::temp_directory_path() /
                                 ("tandem_cli_test_" + std::to_string(::getpid()) + "_" +
                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    TempDir() { std::filesystem::create_directories(path); }
    ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(TandemCli, ConfigCheckPrintsLongestContextNextToLimits) {
    CliRun r = run("config check -f " + kSrc + "/configs/jobs/copy-long-context.yaml");
    EXPECT_EQ(r.code, 0) << r.out;
    // copy of 24-32 digits: [bos] + 32 digits + '=' = 34 prompt tokens, plus 33 new tokens.
    EXPECT_NE(r.out.find("# longest context 67 (34 prompt tokens + "
                         "rollout.sampling.max_new_tokens 33); rollout.context_parallel (2) x "
                         "rollout.max_tokens_per_device (48) = 96; model.max_seq_len 80"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("valid job file"), std::string::npos) << r.out;

    // A JSONL job: the relative dataset is read beside the job file, as the job reads it.
    CliRun j = run("config check -f " + kSrc + "/configs/jobs/grpo-jsonl.yaml");
    EXPECT_EQ(j.code, 0) << j.out;
    EXPECT_NE(j.out.find("# longest context "), std::string::npos) << j.out;
    EXPECT_NE(j.out.find("/configs/data/arith.jsonl"), std::string::npos) << j.out;

    // A diagnostic job has no task: nothing to load, no context line.
    CliRun d = run("config check -f " + kSrc + "/configs/jobs/diagnostic.yaml");
    EXPECT_EQ(d.code, 0) << d.out;
    EXPECT_EQ(d.out.find("longest context"), std::string::npos) << d.out;
}

TEST(TandemCli, ConfigCheckRejectsAContextLongerThanTheRolloutDevices) {
    const std::string file = kSrc + "/configs/jobs/copy-long-context.yaml";
    CliRun r = run("config check -f " + file + " rollout.max_tokens_per_device=30");
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(
        r.out.find(file + ": job copy-long-context: the longest context (34 prompt tokens + "
                          "rollout.sampling.max_new_tokens 33 = 67) does not fit "
                          "rollout.context_parallel (2) x rollout.max_tokens_per_device (30) = 60"),
        std::string::npos)
        << r.out;
    EXPECT_EQ(r.out.find("valid job file"), std::string::npos) << r.out;

    // Both limits broken: both reported.
    CliRun b =
        run("config check -f " + file + " rollout.max_tokens_per_device=30 model.max_seq_len=66");
    EXPECT_EQ(b.code, 2) << b.out;
    EXPECT_NE(b.out.find("rollout.max_tokens_per_device (30) = 60"), std::string::npos) << b.out;
    EXPECT_NE(b.out.find("model.max_seq_len (66) is shorter"), std::string::npos) << b.out;

    // On cuda every context-parallel rank needs a GPU of its own.
    CliRun g = run("config check -f " + file + " rollout.device=cuda rollout.resources.gpus=1");
    EXPECT_EQ(g.code, 2) << g.out;
    EXPECT_NE(g.out.find(file + ": job copy-long-context: rollout.device cuda with "
                                "rollout.context_parallel 2 needs rollout.resources.gpus >= 2 "
                                "(one GPU per rank), got 1"),
              std::string::npos)
        << g.out;
    EXPECT_EQ(run("config check -f " + file + " rollout.device=cuda rollout.resources.gpus=2").code,
              0);
}

TEST(TandemCli, ConfigCheckSaysWhatMakeJobSetupSays) {
    const std::string file = kSrc + "/configs/jobs/copy-long-context.yaml";
    auto overrides = tandem::config::parse_overrides({"model.max_seq_len=66"});
    ASSERT_TRUE(overrides.ok()) << overrides.status().message();
    auto job = tandem::config::load_job_file(file, *overrides);
    ASSERT_TRUE(job.ok()) << job.status().message();
    auto setup = tandem::model::make_job_setup(*job);
    ASSERT_FALSE(setup.ok());
    EXPECT_NE(setup.status().message().find("model.max_seq_len (66)"), std::string::npos)
        << setup.status().message();

    CliRun r = run("config check -f " + file + " model.max_seq_len=66");
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find(file + ": " + setup.status().message()), std::string::npos)
        << r.out << "\nmake_job_setup: " << setup.status().message();
}

TEST(TandemCli, ConfigCheckTakesMaxSeqLenFromModelInit) {
    TempDir dir;
    const std::string file = kSrc + "/configs/jobs/copy-long-context.yaml";
    auto job = tandem::config::load_job_file(file, {});
    ASSERT_TRUE(job.ok()) << job.status().message();
    const auto vocab = tandem::model::Vocabulary::builtin();
    auto cfg = tandem::model::ModelConfig::from_spec(job->model, vocab.size());
    ASSERT_TRUE(cfg.ok()) << cfg.status().message();
    for (int max_seq_len : {70, 60}) {
        cfg->max_seq_len = max_seq_len;
        auto w = tandem::model::ModelWeights::random(*cfg, 1);
        ASSERT_TRUE(w.ok()) << w.status().message();
        const auto ckpt = (dir.path / std::to_string(max_seq_len)).string();
        ASSERT_TRUE(tandem::model::save_pretrained(ckpt, *w, &vocab).ok());
        CliRun r = run("config check -f " + file + " model.init=" + ckpt);
        if (max_seq_len == 70) {
            EXPECT_EQ(r.code, 0) << r.out;
            EXPECT_NE(r.out.find("= 96; model.max_seq_len 70\n"), std::string::npos) << r.out;
            continue;
        }
        job->model.init = ckpt;
        auto setup = tandem::model::make_job_setup(*job);
        ASSERT_FALSE(setup.ok());
        EXPECT_EQ(r.code, 2) << r.out;
        EXPECT_NE(r.out.find(file + ": " + setup.status().message()), std::string::npos)
            << r.out << "\nmake_job_setup: " << setup.status().message();
    }
}

TEST(TandemCli, ConfigCheckRejectsACheckpointWithAnotherVocabulary) {
    // A model.init whose recorded vocabulary is not the task's: the check make_job_setup runs,
    // caught before submitting.
    TempDir dir;
    const std::string file = kSrc + "/configs/jobs/copy-long-context.yaml";
    auto job = tandem::config::load_job_file(file, {});
    ASSERT_TRUE(job.ok()) << job.status().message();
    auto vocab = tandem::model::Vocabulary::create("abcdefghijkl");
    ASSERT_TRUE(vocab.ok());
    ASSERT_EQ(vocab->size(), tandem::model::Vocabulary::builtin().size());
    auto cfg = tandem::model::ModelConfig::from_spec(job->model, vocab->size());
    ASSERT_TRUE(cfg.ok()) << cfg.status().message();
    auto w = tandem::model::ModelWeights::random(*cfg, 1);
    ASSERT_TRUE(w.ok()) << w.status().message();
    const auto ckpt = (dir.path / "letters").string();
    ASSERT_TRUE(tandem::model::save_pretrained(ckpt, *w, &*vocab).ok());
    CliRun r = run("config check -f " + file + " model.init=" + ckpt);
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find(file + ": model.init " + ckpt + ": its vocabulary \"abcdefghijkl\" is " +
                         "not the task's"),
              std::string::npos)
        << r.out;
}

TEST(TandemCli, ConfigCheckNamesAMissingOrMalformedDataset) {
    TempDir dir;
    const auto job = (dir.path / "job.yaml").string();
    std::ofstream(job)
        << "name: j\nkind: grpo\ntask:\n  name: jsonl\n  dataset: data/missing.jsonl\n";
    CliRun r = run("config check -f " + job);
    EXPECT_EQ(r.code, 2) << r.out;
    // Resolved beside the job file, as load_job_file (and so the job) resolves it.
    const auto missing = (dir.path / "data" / "missing.jsonl").string();
    EXPECT_NE(r.out.find(job + ": task: " + missing + ": cannot open dataset"), std::string::npos)
        << r.out;

    std::filesystem::create_directories(dir.path / "data");
    std::ofstream(dir.path / "data" / "missing.jsonl")
        << "{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n{\"prompt\": \"4+5=\"}\n";
    CliRun m = run("config check -f " + job);
    EXPECT_EQ(m.code, 2) << m.out;
    EXPECT_NE(m.out.find(missing + ":2: missing field \"answer\""), std::string::npos) << m.out;
}

}  // namespace
