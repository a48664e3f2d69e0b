#include "cli/launch_k8s.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "common/config/loader.h"

namespace tandem::cli {
namespace {

constexpr const char* kCluster =
    "name: lab\n"
    "coordinator: {host: 10.0.0.1, agent_port: 7601, http_port: 7680}\n"
    "nodes:\n"
    "  - {id: trainer-a, role: trainer, host: 10.0.0.2, resources: {cpus: 8, memory_mb: 32768, "
    "gpus: 2}}\n"
    "  - {id: rollout-a, role: rollout, host: 10.0.0.3, resources: {gpus: 1}}\n"
    "  - {id: rollout-b, role: rollout, host: 10.0.0.4, resources: {gpus: 1}}\n";

TEST(DeployK8s, RendersOneStatefulSetPerRoleFromTheClusterFile) {
    auto spec = config::decode_document<config::ClusterSpec>(YAML::Load(kCluster), "lab.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    auto files =
        render_k8s(*spec, kCluster, {.image = "reg/tandem:1", .secret = "s3", .api_token = "t4"});
    ASSERT_TRUE(files.ok()) << files.status().message();
    ASSERT_EQ(files->count("Dockerfile"), 1u);
    const std::string& m = files->at("tandem-lab.yaml");
    std::vector<YAML::Node> docs = YAML::LoadAll(m);
    ASSERT_EQ(docs.size(), 6u) << m;  // secret, configmap, service, coordinator, trainer, rollout
    std::map<std::string, YAML::Node> by_name;
    for (const auto& d : docs) by_name[d["metadata"]["name"].as<std::string>()] = d;

    EXPECT_EQ(by_name["tandem-lab-secret"]["stringData"]["cluster-secret"].as<std::string>(), "s3");
    // The ConfigMap carries the cluster file itself.
    EXPECT_EQ(by_name["tandem-lab-cluster"]["data"]["cluster.yaml"].as<std::string>(), kCluster);
    EXPECT_EQ(by_name["tandem-lab"]["spec"]["clusterIP"].as<std::string>(), "None");
    const auto coord = by_name["tandem-lab-coordinator"];
    EXPECT_EQ(coord["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as<std::string>(),
              "state");
    const auto trainer = by_name["tandem-lab-trainer"];
    EXPECT_EQ(trainer["spec"]["replicas"].as<int>(), 1);
    const auto tc = trainer["spec"]["template"]["spec"]["containers"][0];
    EXPECT_EQ(tc["image"].as<std::string>(), "reg/tandem:1");
    EXPECT_EQ(tc["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 2);
    EXPECT_EQ(tc["resources"]["requests"]["memory"].as<std::string>(), "32768Mi");
    const auto rollout = by_name["tandem-lab-rollout"];
    EXPECT_EQ(rollout["spec"]["replicas"].as<int>(), 2);
    const std::string cmd =
        rollout["spec"]["template"]["spec"]["containers"][0]["command"][2].as<std::string>();
    EXPECT_NE(cmd.find("ids=(rollout-a rollout-b); at=(1 2)"), std::string::npos) << cmd;
    EXPECT_NE(cmd.find("coordinator.host=tandem-lab-coordinator-0.tandem-lab"), std::string::npos)
        << cmd;
}

}  // namespace
}  // namespace tandem::cli
