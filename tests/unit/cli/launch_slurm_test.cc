#include "cli/launch_slurm.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "common/config/loader.h"

namespace tandem::cli {
namespace {

config::ClusterSpec file_with(const std::string& slurm) {
    const std::string yaml =
        "name: hpc\ncoordinator: {agent_port: 7601}\n" + slurm +
        "nodes:\n"
        "  - {id: t, role: trainer, resources: {gpus: 8}, interfaces: {weights: ib0}}\n"
        "  - {id: r, role: rollout, resources: {gpus: 4}}\n";
    return *config::decode_document<config::ClusterSpec>(YAML::Load(yaml), "hpc.yaml");
}

TEST(SlurmCluster, AllocationNodesGetRolesFromTheSlurmSectionAndTheirTemplates) {
    auto c = slurm_cluster(file_with("slurm: {trainer_nodes: 1}\n"), {"gpu01", "gpu02", "gpu03"},
                           "10.0.0.1");
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_EQ(c->coordinator.host, "10.0.0.1");
    ASSERT_EQ(c->nodes.size(), 3u);
    EXPECT_EQ(c->nodes[0].id, "trainer-0");
    EXPECT_EQ(c->nodes[0].host, "gpu01");
    EXPECT_EQ(c->nodes[0].resources.gpus, 8);
    EXPECT_EQ(c->nodes[0].interfaces.weights, "ib0");
    EXPECT_EQ(c->nodes[2].id, "rollout-1");
    EXPECT_EQ(c->nodes[2].host, "gpu03");
    EXPECT_EQ(c->nodes[2].resources.gpus, 4);
    EXPECT_EQ(c->nodes[2].launcher, config::Launcher::kSlurm);
    // The resolved file reads back.
    auto again = config::decode_document<config::ClusterSpec>(YAML::Load(config::to_yaml(*c)),
                                                              "cluster-slurm.yaml");
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_EQ(again->nodes[1].launcher, config::Launcher::kSlurm);
}

TEST(SlurmCluster, TooSmallAnAllocationIsNamed) {
    auto c = slurm_cluster(file_with("slurm: {trainer_nodes: 2, rollout_nodes: 2}\n"),
                           {"gpu01", "gpu02", "gpu03"}, "10.0.0.1");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().message(),
              "slurm: 2 trainer and 2 rollout nodes asked for, the allocation has 3 "
              "(gpu01,gpu02,gpu03)");
}

TEST(SlurmCluster, SrunRunsOneTaskOnTheNodeAndFailsTheStepOnABadExit) {
    config::NodeSpec n;
    n.id = "rollout-3";
    n.host = "gpu07";
    const auto argv = srun_command(n);
    EXPECT_TRUE(argv.front().ends_with("srun")) << argv.front();
    EXPECT_NE(std::find(argv.begin(), argv.end(), "--nodelist=gpu07"), argv.end());
    EXPECT_NE(std::find(argv.begin(), argv.end(), "--kill-on-bad-exit=1"), argv.end());
}

}  // namespace
}  // namespace tandem::cli

namespace tandem::cli {
namespace {

TEST(SlurmCluster, ColocatedRolesShareTheHosts) {
    auto c =
        slurm_cluster(file_with("slurm: {trainer_nodes: 1, colocate: true}\n"), {"n1"}, "10.0.0.1");
    ASSERT_TRUE(c.ok()) << c.status().message();
    ASSERT_EQ(c->nodes.size(), 2u);
    EXPECT_EQ(c->nodes[0].id, "trainer-0");
    EXPECT_EQ(c->nodes[1].id, "rollout-0");
    EXPECT_EQ(c->nodes[1].host, "n1");
}

}  // namespace
}  // namespace tandem::cli

namespace tandem::cli {
namespace {

TEST(SlurmHetjob, RolesComeFromTheirHetGroupsAndSrunNamesTheGroup) {
    const auto file = file_with("slurm: {hetjob: true, rollout_nodes: 2}\n");
    auto c = slurm_het_cluster(file, {"cpu01"}, {"gpu01", "gpu02", "gpu03"}, "10.0.0.1");
    ASSERT_TRUE(c.ok()) << c.status().message();
    ASSERT_EQ(c->nodes.size(), 3u);  // trainer_nodes 1 (the default), rollout_nodes 2
    EXPECT_EQ(c->nodes[0].id, "trainer-0");
    EXPECT_EQ(c->nodes[0].host, "cpu01");
    EXPECT_EQ(c->nodes[1].id, "rollout-0");
    EXPECT_EQ(c->nodes[1].host, "gpu01");
    EXPECT_EQ(c->nodes[2].host, "gpu02");
    EXPECT_EQ(c->coordinator.host, "10.0.0.1");
    EXPECT_EQ(slurm_het_group(c->slurm, ActorRole::kTrainer), 0);
    EXPECT_EQ(slurm_het_group(c->slurm, ActorRole::kRollout), 1);
    const auto argv = srun_command(c->nodes[2], 1);
    EXPECT_EQ(argv[1], "--het-group=1");  // before the step's other options
    EXPECT_NE(std::find(argv.begin(), argv.end(), "--nodelist=gpu02"), argv.end());
    // Not a hetjob: no group.
    EXPECT_EQ(slurm_het_group(config::SlurmSpec{}, ActorRole::kRollout), -1);
    EXPECT_EQ(std::count_if(argv.begin(), argv.end(),
                            [](const std::string& a) { return a.starts_with("--het-group"); }),
              1);
    const auto plain = srun_command(c->nodes[2]);
    EXPECT_EQ(std::count_if(plain.begin(), plain.end(),
                            [](const std::string& a) { return a.starts_with("--het-group"); }),
              0);
}

TEST(SlurmHetjob, TooSmallAGroupAndColocateAreNamed) {
    auto c = slurm_het_cluster(file_with("slurm: {hetjob: true, trainer_nodes: 2}\n"), {"cpu01"},
                               {"gpu01"}, "10.0.0.1");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().message(), "slurm: 2 trainer nodes asked for, het group 0 has 1 (cpu01)");
    auto d = slurm_het_cluster(file_with("slurm: {hetjob: true, colocate: true}\n"), {"n1"}, {"n2"},
                               "10.0.0.1");
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.status().message().find("colocate and hetjob"), std::string::npos);
}

}  // namespace
}  // namespace tandem::cli
