#include "coordinator/http_api.h"

#include <charconv>

#include <fmt/format.h>

#include "common/version.h"
#include "coordinator/json_depth.h"

namespace tandem::coord {

namespace {

HttpResponse json_response(int status, const Json& j) {
    // Error messages quote the request path, which need not be UTF-8: replace such bytes.
    return {status, "application/json", j.dump(-1, ' ', false, Json::error_handler_t::replace)};
}
HttpResponse error_response(int status, const std::string& message) {
    return json_response(status, {{"error", message}});
}
HttpResponse from_status(const Status& s) {
    switch (s.code()) {
        case StatusCode::kInvalidArgument:
            return error_response(400, s.message());
        case StatusCode::kNotFound:
            return error_response(404, s.message());
        case StatusCode::kPermissionDenied:
            return error_response(403, s.message());
        case StatusCode::kAlreadyExists:
            return error_response(409, s.message());
        default:
            return error_response(500, s.message());
    }
}
HttpResponse forbidden(const HttpRequest& r, const Principal& who, Role need) {
    return error_response(403, fmt::format("token '{}' has role {}; {} {} needs {}", who.name,
                                           role_name(who.role), r.method, r.path, role_name(need)));
}
// A request body is JSON when it says so or says nothing (curl -d sends form encoding: refused).
bool body_is_json(const HttpRequest& r) {
    if (r.content_type.empty()) return true;
    const std::string_view t(r.content_type);
    return t.substr(0, t.find(';')) == "application/json";
}
HttpResponse unsupported_media_type() {
    return error_response(415, "the request body must be JSON (Content-Type: application/json)");
}
HttpResponse too_deep(const ApiSettings& s) {
    return error_response(
        400, fmt::format("the request body nests deeper than {} levels", s.max_json_depth));
}
// A version's JSON without what lets a reader fetch it: the UCX worker addresses, remote keys and
// addresses, the shared-memory paths and CUDA IPC handles of its shards and relay sources (sizes,
// publishers and the fingerprint stay).
Json redacted(Json v) {
    static constexpr const char* kCapabilities[] = {
        "worker_address",  "rkey",        "remote_address",       "shm_path",
        "cuda_ipc_handle", "device_rkey", "device_remote_address"};
    auto strip = [](Json& o) {
        if (!o.is_object()) return;
        for (const char* k : kCapabilities) o.erase(k);
    };
    if (v.contains("descriptor") && v["descriptor"].is_object() &&
        v["descriptor"].contains("shards") && v["descriptor"]["shards"].is_array()) {
        for (auto& shard : v["descriptor"]["shards"]) strip(shard);
    }
    if (v.contains("relays") && v["relays"].is_array()) {
        for (auto& relay : v["relays"]) {
            if (relay.is_object() && relay.contains("relay_source")) strip(relay["relay_source"]);
        }
    }
    return v;
}
int64_t query_int(const HttpRequest& r, const std::string& key, int64_t fallback) {
    auto it = r.query.find(key);
    if (it == r.query.end()) return fallback;
    try {
        return std::stoll(it->second);
    } catch (...) {
        return fallback;
    }
}

}  // namespace

HttpApi::HttpApi(const Clock& clock, JobManager& jobs, const NodeRegistry& nodes,
                 const VersionTable& versions, StateStore& store, Metrics& metrics, Auth& auth,
                 ApiSettings settings)
    : clock_(clock),
      jobs_(jobs),
      nodes_(nodes),
      versions_(versions),
      store_(store),
      metrics_(metrics),
      auth_(auth),
      settings_(std::move(settings)),
      log_("http"),
      started_(clock.now()) {
    metrics_.describe_counter("tandem_http_requests_total", "HTTP API requests by status class");
}

HttpResponse HttpApi::handle(const HttpRequest& r) {
    HttpResponse out;
    if (r.path == "/healthz") {
        out = {200, "text/plain", "ok\n"};
    } else if (AuthDecision d = auth_.check(r, Role::kScrape); !d.ok()) {
        // Unauthenticated requests learn nothing, not even which endpoints exist.
        log_.warn("{} from {} refused: {}", r.method, r.remote, d.error);
        out = d.response();
    } else {
        out = route(r, d.who);
        if (out.status == 403)
            log_.warn("{} {} from {} refused: token '{}' ({})", r.method, r.path, r.remote,
                      d.who.name, role_name(d.who.role));
    }
    metrics_.inc("tandem_http_requests_total", {{"code", fmt::format("{}xx", out.status / 100)}});
    return out;
}

HttpResponse HttpApi::route(const HttpRequest& r, const Principal& who) {
    const std::string& p = r.path;
    if (p == "/metrics") return {200, "text/plain; version=0.0.4", metrics_.render()};
    if (!role_allows(who.role, Role::kViewer)) return forbidden(r, who, Role::kViewer);
    if (p == "/api/v1/cluster" && r.method == "GET") {
        Json nodes = {{"alive", 0}, {"dead", 0}};
        for (const auto& [id, e] : nodes_.entries()) {
            nodes[e.record.state == NodeState::kAlive ? "alive" : "dead"] =
                nodes[e.record.state == NodeState::kAlive ? "alive" : "dead"].get<int>() + 1;
        }
        Json jobs = Json::object();
        for (const auto& [id, j] : jobs_.jobs()) {
            const std::string s(job_state_name(j.state));
            jobs[s] = jobs.value(s, 0) + 1;
        }
        return json_response(200, {{"name", settings_.cluster_name},
                                   {"version", kVersion},
                                   {"epoch", settings_.epoch},
                                   {"uptime_s", seconds_between(started_, clock_.now())},
                                   {"nodes", nodes},
                                   {"jobs", jobs}});
    }
    if (p == "/api/v1/nodes" && r.method == "GET") {
        const auto caps = jobs_.capacities();
        Json list = Json::array();
        for (const auto& [id, e] : nodes_.entries()) list.push_back(node_json(e, caps));
        return json_response(200, {{"nodes", list}, {"coordinator_version", kVersion}});
    }
    if (p == "/api/v1/jobs") {
        if (r.method == "POST") {
            if (!role_allows(who.role, Role::kSubmitter))
                return forbidden(r, who, Role::kSubmitter);
            return submit(r, who);
        }
        if (r.method != "GET") return error_response(405, "use GET or POST");
        Json list = Json::array();
        for (const auto& [id, j] : jobs_.jobs()) list.push_back(job_json(j, false));
        return json_response(200, {{"jobs", list}});
    }
    if (p == "/api/v1/tokens") {
        if (r.method != "POST") return error_response(405, "use POST");
        if (!role_allows(who.role, Role::kAdmin)) return forbidden(r, who, Role::kAdmin);
        return create_token(r);
    }
    constexpr std::string_view kJobs = "/api/v1/jobs/";
    if (p.starts_with(kJobs)) {
        std::string rest = p.substr(kJobs.size());
        const auto slash = rest.find('/');
        const std::string job = rest.substr(0, slash);
        return job_route(r, who, job, slash == std::string::npos ? "" : rest.substr(slash + 1));
    }
    return error_response(404, fmt::format("no such endpoint: {} {}", r.method, p));
}

HttpResponse HttpApi::create_token(const HttpRequest& r) {
    if (!body_is_json(r)) return unsupported_media_type();
    if (!json_depth_within(r.body, settings_.max_json_depth)) return too_deep(settings_);
    const Json body = Json::parse(r.body, nullptr, false);
    const auto role = body.is_object() && body.value("role", Json()).is_string()
                          ? parse_role(body["role"].get<std::string>())
                          : std::nullopt;
    if (!role || (body.contains("name") && !body["name"].is_string())) {
        return error_response(
            400, R"(expected {"role": "scrape|viewer|submitter|actor|admin", "name": "..."})");
    }
    auto token = auth_.create(*role, body.value("name", std::string()));
    if (!token.ok()) return from_status(token.status());
    log_.info("created a {} token", role_name(*role));
    return json_response(201, {{"role", std::string(role_name(*role))}, {"token", *token}});
}

std::string HttpApi::owner_of(JobId job) {
    if (auto it = owners_.find(job); it != owners_.end()) return it->second;
    auto ev = store_.events(job, 0, 20);  // the owner event follows the submitted one
    if (!ev.ok()) return "";
    for (const auto& e : *ev) {
        if (e.kind == "owner") return owners_[job] = e.message;
    }
    return owners_[job] = "";
}

HttpResponse HttpApi::submit(const HttpRequest& r, const Principal& who) {
    if (!body_is_json(r)) return unsupported_media_type();
    if (!json_depth_within(r.body, settings_.max_json_depth)) return too_deep(settings_);
    const Json body = Json::parse(r.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("spec_yaml") ||
        !body["spec_yaml"].is_string() ||
        (body.contains("dry_run") && !body["dry_run"].is_boolean()) ||
        (body.contains("source") && !body["source"].is_string())) {
        return error_response(400,
                              R"(expected a JSON object {"spec_yaml": "...", "dry_run": false})");
    }
    const bool dry_run = body.value("dry_run", false);
    const std::string source = body.value("source", std::string("submitted spec"));
    auto res = jobs_.submit(body["spec_yaml"].get<std::string>(), source, dry_run);
    if (!res.ok()) return from_status(res.status());
    Json out = {{"spec_yaml", res->spec_yaml}, {"pending_reason", res->pending_reason}};
    if (res->plan) {
        out["plan"] = *res->plan;
    } else {
        out["plan"] = nullptr;
    }
    if (dry_run) return json_response(200, out);
    out["job"] = res->id.str();
    if (auto seq = store_.append_event(res->id, {0, clock_.wall_ns(), "owner", who.name}); seq.ok())
        owners_[res->id] = who.name;
    if (const JobRecord* j = jobs_.find(res->id)) out["state"] = job_state_name(j->state);
    return json_response(201, out);
}

HttpResponse HttpApi::job_route(const HttpRequest& r, const Principal& who, const std::string& name,
                                const std::string& rest) {
    const JobRecord* j = jobs_.find(name);
    if (!j) return error_response(404, fmt::format("no job {}", name));
    if (rest.empty() && r.method == "GET") return json_response(200, job_json(*j, true));
    if (rest == "cancel" && r.method == "POST") {
        if (!role_allows(who.role, Role::kSubmitter)) return forbidden(r, who, Role::kSubmitter);
        if (who.role != Role::kAdmin && owner_of(j->id) != who.name) {
            return error_response(403, fmt::format("token '{}' may cancel only the jobs it "
                                                   "submitted; {} was not",
                                                   who.name, j->id.str()));
        }
        if (Status s = jobs_.cancel(j->id, "cancelled by the user"); !s.ok()) return from_status(s);
        return json_response(200, job_json(*jobs_.find(j->id), false));
    }
    if (r.method != "GET") return error_response(405, "use GET");
    // Descriptors carry the publishers' remote keys: capabilities for the job's own actors.
    const bool descriptors = role_allows(who.role, Role::kActor);
    if (rest.starts_with("versions/") && !descriptors) return forbidden(r, who, Role::kActor);
    const int64_t after = query_int(r, "after", 0);
    const int limit = static_cast<int>(std::clamp<int64_t>(query_int(r, "limit", 1000), 1, 10000));
    if (rest == "events") {
        auto ev = store_.events(j->id, after, limit);
        if (!ev.ok()) return from_status(ev.status());
        Json list = Json::array();
        for (const auto& e : *ev) {
            list.push_back(
                {{"seq", e.seq}, {"ts_ns", e.ts_ns}, {"kind", e.kind}, {"message", e.message}});
        }
        return json_response(200, {{"job", j->id.str()}, {"events", list}});
    }
    if (rest == "logs") {
        auto lines = store_.logs(j->id, after, limit);
        if (!lines.ok()) return from_status(lines.status());
        Json list = Json::array();
        for (const auto& l : *lines) {
            list.push_back({{"seq", l.seq},
                            {"ts_ns", l.ts_ns},
                            {"actor", l.actor},
                            {"level", l.level},
                            {"msg", l.msg}});
        }
        return json_response(200, {{"job", j->id.str()}, {"logs", list}});
    }
    if (rest == "metrics") {
        auto m = store_.metrics(j->id, after, limit);
        if (!m.ok()) return from_status(m.status());
        Json list = Json::array();
        for (const auto& [step, values] : *m) list.push_back({{"step", step}, {"values", values}});
        return json_response(200, {{"job", j->id.str()}, {"metrics", list}});
    }
    if (rest == "versions/latest") {
        // What rollouts poll before every batch: one descriptor, not the whole table.
        const auto latest = versions_.latest(j->id);
        if (!latest) {
            // Distinguish "nothing published yet" from "every version was retired" (a finished
            // job's publishers are gone): the newest record says which and why.
            const auto all = versions_.list(j->id);
            if (all.empty())
                return error_response(404,
                                      fmt::format("{} has no published version yet", j->id.str()));
            const VersionRecord& newest = all.back();
            std::string why(version_state_name(newest.state));
            if (!newest.reason.empty()) why += " (" + newest.reason + ")";
            return error_response(
                404, fmt::format("{} has no available version: the newest, v{}, is {}", j->id.str(),
                                 newest.version, why));
        }
        return json_response(200, {{"job", j->id.str()},
                                   {"version", latest->version},
                                   {"published_ns", latest->published_ns},
                                   {"available", latest->available},
                                   {"descriptor", latest->descriptor}});
    }
    if (rest == "versions") {
        // versions?after=V: only the versions above V (the dashboard polls what is new).
        const int64_t after_version = query_int(r, "after", -1);
        Json list = Json::array();
        for (const auto& v : versions_.list(j->id)) {
            if (static_cast<int64_t>(v.version) <= after_version) continue;
            list.push_back(descriptors ? version_json(v) : redacted(version_json(v)));
        }
        return json_response(200, {{"job", j->id.str()}, {"versions", list}});
    }
    if (rest.starts_with("versions/")) return version_route(r, j->id, rest.substr(9));
    return error_response(404, fmt::format("no such endpoint: {} {}", r.method, r.path));
}

HttpResponse HttpApi::version_route(const HttpRequest& r, JobId job, const std::string& rest) {
    // versions/V: one version for a reader (410 naming why if it is retired or unavailable);
    // versions/V/source?reader=R: where reader R reads V from in the relay tree.
    const auto slash = rest.find('/');
    const std::string number = rest.substr(0, slash);
    const std::string sub = slash == std::string::npos ? "" : rest.substr(slash + 1);
    Version version = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), version);
    if (number.empty() || ec != std::errc() || end != number.data() + number.size()) {
        return error_response(404, fmt::format("no such endpoint: {} {}", r.method, r.path));
    }
    auto gone = [](const Status& s) {
        return error_response(s.code() == StatusCode::kUnavailable ? 410 : 404, s.message());
    };
    if (sub.empty()) {
        auto v = versions_.get(job, version);
        if (!v.ok()) return gone(v.status());
        Json out = version_json(*v);
        out["job"] = job.str();
        return json_response(200, out);
    }
    if (sub == "source") {
        auto it = r.query.find("reader");
        if (it == r.query.end() || it->second.empty())
            return error_response(400, "versions/V/source needs ?reader=ACTOR");
        auto a = versions_.relay_assignment(job, version, it->second);
        if (!a.ok()) return gone(a.status());
        return json_response(
            200, {{"job", job.str()},
                  {"version", version},
                  {"reader", a->link.reader},
                  {"parent", a->link.parent.empty() ? Json(nullptr) : Json(a->link.parent)},
                  {"depth", a->link.depth},
                  {"source", a->source}});
    }
    return error_response(404, fmt::format("no such endpoint: {} {}", r.method, r.path));
}

Json HttpApi::job_json(const JobRecord& j, bool detail) const {
    Json out = {{"job", j.id.str()},
                {"name", j.spec.name},
                {"kind", config::enum_name(j.spec.kind)},
                {"state", job_state_name(j.state)},
                {"reason", j.reason},
                {"priority", j.spec.priority},
                {"submitted_ns", j.submitted_ns},
                {"started_ns", j.started_ns},
                {"finished_ns", j.finished_ns},
                {"restarts_used", j.restarts_used},
                {"max_actor_restarts", j.spec.max_actor_restarts},
                {"step", j.step},
                {"versions", versions_.count(j.id)}};
    Json progress = nullptr;
    double min_fraction = 1.0;
    bool any = false;
    for (const auto& a : j.actors) {
        if (a.progress.is_object() && a.progress.contains("fraction") &&
            a.progress["fraction"].is_number()) {
            min_fraction = std::min(min_fraction, a.progress["fraction"].get<double>());
            any = true;
        }
    }
    if (any) progress = min_fraction;
    out["progress"] = progress;
    if (const auto latest = versions_.latest(j.id)) out["latest_version"] = latest->version;
    if (!detail) return out;
    out["metrics"] = j.last_metrics;
    out["spec_yaml"] = j.spec_yaml;
    Json actors = Json::array();
    for (const auto& a : j.actors) {
        actors.push_back({{"actor", a.name()},
                          {"node", a.node},
                          {"attempt", a.attempt},
                          {"phase", wire::actor_phase_name(a.phase)},
                          {"exit_code", a.exit_code},
                          {"last_error", a.last_error},
                          {"progress", a.progress},
                          {"endpoints", a.endpoints}});
    }
    out["actors"] = actors;
    return out;
}

Json HttpApi::node_json(const NodeRegistry::Entry& e, const std::vector<NodeCapacity>& caps) const {
    Json free = nullptr;
    int actors = 0;
    for (const auto& c : caps) {
        if (c.id != e.record.id) continue;
        free = {{"cpus", c.free_cpus}, {"memory_mb", c.free_memory_mb}, {"gpus", c.free_gpus}};
        actors = c.actors;
    }
    const double ago = e.record.last_seen_ns
                           ? static_cast<double>(clock_.wall_ns() - e.record.last_seen_ns) / 1e9
                           : -1;
    return {{"id", e.record.id},
            {"role", e.record.role},
            {"host", e.record.host},
            {"state", node_state_name(e.record.state)},
            {"connected", !e.routing_id.empty()},
            {"resources", e.record.resources.to_json()},
            {"free", free},
            {"actors", actors},
            {"labels", e.record.labels},
            {"agent_version", e.record.agent_version},
            // Another release than the coordinator's (same protocol major): left to upgrade.
            {"version_skew", !e.record.agent_version.empty() && e.record.agent_version != kVersion},
            {"last_seen_s_ago", ago},
            {"dead_reason", e.record.dead_reason}};
}

}  // namespace tandem::coord
