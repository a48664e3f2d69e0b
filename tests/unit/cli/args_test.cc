#include "cli/args.h"

#include <gtest/gtest.h>

namespace tandem::cli {
namespace {

const ArgSpec kSpec{.flags = {"--follow", "--dry-run"},
                    .options = {"--file", "--output"},
                    .aliases = {{"-f", "--file"}}};

TEST(Args, ParsesFlagsOptionsAndPositionals) {
    auto a = parse_args({"submit", "-f", "job.yaml", "--follow", "--output=json", "x=1"}, kSpec);
    ASSERT_TRUE(a.ok()) << a.status().message();
    EXPECT_EQ(*a->get("--file"), "job.yaml");
    EXPECT_EQ(*a->get("--output"), "json");
    EXPECT_TRUE(a->has("--follow"));
    EXPECT_FALSE(a->has("--dry-run"));
    EXPECT_EQ(a->positional, (std::vector<std::string>{"submit", "x=1"}));
}

TEST(Args, UnknownOptionIsNamed) {
    auto a = parse_args({"--nope"}, kSpec);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().message(), "unknown option --nope");
}

TEST(Args, OptionWithoutValueIsAnError) {
    auto a = parse_args({"-f"}, kSpec);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().message(), "-f needs a value");
    EXPECT_FALSE(parse_args({"--follow=yes"}, kSpec).ok());
}

}  // namespace
}  // namespace tandem::cli
