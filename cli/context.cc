#include "cli/context.h"

#include <cstdlib>
#include <ctime>
#include <iostream>

#include <fmt/format.h>

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
        case 401:
            return permission_denied(msg);
        case 404:
            return not_found(msg);
        default:
            return internal_error(fmt::format("{}: HTTP {}: {}", what, r->status, msg));
    }
}
}  // namespace

Result<Json> ClusterContext::get(const std::string& target) const {
    return parse_reply("GET " + target, http_call(address, "GET", target, "", token));
}

Result<Json> ClusterContext::post(const std::string& target, const Json& body) const {
    return parse_reply("POST " + target, http_call(address, "POST", target, body.dump(), token));
}

Result<ClusterContext> cluster_context(const Args& args) {
    ClusterContext c;
    c.run_dir = args.get("--run-dir").value_or(".tandem");
    const RunDir run(c.run_dir);
    if (auto t = read_file(run.token_path()); t.ok()) {
        c.token = *t;
        while (!c.token.empty() && c.token.back() == '\n') c.token.pop_back();
    }
    if (auto a = args.get("--address")) {
        c.address = *a;
    } else if (const char* env = std::getenv("TANDEM_ADDRESS"); env && *env) {
        c.address = env;
    } else {
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
