// `tandem job submit|list|status|events|logs|cancel` and `tandem versions`.
#include <unistd.h>

#include <iostream>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/context.h"
#include "cli/job_checks.h"
#include "common/config/loader.h"

namespace tandem::cli {

namespace {

constexpr const char* kJobUsage =
    "usage: tandem job submit -f JOB.yaml [KEY.PATH=VALUE ...] [--follow] [--dry-run]\n"
    "       tandem job list | summary JOB | cancel JOB\n"
    "       tandem job status JOB | events JOB | logs JOB [--follow]\n"
    "  JOB is a job id (job-000003) or a job name (the newest job with that name).\n"
    "  submit checks the file as `tandem config check` does before it submits; --dry-run prints\n"
    "  the resolved job and where its actors would run, and exits 1 if they cannot be placed.\n"
    "  --follow: status shows a live progress line and the events, events and logs keep\n"
    "  printing; all three exit with the job's result (0 succeeded, 1 failed or cancelled).\n"
    "  Read commands accept --output text|json; every command accepts --address, --token and\n"
    "  --run-dir (or TANDEM_ADDRESS and TANDEM_TOKEN).\n";

std::string str(const Json& j, const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

int final_code(const Json& job) { return str(job, "state") == "SUCCEEDED" ? kExitOk : kExitFailed; }

bool is_final(const std::string& state) {
    return state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED";
}

// "RUNNING step 12 progress 40% reward 0.53 version 12 staleness 1"; before the first step, the
// trainer's latest warm-start line ("warm start step 50/200: loss 1.234") when there is one.
std::string progress_line(const Json& job, const std::string& warm_start) {
    std::string line = fmt::format("{} {}", str(job, "job"), str(job, "state"));
    if (job.value("step", 0) > 0) {
        line += fmt::format("  step {}", job["step"].get<int64_t>());
    } else if (!warm_start.empty() && !is_final(str(job, "state"))) {
        line += "  " + warm_start;
    }
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

// The newest "warm start ..." line among the job's log lines after `after` (moved past them);
// empty when there is none.
std::string latest_warm_start(const ClusterContext& ctx, const std::string& job, int64_t& after) {
    std::string latest;
    auto r = ctx.get(fmt::format("/api/v1/jobs/{}/logs?after={}", job, after));
    if (!r.ok()) return latest;
    for (const auto& l : (*r)["logs"]) {
        after = l["seq"].get<int64_t>();
        if (str(l, "msg").starts_with("warm start")) latest = str(l, "msg");
    }
    return latest;
}

// Shows a live progress line and new events until the job ends; returns its exit code.
int follow(const ClusterContext& ctx, const std::string& job) {
    int64_t after = 0;
    int64_t logs_after = 0;
    std::string warm_start;  // the trainer's latest warm-start line, shown until step 1
    std::string last_line;
    const bool tty = ::isatty(STDOUT_FILENO);
    while (true) {
        auto j = ctx.get("/api/v1/jobs/" + job);
        if (!j.ok()) return report(j.status());
        if (j->value("step", 0) == 0) {
            const std::string w = latest_warm_start(ctx, job, logs_after);
            if (!w.empty()) warm_start = w;
        }
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
        const std::string line = progress_line(*j, warm_start);
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

// Prints the job's events as they come until it ends; returns its exit code.
int follow_events(const ClusterContext& ctx, const std::string& job) {
    int64_t after = 0;
    while (true) {
        // The state first: events recorded before a final state are all printed below.
        auto j = ctx.get("/api/v1/jobs/" + job);
        if (!j.ok()) return report(j.status());
        auto ev = ctx.get(fmt::format("/api/v1/jobs/{}/events?after={}", job, after));
        if (!ev.ok()) return report(ev.status());
        print_events((*ev)["events"]);
        std::cout << std::flush;
        for (const auto& e : (*ev)["events"]) after = e["seq"].get<int64_t>();
        if (is_final(str(*j, "state")) && (*ev)["events"].empty()) return final_code(*j);
        if (!is_final(str(*j, "state")))
            std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
}

// "job-000004/rollout-1" -> "rollout-1": a dry run's plan names actors of a job not yet created.
std::string role_of(const std::string& actor) {
    const auto slash = actor.find('/');
    return slash == std::string::npos ? actor : actor.substr(slash + 1);
}

int submit(const Args& args) {
    const auto file = args.get("--file");
    if (!file)
        return std::cerr << "tandem job submit: -f JOB.yaml is required\n" << kJobUsage, kExitUsage;
    std::vector<std::string> texts(args.positional.begin() + 1, args.positional.end());
    auto overrides = config::parse_overrides(texts);
    if (!overrides.ok()) return report(overrides.status());
    // Bad input (a missing file, an invalid field, a context that does not fit) exits 2 before
    // anything is submitted: the checks `tandem config check` runs.
    auto job = check_job_file(*file, *overrides);
    if (!job.ok()) return std::cerr << job.status().message() << "\n", kExitUsage;
    auto ctx = cluster_context(args);
    if (!ctx.ok()) return report(ctx.status());
    const bool dry_run = args.has("--dry-run");
    auto r = ctx->post(
        "/api/v1/jobs",
        {{"spec_yaml", config::to_yaml(job->spec)}, {"dry_run", dry_run}, {"source", *file}});
    if (!r.ok()) return report(r.status());
    const bool placed = (*r)["plan"].is_object();
    if (json_output(args)) {
        std::cout << r->dump(2) << "\n";
        if (dry_run) return placed ? kExitOk : kExitFailed;
    } else if (dry_run) {
        std::cout << "# resolved job spec\n" << str(*r, "spec_yaml") << "# placement plan\n";
        if (!placed) {
            std::cout << "cannot be placed now: " << str(*r, "pending_reason") << "\n";
            return kExitFailed;
        }
        for (auto it = (*r)["plan"].begin(); it != (*r)["plan"].end(); ++it) {
            std::cout << fmt::format("{:<16} -> {}\n", role_of(it.key()),
                                     it.value().get<std::string>());
        }
        return kExitOk;
    } else {
        std::cout << fmt::format("submitted {} ({})\n", str(*r, "job"), str(*r, "state"));
        if (!str(*r, "pending_reason").empty())
            std::cout << "pending: " << str(*r, "pending_reason") << "\n";
    }
    if (args.has("--follow") && !dry_run) return follow(*ctx, str(*r, "job"));
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
    // 0 while the job runs or after it succeeded, 1 once it failed or was cancelled.
    const int code =
        final_code(*r) == kExitOk || !is_final(str(*r, "state")) ? kExitOk : kExitFailed;
    if (json_output(args)) return std::cout << r->dump(2) << "\n", code;
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
    return code;
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
// Only what the job reported is shown: a diagnostic job has no reward or weight figures.
int summary(const ClusterContext& ctx, const Args& args, const std::string& job) {
    auto j = ctx.get("/api/v1/jobs/" + job);
    if (!j.ok()) return report(j.status());
    auto m = ctx.get(fmt::format("/api/v1/jobs/{}/metrics?limit=10000", job));
    if (!m.ok()) return report(m.status());
    const Json& rows = (*m)["metrics"];
    // Mean of `key` over the last `last` steps that report it; nullopt when none does.
    auto mean = [&](const char* key, size_t last) -> std::optional<double> {
        double sum = 0;
        size_t n = 0;
        for (size_t i = rows.size() > last ? rows.size() - last : 0; i < rows.size(); ++i) {
            const Json& v = rows[i]["values"];
            if (v.contains(key) && v[key].is_number()) {
                sum += v[key].get<double>();
                ++n;
            }
        }
        if (n == 0) return std::nullopt;
        return sum / static_cast<double>(n);
    };
    const size_t all = rows.size();
    Json out = {{"job", str(*j, "job")},
                {"state", str(*j, "state")},
                {"steps", all},
                {"versions_published", (*j)["versions"]}};
    auto put = [&](const char* name, std::optional<double> v) {
        if (v) out[name] = *v;
    };
    if (all && rows[0]["values"].contains("rollout/reward_mean"))
        out["reward_first"] = rows[0]["values"]["rollout/reward_mean"];
    put("reward_last5_mean", mean("rollout/reward_mean", 5));
    put("weight_sync_wait_mean_s", mean("timing_s/weight_sync_wait", all));
    put("weight_fetch_mean_s", mean("timing_s/weight_fetch", all));
    put("publish_mean_s", mean("timing_s/publish", all));
    put("step_mean_s", mean("timing_s/step", all));
    put("rollout_tokens_per_s_mean", mean("throughput/rollout_tokens_per_s", all));
    const bool has_step = out.contains("step_mean_s") && out["step_mean_s"].get<double>() > 0;
    if (out.contains("weight_sync_wait_mean_s") && has_step) {
        out["weight_sync_fraction"] =
            out["weight_sync_wait_mean_s"].get<double>() / out["step_mean_s"].get<double>();
    }
    if (json_output(args)) return std::cout << out.dump(2) << "\n", final_code(*j);
    auto ms = [&](const char* name) { return out[name].get<double>() * 1e3; };
    const int64_t started = (*j)["started_ns"].get<int64_t>();
    const int64_t finished = (*j)["finished_ns"].get<int64_t>();
    const std::string wall = started > 0 && finished >= started
                                 ? " in " + format_duration_s((finished - started) / 1e9)
                                 : "";
    std::cout << fmt::format("{} {}: {} steps{}\n", str(*j, "job"), str(*j, "state"), all, wall);
    if (out.contains("reward_first") && out.contains("reward_last5_mean")) {
        std::cout << fmt::format("  reward: first step {:.3f}, mean of the last 5 steps {:.3f}\n",
                                 out["reward_first"].get<double>(),
                                 out["reward_last5_mean"].get<double>());
    }
    if ((*j)["versions"].get<int64_t>() > 0)
        std::cout << fmt::format("  versions published: {}\n", (*j)["versions"].get<int64_t>());
    if (out.contains("weight_sync_wait_mean_s")) {
        std::string line =
            fmt::format("  mean weight sync wait {:.1f} ms", ms("weight_sync_wait_mean_s"));
        if (out.contains("weight_sync_fraction"))
            line += fmt::format(" ({:.1f}% of a step)",
                                out["weight_sync_fraction"].get<double>() * 100);
        if (out.contains("weight_fetch_mean_s"))
            line += fmt::format(", fetch {:.1f} ms", ms("weight_fetch_mean_s"));
        if (out.contains("publish_mean_s"))
            line += fmt::format(", publish {:.1f} ms", ms("publish_mean_s"));
        std::cout << line << "\n";
    }
    if (has_step) {
        std::string line = fmt::format("  mean time per step {:.0f} ms", ms("step_mean_s"));
        if (out.contains("rollout_tokens_per_s_mean"))
            line += fmt::format(", rollout {:.0f} tokens/s",
                                out["rollout_tokens_per_s_mean"].get<double>());
        std::cout << line << "\n";
    }
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
    if (sub == "submit") return submit(*args);  // checks the file before it needs a cluster
    auto ctx = cluster_context(*args);
    if (!ctx.ok()) return report(ctx.status());
    if (sub == "list") return list(*ctx, *args);
    const std::string job = *need_job();
    const bool follows = args->has("--follow");
    if (follows && sub != "status" && sub != "events" && sub != "logs") {
        std::cerr << "tandem job " << sub
                  << ": --follow applies to submit, status, events and logs\n"
                  << kJobUsage;
        return kExitUsage;
    }
    if (sub == "status") return follows ? follow(*ctx, job) : status(*ctx, *args, job);
    if (sub == "logs") return logs(*ctx, *args, job);
    if (sub == "summary") return summary(*ctx, *args, job);
    if (sub == "events" && follows) return follow_events(*ctx, job);
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
    // The coordinator records readers only when they join a relay tree (rollout.replicas >
    // rollout.relay_fanout); readers that lease from the publisher directly are known to the
    // publisher alone. So the last column counts relay-tree readers, "-" for none.
    std::cout << fmt::format("{:>8}  {:<19}  {:<11}  {:>12}  {:<18}  {:<24}  {}\n", "VERSION",
                             "PUBLISHED", "STATE", "BYTES", "FINGERPRINT", "PUBLISHERS",
                             "RELAY READERS");
    bool any_relays = false;
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
            pubs, relays.empty() ? std::string("-") : std::to_string(relays.size()));
        any_relays = any_relays || !relays.empty();
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
    if (!any_relays && !(*r)["versions"].empty()) {
        std::cout << "(no relay tree: every reader fetched from the publishers, which hold the "
                     "leases; the coordinator lists readers only when they relay)\n";
    }
    return kExitOk;
}

}  // namespace tandem::cli
