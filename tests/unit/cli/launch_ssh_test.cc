#include "cli/launch_ssh.h"

#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "common/config/node_network.h"

namespace tandem::cli {
namespace {

Result<config::ClusterSpec> parse(const std::string& yaml) {
    return config::decode_document<config::ClusterSpec>(YAML::Load(yaml), "cluster.yaml");
}

TEST(LaunchSsh, LauncherDefaultsToLocalForThisMachineAndSshElsewhere) {
    config::NodeSpec n;
    n.host = "127.0.0.1";
    EXPECT_EQ(launcher_of(n), config::Launcher::kLocal);
    n.host = "192.0.2.7";  // TEST-NET-1: never an address of this machine
    EXPECT_EQ(launcher_of(n), config::Launcher::kSsh);
    n.launcher = config::Launcher::kManual;
    EXPECT_EQ(launcher_of(n), config::Launcher::kManual);
}

TEST(LaunchSsh, SshCommandCarriesUserPortKeyAndOptions) {
    auto spec = parse(
        "nodes:\n"
        "  - {id: r1, role: rollout, host: 192.0.2.7, ssh: {user: rl, port: 2200, identity_file: "
        "/k/id, options: [StrictHostKeyChecking=no]}}\n");
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    const auto argv = ssh_command(spec->nodes[0]);
    const std::vector<std::string> want = {"ssh",
                                           "-o",
                                           "BatchMode=yes",
                                           "-o",
                                           "ConnectTimeout=10",
                                           "-o",
                                           "LogLevel=ERROR",
                                           "-p",
                                           "2200",
                                           "-i",
                                           "/k/id",
                                           "-o",
                                           "IdentitiesOnly=yes",
                                           "-o",
                                           "StrictHostKeyChecking=no",
                                           "rl@192.0.2.7"};
    EXPECT_EQ(argv, want);
}

TEST(LaunchSsh, ClusterFileDescribesInterfacesAndGpuDevices) {
    auto spec = parse(
        "nodes:\n"
        "  - id: t0\n    role: trainer\n    host: 192.0.2.7\n    launcher: ssh\n"
        "    advertise_address: 198.51.100.7\n"
        "    interfaces: {control: eth0, weights: ib0, trajectories: eth1}\n"
        "    gpu_devices: [2, 3]\n");
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    const auto& n = spec->nodes[0];
    EXPECT_EQ(n.launcher, config::Launcher::kSsh);
    EXPECT_EQ(n.advertise_address, "198.51.100.7");
    EXPECT_EQ(n.interfaces.weights, "ib0");
    EXPECT_EQ(n.gpu_devices, (std::vector<int>{2, 3}));
}

TEST(LaunchSsh, BadLauncherAndRepeatedGpuDeviceAreNamed) {
    auto bad = parse("nodes:\n  - {id: t0, role: trainer, launcher: telnet}\n");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("nodes[0].launcher"), std::string::npos)
        << bad.status().message();
    EXPECT_NE(bad.status().message().find("local, ssh, manual"), std::string::npos)
        << bad.status().message();
    auto twice = parse("nodes:\n  - {id: t0, role: trainer, gpu_devices: [1, 1]}\n");
    ASSERT_FALSE(twice.ok());
    EXPECT_NE(twice.status().message().find("device 1 is listed twice"), std::string::npos)
        << twice.status().message();
    auto count =
        parse("nodes:\n  - {id: t0, role: trainer, resources: {gpus: 1}, gpu_devices: [0, 1]}\n");
    ASSERT_FALSE(count.ok());
    EXPECT_NE(count.status().message().find("lists 2 devices but resources.gpus is 1"),
              std::string::npos)
        << count.status().message();
}

TEST(LaunchSsh, CoordinatorOnLoopbackIsRefusedForRemoteNodes) {
    auto spec = parse("nodes:\n  - {id: r1, role: rollout, host: 192.0.2.7}\n");
    ASSERT_TRUE(spec.ok());
    const RunDir run("/nonexistent");
    SshLauncher l(run, *spec, "cluster.yaml", {}, "/bin");
    const Status s = l.check_coordinator_address();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("coordinator.host is 127.0.0.1"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tandem::cli

namespace tandem::config {
namespace {

const std::vector<HostInterface> kTwo = {
    {"lo", "127.0.0.1"}, {"eth0", "10.0.0.2"}, {"eth1", "10.1.0.2"}};

NodeSpec node_on(const std::string& host) {
    NodeSpec n;
    n.id = "rollout-1";
    n.host = host;
    return n;
}

TEST(NodeNetwork, HostAddressOfThisMachineNamesItsInterface) {
    auto net = resolve_node_network(node_on("10.1.0.2"), kTwo);
    ASSERT_TRUE(net.ok()) << net.status().message();
    EXPECT_EQ(net->advertise_address, "10.1.0.2");
    EXPECT_EQ(net->weights_device, "eth1");
    EXPECT_EQ(net->control_source, "");
    // Loopback clusters are left to the defaults.
    net = resolve_node_network(node_on("127.0.0.1"), kTwo);
    ASSERT_TRUE(net.ok());
    EXPECT_EQ(net->weights_device, "");
}

TEST(NodeNetwork, SeveralInterfacesAndNoneNamedIsRefusedWithTheList) {
    auto net = resolve_node_network(node_on("node7.example"), kTwo);
    ASSERT_FALSE(net.ok());
    EXPECT_NE(net.status().message().find("has 2 interfaces (eth0 10.0.0.2, eth1 10.1.0.2)"),
              std::string::npos)
        << net.status().message();
    // One interface: nothing to guess.
    net =
        resolve_node_network(node_on("node7.example"), {{"lo", "127.0.0.1"}, {"eth0", "10.0.0.2"}});
    ASSERT_TRUE(net.ok());
    EXPECT_EQ(net->advertise_address, "10.0.0.2");
}

TEST(NodeNetwork, NamedPlanesGoToTheirInterfaces) {
    NodeSpec n = node_on("node7.example");
    n.interfaces = {.control = "eth0", .weights = "eth1", .trajectories = "10.1.0.2"};
    auto net = resolve_node_network(n, kTwo);
    ASSERT_TRUE(net.ok()) << net.status().message();
    EXPECT_EQ(net->advertise_address, "10.1.0.2");
    EXPECT_EQ(net->control_source, "10.0.0.2");
    EXPECT_EQ(net->weights_device, "eth1");
    n.interfaces.weights = "ib0";
    net = resolve_node_network(n, kTwo);
    ASSERT_FALSE(net.ok());
    EXPECT_NE(net.status().message().find("interfaces.weights is ib0, which is not"),
              std::string::npos)
        << net.status().message();
}

}  // namespace
}  // namespace tandem::config

namespace tandem::config {
namespace {

TEST(NodeNetwork, AnInterfaceWithIpv4AndIpv6AddressesIsOneInterface) {
    auto net = resolve_node_network(
        node_on("node7.example"), {{"lo", "127.0.0.1"}, {"eth0", "fd00::2"}, {"eth0", "10.0.0.2"}});
    ASSERT_TRUE(net.ok()) << net.status().message();
    EXPECT_EQ(net->advertise_address, "10.0.0.2");
}

}  // namespace
}  // namespace tandem::config
