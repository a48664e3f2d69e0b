// The cluster-in-a-box harness itself: hosts with their own addresses and sshd, rate-limited
// links, a host that refuses ssh, and nothing left behind. Skips with the reason when the box
// cannot be built (not root, no iproute2 or sshd).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "tests/integration/control/cluster_harness.h"
#include "tests/integration/hosts/cluster_in_a_box.h"

namespace tandem::testing {
namespace {

std::string ssh_to(const ClusterInABox& box, int host, const std::string& cmd) {
    return fmt::format(
        "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o LogLevel=ERROR -o ConnectTimeout=5 root@{} '{}'",
        box.identity_file(), box.address(host), cmd);
}

TEST(ClusterInABox, HostsHaveTheirOwnAddressesSshdAndRateLimitedLinks) {
    auto box = ClusterInABox::create({.hosts = 2, .refuse_ssh = {1}});
    if (!box.ok()) GTEST_SKIP() << box.status().message();
    const auto& b = **box;

    // Host 0 answers ssh from this machine and sees only its own address on eth0.
    auto r = run_cmd(ssh_to(b, 0, "ip -o -4 addr show dev eth0"));
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find(b.address(0) + "/24"), std::string::npos) << r.out;
    // Host 1's sshd does not trust the key, from this machine or from host 0 across the bridge.
    r = run_cmd(ssh_to(b, 1, "true"));
    EXPECT_EQ(r.code, 255);
    EXPECT_NE(r.out.find("Permission denied"), std::string::npos) << r.out;
    r = run_cmd(b.exec(0, ssh_to(b, 1, "true")));
    EXPECT_NE(r.out.find("Permission denied"), std::string::npos) << r.out;
    // Every link is limited in both directions.
    r = run_cmd(b.exec(0, "tc qdisc show dev eth0"));
    EXPECT_NE(r.out.find("rate 1Gbit"), std::string::npos) << r.out;
    // Counters move when traffic crosses the link.
    const uint64_t before = b.interface_bytes(0, 0);
    r = run_cmd(ssh_to(b, 0, "head -c 200000 /dev/zero") + " | wc -c");
    EXPECT_NE(r.out.find("200000"), std::string::npos) << r.out;
    EXPECT_GE(b.interface_bytes(0, 0), before + 200000);
}

TEST(ClusterInABox, DestructionRemovesNamespacesBridgesAndProcesses) {
    std::string ns;
    pid_t sleeper = 0;
    {
        auto box = ClusterInABox::create({.hosts = 1, .networks = 2});
        if (!box.ok()) GTEST_SKIP() << box.status().message();
        ns = (*box)->namespace_name(0);
        ASSERT_EQ(run_cmd((*box)->exec(0, "sleep 600 >/dev/null 2>&1 &")).code, 0);
        ASSERT_EQ((*box)->processes(0).size(), 1u);
        sleeper = (*box)->processes(0)[0];
        EXPECT_EQ(run_cmd((*box)->exec(0, "ip link show eth1")).code, 0);
    }
    EXPECT_EQ(run_cmd("ip netns list").out.find(ns), std::string::npos);
    const std::string tag = ns.substr(0, ns.find("-h"));
    EXPECT_EQ(run_cmd("ip -o link show").out.find(tag), std::string::npos);
    // Killed (a zombie waiting for a reaper counts as gone).
    const auto stat = run_cmd(fmt::format("cat /proc/{}/stat 2>/dev/null", sleeper)).out;
    EXPECT_TRUE(stat.empty() || stat.find(") Z") != std::string::npos) << stat;
}

}  // namespace
}  // namespace tandem::testing
