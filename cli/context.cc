#include "cli/context.h"

#include <cstdlib>
#include <ctime>
#include <iostream>

#include <fmt/format.h>

#include "cli/processes.h"
#include "common/run_dir.h"

namespace tandem::cli {

namespace {
Result<Json> parse_reply(const std::string& what, const Result<HttpReply>& r) {
    if (!r.ok()) return r.status();
    auto j = Json::parse(r->body, nullptr, false);
    if (r->status >= 200 && r->status < 300) {
        if (j.is_discarded()) return internal_error(fmt::format("{}: the reply is not JSON", what));
        return j;
    }
    const std::string msg =
        !j.is_discarded() && j.contains("error") ? j["error"].get<std::string>() : r->body;
    switch (r->status) {
        case 400:
            return invalid_argument(msg);
        case 401:  // no or a wrong token
        case 403:  // a token whose role may not do this
            return permission_denied(msg);
        case 404:
            return not_found(msg);
        default:
            return internal_error(fmt::format("{}: HTTP {}: {}", what, r->status, msg));
    }
}

std::string trim_newlines(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

// Says what to do about a failed request: a coordinator of the run directory that is gone, a
// token the coordinator refused.
Status explain(const ClusterContext& c, const Status& s) {
    if (s.code() == StatusCode::kUnavailable && c.address_from_run_dir) {
        const RunDir run(c.run_dir);
        const std::string pid = trim_newlines(read_file(run.pid_path("coordinator")).value_or(""));
        if (!running_pid(run.pid_path("coordinator"), "tandem-coordinator")) {
            const std::string cluster =
                trim_newlines(read_file(run.root() + "/cluster-file").value_or("CLUSTER.yaml"));
            return unavailable(fmt::format(
                "the coordinator of {} ({}{}) is not running any more; start it again with "
                "`tandem up -f {}` (agents and running actors reconnect)",
                run.root(), c.address, pid.empty() ? "" : ", pid " + pid, cluster));
        }
    }
    if (s.code() == StatusCode::kPermissionDenied) {
        return permission_denied(fmt::format(
            "{}: the coordinator at {} refused {}; pass --token TOKEN or set TANDEM_TOKEN to the "
            "cluster's token (RUN_DIR/api-token on the machine that ran `tandem up`)",
            s.message(), c.address,
            c.token_source.empty() ? "a request without an API token"
                                   : "the API token from " + c.token_source));
    }
    return s;
}
}  // namespace

Result<Json> ClusterContext::get(const std::string& target) const {
    auto r = parse_reply("GET " + target, http_call(address, "GET", target, "", token));
    if (!r.ok()) return explain(*this, r.status());
    return r;
}

Result<Json> ClusterContext::post(const std::string& target, const Json& body) const {
    auto r = parse_reply("POST " + target, http_call(address, "POST", target, body.dump(), token));
    if (!r.ok()) return explain(*this, r.status());
    return r;
}

Result<ClusterContext> cluster_context(const Args& args) {
    const std::string output = args.get("--output").value_or("text");
    if (output != "text" && output != "json") {
        return invalid_argument(fmt::format("--output: expected text or json, got \"{}\"", output));
    }
    ClusterContext c;
    c.run_dir = args.get("--run-dir").value_or(".tandem");
    const RunDir run(c.run_dir);
    if (auto t = args.get("--token")) {
        c.token = *t;
        c.token_source = "--token";
    } else if (const char* env = std::getenv("TANDEM_TOKEN"); env && *env) {
        c.token = env;
        c.token_source = "TANDEM_TOKEN";
    } else if (auto text = read_file(run.token_path()); text.ok()) {
        c.token = trim_newlines(*text);
        c.token_source = run.token_path();
    }
    if (auto a = args.get("--address")) {
        c.address = *a;
    } else if (const char* env = std::getenv("TANDEM_ADDRESS"); env && *env) {
        c.address = env;
    } else {
        c.address_from_run_dir = true;
        auto text = read_file(run.address_path());
        if (!text.ok()) {
            return not_found(fmt::format(
                "no coordinator address: pass --address, set TANDEM_ADDRESS, or run `tandem up` "
                "(it writes {})",
                run.address_path()));
        }
        auto j = Json::parse(*text, nullptr, false);
        if (j.is_discarded() || !j.contains("http")) {
            return invalid_argument(
                fmt::format("{}: not a coordinator address file", run.address_path()));
        }
        c.address = j["http"].get<std::string>();
    }
    if (!c.address.starts_with("http://")) c.address = "http://" + c.address;
    return c;
}

int report(const Status& s) {
    std::cerr << "tandem: " << s.message() << "\n";
    return s.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailed;
}

bool json_output(const Args& args) { return args.get("--output").value_or("") == "json"; }

std::string format_time_ns(int64_t wall_ns) {
    if (wall_ns <= 0) return "-";
    const std::time_t t = static_cast<std::time_t>(wall_ns / 1'000'000'000);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::string format_duration_s(double s) {
    if (s < 0) return "-";
    if (s < 60) return fmt::format("{:.1f}s", s);
    if (s < 3600)
        return fmt::format("{}m{:02d}s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
    return fmt::format("{}h{:02d}m", static_cast<int>(s) / 3600, (static_cast<int>(s) % 3600) / 60);
}

}  // namespace tandem::cli
