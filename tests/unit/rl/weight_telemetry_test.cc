// rl::WeightTelemetry: what an actor reports of its weight plane (common/rl/weight_telemetry.h).
#include <gtest/gtest.h>

#include "common/rl/weight_telemetry.h"

namespace tandem::rl {
namespace {

TEST(WeightTelemetry, KeepsTheNewestFetchRowsAndCountsThemAll) {
    WeightTelemetry t;
    const size_t n = WeightTelemetry::kFetchRows + 5;
    for (size_t i = 0; i < n; ++i) {
        t.on_fetch({.version = static_cast<int64_t>(i),
                    .start_ns = 1000 + static_cast<int64_t>(i),
                    .seconds = 0.5,
                    .bytes = 100,
                    .transport = i % 2 ? "get" : "am",
                    .source = "publisher"});
    }
    const auto j = t.to_json();
    ASSERT_EQ(j["fetches"].size(), WeightTelemetry::kFetchRows);
    EXPECT_EQ(j["fetches"].front()["version"], 5);  // the oldest kept
    EXPECT_EQ(j["fetches"].back()["version"], static_cast<int64_t>(n - 1));
    EXPECT_EQ(j["fetched_bytes"]["am"].get<uint64_t>() + j["fetched_bytes"]["get"].get<uint64_t>(),
              100 * n);
    uint64_t counted = 0;
    for (const auto& [transport, h] : j["fetch_seconds"]["by_transport"].items()) {
        ASSERT_EQ(h["counts"].size(), WeightTelemetry::fetch_bounds().size() + 1) << transport;
        for (const auto& c : h["counts"]) counted += c.get<uint64_t>();
    }
    EXPECT_EQ(counted, n);
    EXPECT_DOUBLE_EQ(j["last_fetch_bytes_per_second"].get<double>(), 200);
    EXPECT_FALSE(j.contains("published_versions"));  // a reader publishes nothing
}

TEST(WeightTelemetry, AddsStalenessAcrossStepsAndIgnoresWhatIsNotACount) {
    WeightTelemetry t;
    t.add_staleness({{"0", 3}, {"1", 1}});
    t.add_staleness({{"1", 2}, {"behind", 4}, {"2", "x"}, {"-1", 5}});
    t.add_staleness(nlohmann::json::array());
    const auto j = t.to_json();
    EXPECT_EQ(j["staleness"], (nlohmann::json{{"0", 3}, {"1", 3}}));
    EXPECT_FALSE(j.contains("fetches"));  // a trainer fetches nothing
}

}  // namespace
}  // namespace tandem::rl
