// The reward command protocol: one JSON line per sample in, one number per line out, one
// process per scorer; every failure (exit, timeout, malformed line) is an error with stderr.

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/rl/reward_command.h"

namespace tandem::rl {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<RewardCommand> start(const std::string& command, int64_t timeout_ms = 10000,
                                     const std::string& dir = "") {
    auto rc = RewardCommand::start({command, dir, timeout_ms});
    EXPECT_TRUE(rc.ok()) << rc.status().to_string();
    return rc.ok() ? std::move(*rc) : nullptr;
}

std::vector<RewardSample> samples(size_t n) {
    static const std::string prompt = "What is 2+2?", completion = "4", answer = "4";
    return std::vector<RewardSample>(n, RewardSample{prompt, completion, answer});
}

bool have_python() { return std::system("python3 -c 'import json' >/dev/null 2>&1") == 0; }

TEST(RewardCommand, ReadsOneJsonLinePerSampleAndAnswersInOrder) {
    if (!have_python()) GTEST_SKIP() << "python3 is not on PATH";
    auto rc = start(
        "python3 -c 'import json,sys\n"
        "for line in sys.stdin:\n"
        "    s = json.loads(line)\n"
        "    print(float(s[\"completion\"] == s[\"answer\"]) + len(s[\"prompt\"]) / 1000)\n'");
    ASSERT_TRUE(rc);
    const std::string p1 = "abc", p2 = "é\"\n\\";
    const std::vector<RewardSample> batch = {{p1, "4", "4"}, {p2, "5", "4"}};
    auto r = rc->score(batch);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    ASSERT_EQ(r->size(), 2u);
    EXPECT_DOUBLE_EQ((*r)[0], 1.003);
    EXPECT_DOUBLE_EQ((*r)[1], 0.004);  // 4 characters, escaped in JSON and read back
}

TEST(RewardCommand, OneProcessServesEveryBatch) {
    auto rc = start("n=0; while read line; do n=$((n+1)); echo $n; done");
    ASSERT_TRUE(rc);
    auto a = rc->score(samples(2));
    auto b = rc->score(samples(3));
    ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string() << b.status().to_string();
    EXPECT_EQ(*a, (std::vector<double>{1, 2}));
    EXPECT_EQ(*b, (std::vector<double>{3, 4, 5}));
}

TEST(RewardCommand, LargeBatchesDoNotDeadlockOnFullPipes) {
    if (!have_python()) GTEST_SKIP() << "python3 is not on PATH";
    auto rc = start(
        "python3 -c 'import sys\nfor line in sys.stdin: print(1 if len(line) > 1000 else 0)'");
    ASSERT_TRUE(rc);
    const std::string long_completion(4000, 'x');
    std::vector<RewardSample> batch(3000, RewardSample{"p", long_completion, "a"});
    auto r = rc->score(batch);
    ASSERT_TRUE(r.ok()) << r.status().message().substr(0, 300);
    EXPECT_EQ(r->size(), 3000u);
    EXPECT_EQ((*r)[2999], 1.0);
}

TEST(RewardCommand, CrashFailsWithTheExitStatusAndStderr) {
    auto rc = start("read line; echo 'Traceback: boom in my_reward.py' >&2; exit 3");
    ASSERT_TRUE(rc);
    auto r = rc->score(samples(2));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("exited with status 3 after 0 of 2 answers"),
              std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find("Traceback: boom in my_reward.py"), std::string::npos);
}

TEST(RewardCommand, ExitingBeforeTheLastAnswerFails) {
    auto rc = start("read line; echo 1; exit 0");
    ASSERT_TRUE(rc);
    auto r = rc->score(samples(2));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("exited with status 0 after 1 of 2 answers"),
              std::string::npos)
        << r.status().message();
}

TEST(RewardCommand, TimeoutFailsAndKillsTheCommand) {
    auto rc = start("read line; echo 'thinking' >&2; exec sleep 30", 300);
    ASSERT_TRUE(rc);
    const pid_t pid = rc->pid();
    auto r = rc->score(samples(1));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("no answer for sample 1 of 1 within 300 ms"),
              std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find("thinking"), std::string::npos);
    EXPECT_NE(::kill(pid, 0), 0) << "the command still runs";
}

TEST(RewardCommand, MalformedLinesFail) {
    for (const std::string line : {"not-a-number", "nan", "1 2", "", "inf"}) {
        auto rc = start("while read l; do echo '" + line + "'; done");
        ASSERT_TRUE(rc);
        auto r = rc->score(samples(2));
        ASSERT_FALSE(r.ok()) << "accepted \"" << line << "\"";
        EXPECT_NE(
            r.status().message().find("line 1 of 2 is not one finite number: \"" + line + "\""),
            std::string::npos)
            << r.status().message();
    }
}

TEST(RewardCommand, MoreLinesThanSamplesFail) {
    auto rc = start("read l; printf '1\\n2\\n'; read l");
    ASSERT_TRUE(rc);
    auto r = rc->score(samples(1));
    // The extra line may arrive with the first or later; either way it is never taken silently.
    if (r.ok()) r = rc->score(samples(1));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("more lines than"), std::string::npos)
        << r.status().message();
}

TEST(RewardCommand, AFailedCommandStaysFailed) {
    auto rc = start("exit 1");
    ASSERT_TRUE(rc);
    auto first = rc->score(samples(1));
    auto second = rc->score(samples(1));
    ASSERT_FALSE(first.ok());
    EXPECT_EQ(second.status(), first.status());
}

TEST(RewardCommand, UnknownProgramFailsWithTheShellsMessage) {
    auto rc = start("/nonexistent/my_reward");
    ASSERT_TRUE(rc);
    auto r = rc->score(samples(1));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("exited with status 127"), std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find("/nonexistent/my_reward"), std::string::npos);
}

TEST(RewardCommand, RunsInItsWorkingDirectory) {
    const fs::path dir =
        fs::temp_directory_path() / ("tandem_reward_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "my_reward.sh") << "while read line; do echo 0.25; done\n";
    auto rc = start("sh my_reward.sh", 10000, dir.string());
    ASSERT_TRUE(rc);
    auto r = rc->score(samples(2));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(*r, (std::vector<double>{0.25, 0.25}));
    rc.reset();
    fs::remove_all(dir);
}

TEST(RewardCommand, DestructorEndsACommandThatIgnoresEndOfInput) {
    auto rc = start("trap '' TERM; exec sleep 100");
    ASSERT_TRUE(rc);
    const pid_t pid = rc->pid();
    rc.reset();  // closes stdin, waits 2 s, kills the process group
    EXPECT_NE(::kill(pid, 0), 0);
}

}  // namespace
}  // namespace tandem::rl
