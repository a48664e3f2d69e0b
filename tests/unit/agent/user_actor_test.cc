// User actors: how the agent starts a job's `command:` (ActorProcess::spawn(Command),
// user_actor_command) and how an exit nobody explained is described.

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/agent/user_actor.h"

namespace tandem::agent {
namespace {

namespace fs = std::filesystem;

// Reads the child's output until it exits (bounded by a deadline); returns its stdout lines.
std::vector<std::string> run_to_exit(ActorProcess& p, int& code) {
    std::vector<std::string> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd fds[2] = {{p.stdout_fd(), POLLIN, 0}, {p.stderr_fd(), POLLIN, 0}};
        ::poll(fds, 2, 100);  // a wait on the pipes, not a sleep
        if (p.stdout_fd() >= 0) {
            for (auto& l : p.read_lines(p.stdout_fd())) out.push_back(l);
        }
        if (p.stderr_fd() >= 0) (void)p.read_lines(p.stderr_fd());
        if (p.stdout_fd() < 0 && p.stderr_fd() < 0) {
            if (auto c = p.poll_exit()) {
                code = *c;
                return out;
            }
        }
    }
    ADD_FAILURE() << "the child did not exit within 20 s";
    return out;
}

class UserActorTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("tandem_user_actor_test_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
};

TEST_F(UserActorTest, CommandRunsInItsWorkingDirWithTheDocumentedEnvironment) {
    std::ofstream(dir_ / "ctx.json") << "{}";
    ActorContext ctx;
    ctx.actor = *ActorId::parse("job-000007/trainer-0");
    ctx.attempt = 2;
    ctx.node = "t0";
    ctx.run_dir = "/tmp/run";
    ctx.spec.trainer.user.command = {"sh", "-c",
                                     "pwd; echo $TANDEM_ACTOR_CONTEXT $TANDEM_JOB $TANDEM_ACTOR "
                                     "$TANDEM_ATTEMPT $TANDEM_NODE $TANDEM_RUN_DIR $EXTRA"};
    ctx.spec.trainer.user.working_dir = dir_.string();
    ctx.spec.trainer.user.env = {{"EXTRA", "x y"}};
    auto user = user_command(ctx);
    ASSERT_TRUE(user.has_value());
    ctx.actor = *ActorId::parse("job-000007/rollout-0");
    EXPECT_FALSE(user_command(ctx).has_value()) << "the rollout is built in";
    ctx.actor = *ActorId::parse("job-000007/trainer-0");

    auto p = ActorProcess::spawn(user_actor_command(*user, ctx, "/x/ctx.json", "/nonexistent/bin"));
    ASSERT_TRUE(p.ok()) << p.status().message();
    int code = -1;
    const auto out = run_to_exit(**p, code);
    EXPECT_EQ(code, 0);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(fs::path(out[0]), fs::canonical(dir_));
    EXPECT_EQ(out[1], "/x/ctx.json job-000007 job-000007/trainer-0 2 t0 /tmp/run x y");
}

TEST_F(UserActorTest, AMissingProgramOrDirectoryIsNamedBeforeForking) {
    ActorProcess::Command c;
    c.argv = {"no-such-program-tandem"};
    c.env = {{"PATH", "/usr/bin:/bin"}};
    auto p = ActorProcess::spawn(c);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().message(), "no-such-program-tandem was not found on PATH (/usr/bin:/bin)");
    c.argv = {"./train.py"};
    c.working_dir = dir_.string();
    p = ActorProcess::spawn(c);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().message(), (dir_ / "train.py").string() + " is not an executable file");
    c.working_dir = (dir_ / "gone").string();
    p = ActorProcess::spawn(c);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().message(), "working directory " + c.working_dir + " does not exist");
}

TEST_F(UserActorTest, AnUnexplainedExitIsDescribedWithItsCodeAndLastStderrLines) {
    ActorProcess::Command c;
    c.argv = {"sh", "-c", "for i in 1 2 3 4 5 6 7; do echo line $i >&2; done; echo >&2; exit 3"};
    auto p = ActorProcess::spawn(c);
    ASSERT_TRUE(p.ok()) << p.status().message();
    int code = -1;
    run_to_exit(**p, code);
    EXPECT_EQ(code, 3);
    EXPECT_EQ((*p)->describe_exit(code),
              "exited with code 3; last stderr lines: line 3 | line 4 | line 5 | line 6 | line 7");

    c.argv = {"sh", "-c", "exit 4"};
    p = ActorProcess::spawn(c);
    ASSERT_TRUE(p.ok());
    run_to_exit(**p, code);
    EXPECT_EQ((*p)->describe_exit(code), "exited with code 4, no stderr output");
}

}  // namespace
}  // namespace tandem::agent
