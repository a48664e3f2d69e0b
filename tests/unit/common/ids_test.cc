#include "common/ids.h"

#include <gtest/gtest.h>

namespace tandem {
namespace {

TEST(JobId, FormatsWithSixDigits) {
    EXPECT_EQ(JobId(42).str(), "job-000042");
    EXPECT_EQ(JobId(1234567).str(), "job-1234567");
}

TEST(JobId, ParsesWithAndWithoutPrefix) {
    EXPECT_EQ(JobId::parse("job-000042")->number(), 42u);
    EXPECT_EQ(JobId::parse("7")->number(), 7u);
}

TEST(JobId, RejectsGarbageAndZero) {
    EXPECT_FALSE(JobId::parse("job-").ok());
    EXPECT_FALSE(JobId::parse("job-12x").ok());
    EXPECT_FALSE(JobId::parse("job-0").ok());
    EXPECT_NE(JobId::parse("banana").status().message().find("banana"), std::string::npos);
}

TEST(ActorId, RoundTrips) {
    ActorId a{JobId(42), ActorRole::kRollout, 1};
    EXPECT_EQ(a.str(), "job-000042/rollout-1");
    auto parsed = ActorId::parse(a.str());
    ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
    EXPECT_EQ(*parsed, a);
}

TEST(ActorId, RejectsMalformed) {
    EXPECT_FALSE(ActorId::parse("job-000042").ok());
    EXPECT_FALSE(ActorId::parse("job-000042/learner-1").ok());
    EXPECT_FALSE(ActorId::parse("job-000042/rollout-x").ok());
    EXPECT_FALSE(ActorId::parse("/rollout-1").ok());
}

TEST(NodeId, ValidatesCharacters) {
    EXPECT_TRUE(validate_node_id("rollout-1").ok());
    EXPECT_TRUE(validate_node_id("host.example_2").ok());
    EXPECT_FALSE(validate_node_id("").ok());
    EXPECT_FALSE(validate_node_id("has space").ok());
    EXPECT_FALSE(validate_node_id("slash/no").ok());
    EXPECT_FALSE(validate_node_id(std::string(129, 'a')).ok());
}

TEST(NodeId, DefaultIsHostRoleIndex) {
    EXPECT_EQ(default_node_id("h1", "rollout", 2), "h1-rollout-2");
}

}  // namespace
}  // namespace tandem
