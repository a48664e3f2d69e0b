#include "common/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/fakes/fake_clock.h"

namespace tandem {
namespace {

class LogFileTest : public ::testing::Test {
protected:
    void SetUp() override {
        path_ = std::filesystem::temp_directory_path() /
                ("tandem_log_test_" + std::to_string(::getpid()) + ".jsonl");
        std::filesystem::remove(path_);
        LogOptions o;
        o.console_level = LogLevel::kOff;
        o.json_path = path_.string();
        o.file_level = LogLevel::kDebug;
        o.node = "node-a";
        ASSERT_TRUE(init_logging(o).ok());
    }
    void TearDown() override {
        shutdown_logging();
        std::filesystem::remove(path_);
    }
    std::vector<nlohmann::json> lines() {
        shutdown_logging();  // flush and close
        std::vector<nlohmann::json> out;
        std::ifstream in(path_);
        std::string line;
        while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
        return out;
    }
    std::filesystem::path path_;
};

TEST_F(LogFileTest, LinesAreJsonWithRequiredFields) {
    Logger log("coordinator");
    log.info("node {} registered", "rollout-1");
    auto ls = lines();
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["level"], "info");
    EXPECT_EQ(ls[0]["component"], "coordinator");
    EXPECT_EQ(ls[0]["msg"], "node rollout-1 registered");
    EXPECT_EQ(ls[0]["node"], "node-a");
    EXPECT_TRUE(ls[0]["ts"].is_string());
    EXPECT_NE(ls[0]["ts"].get<std::string>().find('T'), std::string::npos);
    EXPECT_FALSE(ls[0].contains("job"));
}

TEST_F(LogFileTest, JobFieldsAreCarried) {
    Logger log = Logger("rollout").with({.job = "job-000003", .actor = "job-000003/rollout-1"});
    log.with({.version = 7}).warn("fetch took {} ms", 12);
    auto ls = lines();
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["level"], "warn");
    EXPECT_EQ(ls[0]["job"], "job-000003");
    EXPECT_EQ(ls[0]["actor"], "job-000003/rollout-1");
    EXPECT_EQ(ls[0]["version"], 7);
}

TEST_F(LogFileTest, MessagesNeedingEscapesStayValidJson) {
    Logger log("cli");
    log.error("quote \" backslash \\ newline \n tab \t end");
    auto ls = lines();
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["msg"], "quote \" backslash \\ newline \n tab \t end");
}

TEST_F(LogFileTest, LevelBelowFileLevelIsDropped) {
    Logger log("x");
    log.trace("dropped");
    log.debug("kept");
    auto ls = lines();
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["msg"], "kept");
}

TEST_F(LogFileTest, RateLimitedLoggerSuppressesAndCounts) {
    testing::FakeClock clock;
    RateLimitedLogger log(Logger("hot"), std::chrono::milliseconds(1000), clock);
    log.warn("slow {}", 1);  // written
    log.warn("slow {}", 2);  // suppressed
    log.warn("slow {}", 3);  // suppressed
    clock.advance(std::chrono::milliseconds(999));
    log.warn("slow {}", 4);  // suppressed
    clock.advance(std::chrono::milliseconds(1));
    log.warn("slow {}", 5);  // written, says 3 suppressed
    auto ls = lines();
    ASSERT_EQ(ls.size(), 2u);
    EXPECT_EQ(ls[0]["msg"], "slow 1");
    EXPECT_EQ(ls[1]["msg"], "slow 5 (3 similar lines suppressed)");
}

TEST(LogLevel, ParsesNamesAndRejectsOthers) {
    EXPECT_EQ(*parse_log_level("debug"), LogLevel::kDebug);
    EXPECT_EQ(*parse_log_level("warning"), LogLevel::kWarn);
    EXPECT_FALSE(parse_log_level("loud").ok());
}

TEST(Logging, UnwritableFileIsAnError) {
    LogOptions o;
    o.json_path = "/nonexistent-dir/x.jsonl";
    Status s = init_logging(o);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable);
    EXPECT_NE(s.message().find("/nonexistent-dir/x.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace tandem
