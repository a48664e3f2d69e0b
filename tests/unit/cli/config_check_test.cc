// Runs the built `tandem` binary the way a user does and checks output and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

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

}  // namespace
