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

// With CURVE on (this cluster's addresses are not loopback), the Secret carries each pair and
// every pod copies its own secret key and the public keys into RUN_DIR/keys before it starts.
TEST(DeployK8s, CarriesTheCurveKeysIntoEveryPodsRunDirectory) {
    auto spec = config::decode_document<config::ClusterSpec>(YAML::Load(kCluster), "lab.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    ASSERT_TRUE(spec->curve_enabled());
    K8sOptions o{.image = "reg/tandem:1", .secret = "s3", .api_token = "t4"};
    for (const char* name : {"coordinator", "trainer-a", "rollout-a", "rollout-b"})
        o.curve_keys[name] = {.public_z85 = std::string("P-") + name,
                              .secret_z85 = std::string("S-") + name};
    auto files = render_k8s(*spec, kCluster, o);
    ASSERT_TRUE(files.ok()) << files.status().message();
    std::map<std::string, YAML::Node> by_name;
    for (const auto& d : YAML::LoadAll(files->at("tandem-lab.yaml")))
        by_name[d["metadata"]["name"].as<std::string>()] = d;
    const auto data = by_name["tandem-lab-secret"]["stringData"];
    EXPECT_EQ(data["key-coordinator"].as<std::string>(), "S-coordinator");
    EXPECT_EQ(data["pub-rollout-b"].as<std::string>(), "P-rollout-b");
    const std::string init = by_name["tandem-lab-coordinator"]["spec"]["template"]["spec"]
                                    ["initContainers"][0]["command"][2]
                                        .as<std::string>();
    EXPECT_NE(
        init.find("cp /etc/tandem-secret/key-coordinator /var/lib/tandem/keys/coordinator.key"),
        std::string::npos)
        << init;
    EXPECT_NE(init.find("/etc/tandem-secret/pub-*"), std::string::npos) << init;
    const std::string cmd =
        by_name["tandem-lab-rollout"]["spec"]["template"]["spec"]["containers"][0]["command"][2]
            .as<std::string>();
    EXPECT_NE(cmd.find("cp /etc/tandem-secret/key-${ids[$k]} /var/lib/tandem/keys/${ids[$k]}.key"),
              std::string::npos)
        << cmd;
    EXPECT_LT(cmd.find("/keys/"), cmd.find("exec tandem-rollout-node")) << cmd;

    // Without keys (CURVE off) nothing about keys is rendered.
    o.curve_keys.clear();
    auto plain = render_k8s(*spec, kCluster, o);
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(plain->at("tandem-lab.yaml").find("keys"), std::string::npos);
}

}  // namespace
}  // namespace tandem::cli
