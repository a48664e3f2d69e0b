// `tandem up` / `tandem down` over ssh on a cluster in a box: a 1+1+3 cluster (coordinator here,
// one trainer host, three rollout hosts) comes up, `up` again starts nothing, `down` leaves no
// process on any host; a host whose ssh refuses the key, one without the binary and one of
// another version are named with their cause, and nothing is left running.
#include <gtest/gtest.h>

#include "tests/integration/hosts/box_cluster.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

TEST(SshLaunch, UpStartsAgentsOnEveryHostUpAgainStartsNothingAndDownStopsThemAll) {
    auto box = ClusterInABox::create({.hosts = 4});
    if (!box.ok()) GTEST_SKIP() << box.status().message();
    const auto& b = **box;
    BoxCluster c(b, "ssh-up",
                 {{"trainer-0", "trainer", 0},
                  {"rollout-1", "rollout", 1},
                  {"rollout-2", "rollout", 2},
                  {"rollout-3", "rollout", 3}});
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    for (int h = 0; h < 4; ++h) {
        const std::string id = h == 0 ? "trainer-0" : fmt::format("rollout-{}", h);
        EXPECT_NE(up.out.find(fmt::format("{} on {} (pid", id, b.address(h))), std::string::npos)
            << up.out;
        EXPECT_TRUE(c.alive(id)) << id;
        EXPECT_EQ(b.processes(h).size(), 1u) << "one agent on host " << h;
    }
    // The copied secret and cluster file are private to the remote user.
    const auto mode =
        std::filesystem::status(c.dir() + "/remote/rollout-1/cluster-secret").permissions();
    EXPECT_EQ(mode & std::filesystem::perms::others_all, std::filesystem::perms::none);
    EXPECT_EQ(mode & std::filesystem::perms::group_all, std::filesystem::perms::none);

    auto again = c.up();
    ASSERT_EQ(again.code, 0) << again.out;
    EXPECT_NE(again.out.find("nothing to start"), std::string::npos) << again.out;

    auto down = c.cli("down");
    ASSERT_EQ(down.code, 0) << down.out;
    EXPECT_NE(down.out.find("stopped rollout-3 on " + b.address(3)), std::string::npos) << down.out;
    for (int h = 0; h < 4; ++h) EXPECT_TRUE(b.processes(h).empty()) << "host " << h;
}

TEST(SshLaunch, UpNamesEachNodeThatCannotStartAndLeavesNothingRunning) {
    auto box = ClusterInABox::create({.hosts = 4, .refuse_ssh = {1}});
    if (!box.ok()) GTEST_SKIP() << box.status().message();
    const auto& b = **box;
    // Host 2 has an agent binary of another version, host 3 none at all.
    const std::string fake_bin = b.dir() + "/other-bin";
    std::filesystem::create_directories(fake_bin);
    std::ofstream(fake_bin + "/tandem-rollout-node") << "#!/bin/sh\necho 0.0.1\n";
    std::filesystem::permissions(fake_bin + "/tandem-rollout-node",
                                 std::filesystem::perms::owner_all);
    BoxCluster c(b, "ssh-refused",
                 {{"trainer-0", "trainer", 0},
                  {"rollout-1", "rollout", 1},
                  {"rollout-2", "rollout", 2, ", bin_dir: " + fake_bin},
                  {"rollout-3", "rollout", 3, ", bin_dir: /nonexistent"},
                  {"rollout-4", "rollout", 0, ", port: 2222"}});
    auto up = c.up();
    EXPECT_EQ(up.code, 1) << up.out;
    EXPECT_NE(up.out.find("node rollout-1 (root@" + b.address(1) + "): auth refused"),
              std::string::npos)
        << up.out;
    EXPECT_NE(up.out.find("node rollout-2 (root@" + b.address(2) + "): version mismatch"),
              std::string::npos)
        << up.out;
    EXPECT_NE(up.out.find("node rollout-3 (root@" + b.address(3) + "): binary missing"),
              std::string::npos)
        << up.out;
    EXPECT_NE(up.out.find("node rollout-4 (root@" + b.address(0) + "): unreachable"),
              std::string::npos)
        << up.out;
    // Nothing left: no agent on any host, no coordinator.
    for (int h = 0; h < 4; ++h) EXPECT_TRUE(b.processes(h).empty()) << "host " << h;
    EXPECT_FALSE(std::filesystem::exists(c.run_dir() + "/pids/coordinator.pid"));
    EXPECT_FALSE(std::filesystem::exists(c.run_dir() + "/remote/trainer-0.json"));
}

}  // namespace
}  // namespace tandem::testing
