// `tandem job metrics JOB [--output csv|json]`: a job's per-step metrics for notebooks, read page
// by page from GET /api/v1/jobs/JOB/metrics. CSV (the default): one row per step, a `step` column
// and one column per metric (sorted, empty where a step did not report it). JSON: one object
// {"job": ..., "metrics": [{"step": N, "values": {...}}, ...]}.
#include <iostream>
#include <set>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/context.h"

namespace tandem::cli {

namespace {

constexpr const char* kMetricsUsage =
    "usage: tandem job metrics JOB [--output csv|json] [--address URL] [--token T] [--run-dir "
    "DIR]\n";
constexpr int kPage = 10000;  // the API's largest page

// A CSV field: quoted when it holds a comma, quote or line break.
std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
    std::string out = "\"";
    for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

std::string csv_value(const Json& v) {
    if (v.is_null()) return "";
    if (v.is_string()) return csv_field(v.get<std::string>());
    if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
    if (v.is_number()) return v.dump();
    return csv_field(v.dump());  // objects (histograms) as JSON text
}

}  // namespace

int cmd_job_metrics(const std::vector<std::string>& argv) {
    ArgSpec spec{.flags = {"--help"}};
    add_cluster_options(spec);
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem job metrics"));
    if (args->has("--help")) return std::cout << kMetricsUsage, kExitOk;
    // argv[0] is "metrics".
    if (args->positional.size() != 2) return std::cerr << kMetricsUsage, kExitUsage;
    const std::string output = args->get("--output").value_or("csv");
    if (output != "csv" && output != "json") {
        std::cerr << fmt::format("tandem job metrics: --output: expected csv or json, got \"{}\"\n",
                                 output)
                  << kMetricsUsage;
        return kExitUsage;
    }
    Args cluster_args = *args;
    cluster_args.options.erase("--output");
    auto ctx = cluster_context(cluster_args);
    if (!ctx.ok()) return report(ctx.status());
    const std::string& job = args->positional[1];

    Json rows = Json::array();
    std::string job_id = job;
    for (int64_t after = -1;;) {
        auto page =
            ctx->get(fmt::format("/api/v1/jobs/{}/metrics?after={}&limit={}", job, after, kPage));
        if (!page.ok()) return report(page.status());
        job_id = (*page).value("job", job);
        const Json& list = (*page)["metrics"];
        for (const auto& row : list) {
            after = row["step"].get<int64_t>();
            rows.push_back(row);
        }
        if (list.size() < static_cast<size_t>(kPage)) break;
    }
    if (output == "json") {
        std::cout << Json{{"job", job_id}, {"metrics", rows}}.dump(2) << "\n";
        return kExitOk;
    }
    std::set<std::string> keys;
    for (const auto& row : rows) {
        for (auto it = row["values"].begin(); it != row["values"].end(); ++it)
            keys.insert(it.key());
    }
    std::string line = "step";
    for (const auto& k : keys) line += "," + csv_field(k);
    std::cout << line << "\n";
    for (const auto& row : rows) {
        line = std::to_string(row["step"].get<int64_t>());
        const Json& values = row["values"];
        for (const auto& k : keys) line += "," + (values.contains(k) ? csv_value(values[k]) : "");
        std::cout << line << "\n";
    }
    return kExitOk;
}

}  // namespace tandem::cli
