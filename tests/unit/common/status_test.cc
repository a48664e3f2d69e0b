#include "common/status.h"

#include <gtest/gtest.h>

namespace tandem {
namespace {

Status fails_with(StatusCode code) { return Status(code, "boom"); }

Status forwards(StatusCode code, bool* reached_end) {
    TANDEM_RETURN_IF_ERROR(fails_with(code));
    *reached_end = true;
    return Status();
}

Result<int> half(int x) {
    if (x % 2 != 0) return invalid_argument("odd");
    return x / 2;
}

Result<int> quarter(int x) {
    TANDEM_ASSIGN_OR_RETURN(int h, half(x));
    TANDEM_RETURN_IF_ERROR(half(h));
    return h / 2;
}

TEST(Status, DefaultIsOk) {
    Status s;
    EXPECT_TRUE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kOk);
    EXPECT_EQ(s.to_string(), "ok");
}

TEST(Status, CarriesCodeAndMessage) {
    Status s = not_found("job-000001 does not exist");
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    EXPECT_EQ(s.to_string(), "not_found: job-000001 does not exist");
}

TEST(Status, OnlyUnavailableAndDeadlineAreRetryable) {
    EXPECT_TRUE(unavailable("x").retryable());
    EXPECT_TRUE(deadline_exceeded("x").retryable());
    EXPECT_FALSE(invalid_argument("x").retryable());
    EXPECT_FALSE(data_loss("x").retryable());
    EXPECT_FALSE(internal_error("x").retryable());
    EXPECT_FALSE(Status().retryable());
}

TEST(Status, WithContextPrefixesAndKeepsCode) {
    Status s = data_loss("chunk 3 checksum mismatch").with_context("fetching version 7");
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);
    EXPECT_EQ(s.message(), "fetching version 7: chunk 3 checksum mismatch");
    EXPECT_TRUE(Status().with_context("ignored").ok());
}

TEST(Status, ReturnIfErrorReturnsEarlyOnError) {
    bool reached = false;
    Status s = forwards(StatusCode::kUnavailable, &reached);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable);
    EXPECT_FALSE(reached);
}

TEST(Status, ReturnIfErrorContinuesOnOk) {
    bool reached = false;
    EXPECT_TRUE(forwards(StatusCode::kOk, &reached).ok());
    EXPECT_TRUE(reached);
}

TEST(Result, HoldsValueOrError) {
    Result<int> good = half(8);
    ASSERT_TRUE(good.ok());
    EXPECT_EQ(*good, 4);
    EXPECT_TRUE(good.status().ok());

    Result<int> bad = half(3);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(bad.value_or(-1), -1);
}

TEST(Result, AssignOrReturnPropagatesFirstError) {
    EXPECT_EQ(*quarter(8), 2);
    EXPECT_EQ(quarter(3).status().message(), "odd");
    EXPECT_EQ(quarter(6).status().message(), "odd");  // 6/2 = 3 is odd
}

TEST(Result, MovesOutValue) {
    Result<std::string> r(std::string(100, 'x'));
    std::string s = std::move(r).value();
    EXPECT_EQ(s.size(), 100u);
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
    Result<int> bad = half(3);
    EXPECT_DEATH({ (void)bad.value(); }, "odd");
}

TEST(ResultDeathTest, OkStatusWithoutValueAborts) {
    EXPECT_DEATH({ Result<int> r{Status()}; }, "without a value");
}

}  // namespace
}  // namespace tandem
