// `tandem job submit|list|status|events|logs|cancel` and `tandem versions`.
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/context.h"
#include "common/config/loader.h"

namespace tandem::cli {

namespace {

constexpr const char* kJobUsage =
    "usage: tandem job submit -f JOB.yaml [KEY.PATH=VALUE ...] [--follow] [--dry-run]\n"
    "       tandem job list | status JOB | summary JOB | events JOB | logs JOB [--follow] | cancel "
    "JOB\n"
    "  JOB is a job id (job-000003) or a job name (the newest job with that name).\n"
    "  Read commands accept --output json; every command accepts --address and --run-dir.\n";

std::string str(const Json& j, const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

// "RUNNING step 12 progress 40% reward 0.53 version 12 staleness 1"
std::string progress_line(const Json& job) {
    std::string line = fmt::format("{} {}", str(job, "job"), str(job, "state"));
    if (job.value("step", 0) > 0) line += fmt::format("  step {}", job["step"].get<int64_t>());
    if (job.contains("progress") && job["progress"].is_number()) {
        line += fmt::format("  progress {:.0f}%", job["progress"].get<double>() * 100);
    }
    const Json m = job.value("metrics", Json::object());
    if (m.contains("rollout/reward_mean"))
        line += fmt::format("  reward {:.3f}", m["rollout/reward_mean"].get<double>());
    if (job.contains("latest_version"))
        line += fmt::format("  version {}", job["latest_version"].get<uint64_t>());
    if (m.contains("weights/staleness_mean"))
        line += fmt::format("  staleness {:.2f}", m["weights/staleness_mean"].get<double>());
    if (!str(job, "reason").empty()) line += "  (" + str(job, "reason") + ")";
    return line;
}

int print_events(const Json& events) {
    for (const auto& e : events) {
        std::cout << fmt::format("{:>4}  {}  {:<16} {}\n", e["seq"].get<int64_t>(),
                                 format_time_ns(e["ts_ns"].get<int64_t>()), str(e, "kind"),
                                 str(e, "message"));
    }
    return kExitOk;
}

int final_code(const Json& job) { return str(job, "state") == "SUCCEEDED" ? kExitOk : kExitFailed; }

bool is_final(const std::string& state) {
    return state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED";
}

// Shows a live progress line and new events until the job ends; returns its exit code.
int follow(const ClusterContext& ctx, const std::string& job) {
    int64_t after = 0;
    std::string last_line;
    const bool tty = ::isatty(STDOUT_FILENO);
    while (true) {
        auto j = ctx.get("/api/v1/jobs/" + job);
        if (!j.ok()) return report(j.status());
        auto ev = ctx.get(fmt::format("/api/v1/jobs/{}/events?after={}", job, after));
        if (ev.ok()) {
            for (const auto& e : (*ev)["events"]) {
                if (tty && !last_line.empty()) std::cout << "\r\033[K";
                std::cout << fmt::format("  {}  {:<16} {}\n",
                                         format_time_ns(e["ts_ns"].get<int64_t>()), str(e, "kind"),
                                         str(e, "message"));
                last_line.clear();
                after = e["seq"].get<int64_t>();
            }
        }
        const std::string line = progress_line(*j);
        if (line != last_line) {
            if (tty) {
                std::cout << "\r\033[K" << line << std::flush;
            } else {
                std::cout << line << "\n";
            }
            last_line = line;
        }
        if (is_final(str(*j, "state"))) {
            if (tty) std::cout << "\n";
            return final_code(*j);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
}

int submit(const ClusterContext& ctx, const Args& args) {
    const auto file = args.get("--file");
    if (!file)
        return std::cerr << "tandem job submit: -f JOB.yaml is required\n" << kJobUsage, kExitUsage;
    std::vector<std::string> texts(args.positional.begin() + 1, args.positional.end());
    auto overrides = config::parse_overrides(texts);
    if (!overrides.ok()) return report(overrides.status());
    auto spec = config::load_job_file(*file, *overrides);
    if (!spec.ok()) return report(spec.status());
    const bool dry_run = args.has("--dry-run");
    auto r =
        ctx.post("/api/v1/jobs",
                 {{"spec_yaml", config::to_yaml(*spec)}, {"dry_run", dry_run}, {"source", *file}});
    if (!r.ok()) return report(r.status());
    if (json_output(args)) {
        std::cout << r->dump(2) << "\n";
    } else if (dry_run) {
        std::cout << "# resolved job spec\n" << str(*r, "spec_yaml") << "# placement plan\n";
        if ((*r)["plan"].is_object()) {
            for (auto it = (*r)["plan"].begin(); it != (*r)["plan"].end(); ++it) {
                std::cout << fmt::format("{:<28} -> {}\n", it.key(), it.value().get<std::string>());
            }
        } else {
            std::cout << "cannot be placed now: " << str(*r, "pending_reason") << "\n";
        }
        return kExitOk;
    } else {
        std::cout << fmt::format("submitted {} ({})\n", str(*r, "job"), str(*r, "state"));
        if (!str(*r, "pending_reason").empty())
            std::cout << "pending: " << str(*r, "pending_reason") << "\n";
    }
    if (args.has("--follow") && !dry_run) return follow(ctx, str(*r, "job"));
    return kExitOk;
}

int list(const ClusterContext& ctx, const Args& args) {
    auto r = ctx.get("/api/v1/jobs");
    if (!r.ok()) return report(r.status());
    if (json_output(args)) return std::cout << r->dump(2) << "\n", kExitOk;
    std::cout << fmt::format("{:<12} {:<20} {:<11} {:<10} {:>6} {:>8}  {}\n", "JOB", "NAME", "KIND",
                             "STATE", "STEP", "VERSIONS", "SUBMITTED");
    for (const auto& j : (*r)["jobs"]) {
        std::cout << fmt::format("{:<12} {:<20} {:<11} {:<10} {:>6} {:>8}  {}\n", str(j, "job"),
                                 str(j, "name"), str(j, "kind"), str(j, "state"),
                                 j["step"].get<int64_t>(), j["versions"].get<int64_t>(),
                                 format_time_ns(j["submitted_ns"].get<int64_t>()));
    }
    return kExitOk;
}

int status(const ClusterContext& ctx, const Args& args, const std::string& job) {
    auto r = ctx.get("/api/v1/jobs/" + job);
    if (!r.ok()) return report(r.status());
    if (json_output(args))
        return std::cout << r->dump(2) << "\n",
               final_code(*r) == kExitOk || !is_final(str(*r, "state")) ? kExitOk : kExitFailed;
    const Json& j = *r;
    std::cout << fmt::format("{} {} ({}): {}\n", str(j, "job"), str(j, "name"), str(j, "kind"),
                             str(j, "state"));
    if (!str(j, "reason").empty()) std::cout << "reason: " << str(j, "reason") << "\n";
    std::cout << fmt::format("submitted {}  started {}  finished {}\n",
                             format_time_ns(j["submitted_ns"].get<int64_t>()),
                             format_time_ns(j["started_ns"].get<int64_t>()),
                             format_time_ns(j["finished_ns"].get<int64_t>()));
    std::cout << fmt::format("restarts {}/{}  step {}  versions {}\n",
                             j["restarts_used"].get<int>(), j["max_actor_restarts"].get<int>(),
                             j["step"].get<int64_t>(), j["versions"].get<int64_t>());
    std::cout << fmt::format("{:<28} {:<14} {:>7} {:<10} {}\n", "ACTOR", "NODE", "ATTEMPT", "PHASE",
                             "LAST ERROR");
    for (const auto& a : j["actors"]) {
        std::cout << fmt::format("{:<28} {:<14} {:>7} {:<10} {}\n", str(a, "actor"), str(a, "node"),
                                 a["attempt"].get<int64_t>(), str(a, "phase"),
                                 str(a, "last_error"));
    }
    if (j.contains("metrics") && !j["metrics"].empty())
        std::cout << "metrics: " << j["metrics"].dump() << "\n";
    return kExitOk;
}

int logs(const ClusterContext& ctx, const Args& args, const std::string& job) {
    int64_t after = 0;
    while (true) {
        auto r = ctx.get(fmt::format("/api/v1/jobs/{}/logs?after={}", job, after));
        if (!r.ok()) return report(r.status());
        if (json_output(args) && !args.has("--follow"))
            return std::cout << r->dump(2) << "\n", kExitOk;
        for (const auto& l : (*r)["logs"]) {
            std::cout << fmt::format("{} {:<26} {:<6} {}\n",
                                     format_time_ns(l["ts_ns"].get<int64_t>()), str(l, "actor"),
                                     str(l, "level"), str(l, "msg"));
            after = l["seq"].get<int64_t>();
        }
        std::cout << std::flush;
        if (!args.has("--follow")) return kExitOk;
        auto j = ctx.get("/api/v1/jobs/" + job);
        if (j.ok() && is_final(str(*j, "state")) && (*r)["logs"].empty()) return final_code(*j);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
}

// The end-of-job figures: reward over the last steps, versions, weight sync and step times.
int summary(const ClusterContext& ctx, const Args& args, const std::string& job) {
    auto j = ctx.get("/api/v1/jobs/" + job);
    if (!j.ok()) return report(j.status());
    auto m = ctx.get(fmt::format("/api/v1/jobs/{}/metrics?limit=10000", job));
    if (!m.ok()) return report(m.status());
    const Json& rows = (*m)["metrics"];
    auto mean = [&](const char* key, size_t last) {
        double sum = 0;
        size_t n = 0;
        for (size_t i = rows.size() > last ? rows.size() - last : 0; i < rows.size(); ++i) {
            const Json& v = rows[i]["values"];
            if (v.contains(key) && v[key].is_number()) {
                sum += v[key].get<double>();
                ++n;
            }
        }
        return n ? sum / static_cast<double>(n) : -1.0;
    };
    const size_t all = rows.size();
    Json out = {{"job", str(*j, "job")},
                {"state", str(*j, "state")},
                {"steps", all},
                {"versions_published", (*j)["versions"]},
                {"reward_first", all ? rows[0]["values"].value("rollout/reward_mean", -1.0) : -1.0},
                {"reward_last5_mean", mean("rollout/reward_mean", 5)},
                {"weight_sync_wait_mean_s", mean("timing_s/weight_sync_wait", all)},
                {"weight_fetch_mean_s", mean("timing_s/weight_fetch", all)},
                {"publish_mean_s", mean("timing_s/publish", all)},
                {"step_mean_s", mean("timing_s/step", all)},
                {"rollout_tokens_per_s_mean", mean("throughput/rollout_tokens_per_s", all)}};
    const double sync = out["weight_sync_wait_mean_s"], step = out["step_mean_s"];
    out["weight_sync_fraction"] = step > 0 ? sync / step : 0.0;
    if (json_output(args)) return std::cout << out.dump(2) << "\n", final_code(*j);
    const double wall =
        ((*j)["finished_ns"].get<int64_t>() - (*j)["started_ns"].get<int64_t>()) / 1e9;
    std::cout << fmt::format("{} {}: {} steps in {}\n", str(*j, "job"), str(*j, "state"), all,
                             format_duration_s(wall));
    std::cout << fmt::format("  reward: first step {:.3f}, mean of the last 5 steps {:.3f}\n",
                             out["reward_first"].get<double>(),
                             out["reward_last5_mean"].get<double>());
    std::cout << fmt::format("  versions published: {}\n", (*j)["versions"].get<int64_t>());
    std::cout << fmt::format(
        "  mean weight sync wait {:.1f} ms ({:.1f}% of a step), fetch {:.1f} ms, publish {:.1f} "
        "ms\n",
        sync * 1e3, out["weight_sync_fraction"].get<double>() * 100,
        out["weight_fetch_mean_s"].get<double>() * 1e3, out["publish_mean_s"].get<double>() * 1e3);
    std::cout << fmt::format("  mean time per step {:.0f} ms, rollout {:.0f} tokens/s\n",
                             step * 1e3, out["rollout_tokens_per_s_mean"].get<double>());
    return final_code(*j);
}

}  // namespace

int cmd_job(const std::vector<std::string>& argv) {
    ArgSpec spec{.flags = {"--follow", "--dry-run", "--help"},
                 .options = {"--file"},
                 .aliases = {{"-f", "--file"}}};
    add_cluster_options(spec);
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem job"));
    if (args->has("--help")) return std::cout << kJobUsage, kExitOk;
    if (args->positional.empty()) return std::cerr << kJobUsage, kExitUsage;
    const std::string sub = args->positional[0];
    auto need_job = [&]() -> std::optional<std::string> {
        if (args->positional.size() != 2) return std::nullopt;
        return args->positional[1];
    };
    if (sub != "submit" && sub != "list" && sub != "status" && sub != "events" && sub != "logs" &&
        sub != "cancel" && sub != "summary") {
        std::cerr << "tandem job: unknown subcommand '" << sub << "'\n" << kJobUsage;
        return kExitUsage;
    }
    if (sub != "submit" && sub != "list" && !need_job()) {
        std::cerr << "tandem job " << sub << ": expected one JOB\n" << kJobUsage;
        return kExitUsage;
    }
    auto ctx = cluster_context(*args);
    if (!ctx.ok()) return report(ctx.status());
    if (sub == "submit") return submit(*ctx, *args);
    if (sub == "list") return list(*ctx, *args);
    const std::string job = *need_job();
    if (sub == "status") return status(*ctx, *args, job);
    if (sub == "logs") return logs(*ctx, *args, job);
    if (sub == "summary") return summary(*ctx, *args, job);
    if (sub == "events") {
        auto r = ctx->get(fmt::format("/api/v1/jobs/{}/events", job));
        if (!r.ok()) return report(r.status());
        if (json_output(*args)) return std::cout << r->dump(2) << "\n", kExitOk;
        return print_events((*r)["events"]);
    }
    auto r = ctx->post(fmt::format("/api/v1/jobs/{}/cancel", job), Json::object());
    if (!r.ok()) return report(r.status());
    std::cout << fmt::format("{} {}\n", str(*r, "job"), str(*r, "state"));
    return kExitOk;
}

int cmd_versions(const std::vector<std::string>& argv) {
    ArgSpec spec;
    add_cluster_options(spec);
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem versions"));
    if (args->positional.size() != 1)
        return std::cerr << "usage: tandem versions JOB [--output json]\n", kExitUsage;
    auto ctx = cluster_context(*args);
    if (!ctx.ok()) return report(ctx.status());
    auto r = ctx->get(fmt::format("/api/v1/jobs/{}/versions", args->positional[0]));
    if (!r.ok()) return report(r.status());
    if (json_output(*args)) return std::cout << r->dump(2) << "\n", kExitOk;
    std::cout << fmt::format("{:>8}  {:<19}  {:<11}  {:>12}  {:<18}  {:<24}  {}\n", "VERSION",
                             "PUBLISHED", "STATE", "BYTES", "FINGERPRINT", "PUBLISHERS", "READERS");
    for (const auto& v : (*r)["versions"]) {
        const Json& d = v["descriptor"];
        std::string pubs;
        for (const auto& n : d.value("publisher_nodes", Json::array()))
            pubs += (pubs.empty() ? "" : ",") + n.get<std::string>();
        int64_t bytes = 0;  // over the version's shards
        for (const auto& sh : d.value("shards", Json::array()))
            bytes += sh.value("bytes", int64_t{0});
        // Older coordinators send only "available".
        const std::string state = v.contains("state")           ? v["state"].get<std::string>()
                                  : v.value("available", false) ? "available"
                                                                : "unavailable";
        const Json relays = v.value("relays", Json::array());
        std::cout << fmt::format(
            "{:>8}  {:<19}  {:<11}  {:>12}  {:<18}  {:<24}  {}\n", v["version"].get<uint64_t>(),
            format_time_ns(v["published_ns"].get<int64_t>()), state, bytes,
            d.contains("layout_fingerprint") ? d["layout_fingerprint"].get<std::string>() : "-",
            pubs, relays.size());
        const std::string reason = v.value("reason", "");
        if (!reason.empty()) std::cout << fmt::format("{:>8}  {}\n", "", reason);
        // Who relays to whom: one line per reader.
        for (const auto& l : relays) {
            const Json parent = l.value("parent", Json(nullptr));
            std::cout << fmt::format(
                "{:>8}  {} <- {} (depth {})\n", "", l.value("reader", std::string("?")),
                parent.is_string() ? parent.get<std::string>() : "publisher", l.value("depth", 1));
        }
    }
    return kExitOk;
}

}  // namespace tandem::cli
