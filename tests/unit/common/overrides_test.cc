#include <gtest/gtest.h>

#include "common/config/loader.h"

namespace tandem::config {
namespace {

Result<JobSpec> job_with(const std::vector<std::string>& overrides,
                         const std::string& text = "name: j\nkind: grpo\n") {
    auto root = parse_yaml(text, "job.yaml");
    EXPECT_TRUE(root.ok());
    TANDEM_ASSIGN_OR_RETURN(auto ov, parse_overrides(overrides));
    TANDEM_RETURN_IF_ERROR(apply_overrides(*root, ov));
    return decode_document<JobSpec>(*root, "job.yaml", ov);
}

TEST(Override, ParsesPathAndValue) {
    auto o = parse_override("rollout.sampling.top_p=0.9");
    ASSERT_TRUE(o.ok());
    EXPECT_EQ(o->path, (std::vector<std::string>{"rollout", "sampling", "top_p"}));
    EXPECT_EQ(o->value, "0.9");
    auto empty_value = parse_override("name=");
    ASSERT_TRUE(empty_value.ok());
    EXPECT_EQ(empty_value->value, "");
}

TEST(Override, RejectsMalformed) {
    EXPECT_FALSE(parse_override("rollout.replicas").ok());
    EXPECT_FALSE(parse_override("=3").ok());
    EXPECT_FALSE(parse_override("rollout..replicas=3").ok());
    EXPECT_NE(parse_override("x").status().message().find("KEY.PATH=VALUE"), std::string::npos);
}

TEST(Override, SetsNestedValuesOverFileAndDefaults) {
    auto spec =
        job_with({"rollout.replicas=4", "rollout.sampling.top_p=0.5", "async.max_staleness=2"},
                 "name: j\nkind: grpo\nrollout: {replicas: 1}\n");
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_EQ(spec->rollout.replicas, 4);
    EXPECT_DOUBLE_EQ(spec->rollout.sampling.top_p, 0.5);
    EXPECT_EQ(spec->async.max_staleness, 2);
}

TEST(Override, ValueIsYaml) {
    auto spec = job_with({"placement={strategy: spread}", "kind=diagnostic"});
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_EQ(spec->placement.strategy, PlacementStrategy::kSpread);
    EXPECT_EQ(spec->kind, JobKind::kDiagnostic);
}

TEST(Override, UnknownPathIsNamedAsOverride) {
    auto spec = job_with({"rollout.replicaz=4"});
    ASSERT_FALSE(spec.ok());
    EXPECT_NE(spec.status().message().find(
                  "override 'rollout.replicaz=4': rollout.replicaz: unknown key"),
              std::string::npos)
        << spec.status().message();
}

TEST(Override, BadValueIsNamedAsOverride) {
    auto spec = job_with({"rollout.replicas=many"});
    ASSERT_FALSE(spec.ok());
    EXPECT_NE(spec.status().message().find(
                  "override 'rollout.replicas=many': rollout.replicas: expected an integer"),
              std::string::npos)
        << spec.status().message();
}

TEST(Override, IndexesIntoLists) {
    auto root =
        parse_yaml("nodes:\n  - {id: a, role: trainer}\n  - {id: b, role: rollout}\n", "c.yaml");
    ASSERT_TRUE(root.ok());
    auto ov = parse_overrides({"nodes.1.host=10.0.0.2"});
    ASSERT_TRUE(ov.ok());
    ASSERT_TRUE(apply_overrides(*root, *ov).ok());
    auto spec = decode_document<ClusterSpec>(*root, "c.yaml", *ov);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_EQ(spec->nodes[1].host, "10.0.0.2");
    EXPECT_EQ(spec->nodes[0].host, "127.0.0.1");

    auto out_of_range = parse_overrides({"nodes.5.host=x"});
    Status s = apply_overrides(*root, *out_of_range);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("index 5 is out of range (nodes has 2 entries)"), std::string::npos)
        << s.message();
}

TEST(Override, PathThroughScalarIsRefused) {
    auto spec = job_with({"name.first=x"});
    ASSERT_FALSE(spec.ok());
    EXPECT_NE(spec.status().message().find("name is a value, not a mapping"), std::string::npos)
        << spec.status().message();
}

}  // namespace
}  // namespace tandem::config
