#include "coordinator/dashboard.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "common/run_dir.h"

namespace tandem::coord {

namespace {

std::string content_type_of(const std::string& path) {
    const std::string ext = std::filesystem::path(path).extension().string();
    if (ext == ".html") return "text/html; charset=utf-8";
    if (ext == ".js") return "text/javascript; charset=utf-8";
    if (ext == ".css") return "text/css; charset=utf-8";
    if (ext == ".json") return "application/json";
    if (ext == ".svg") return "image/svg+xml";
    if (ext == ".png") return "image/png";
    return "application/octet-stream";
}

// A relative path of plain names: letters, digits, '.', '-', '_' and '/' between names; no "..",
// no leading '/' or '.'.
bool safe_relative(const std::string& p) {
    if (p.empty() || p.size() > 200 || p[0] == '/' || p[0] == '.') return false;
    if (p.find("..") != std::string::npos || p.find("//") != std::string::npos) return false;
    for (char c : p) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' || c == '/';
        if (!ok) return false;
    }
    return true;
}

HttpResponse text_reply(int status, const std::string& body) {
    return {status, "text/plain; charset=utf-8", body};
}

using Json = nlohmann::json;

HttpResponse json_reply(int status, const Json& j) {
    return {status, "application/json", j.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

constexpr std::string_view kProcessLogs = "/api/v1/process-logs";
constexpr std::string_view kTrainerMetrics = "/api/v1/trainer-metrics";
constexpr int64_t kMaxRead = 1 << 20;  // bytes per request

// ?offset=B (default 0); nullopt when it is not an integer.
std::optional<int64_t> query_offset(const HttpRequest& r) {
    auto it = r.query.find("offset");
    if (it == r.query.end()) return 0;
    int64_t v = 0;
    const auto [end, ec] =
        std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
    if (ec != std::errc() || end != it->second.data() + it->second.size()) return std::nullopt;
    return v;
}

// Whole JSON lines of `path` from byte `offset` (negative: the last -offset bytes, from the first
// line that starts in them), at most kMaxRead bytes: {offset, next_offset, bytes, lines}. A line
// that is not a JSON object comes as {"msg": line, "level": "info"}; an unterminated last line
// waits for the next read. nullopt when the file cannot be opened.
std::optional<Json> read_json_lines(const std::string& path, int64_t offset) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    in.seekg(0, std::ios::end);
    const int64_t size = in.tellg();
    bool skip_partial = false;
    if (offset < 0) {
        offset = std::max<int64_t>(0, size + offset);
        skip_partial = offset > 0;
    }
    offset = std::min(offset, size);
    std::string text(static_cast<size_t>(std::min(kMaxRead, size - offset)), '\0');
    in.seekg(offset);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
    size_t begin = 0;
    if (skip_partial) {
        const auto nl = text.find('\n');
        begin = nl == std::string::npos ? text.size() : nl + 1;
    }
    const auto last_nl = text.rfind('\n');
    const size_t end = last_nl == std::string::npos || last_nl < begin ? begin : last_nl + 1;
    Json lines = Json::array();
    for (size_t pos = begin; pos < end;) {
        const size_t nl = text.find('\n', pos);
        const std::string_view line(text.data() + pos, nl - pos);
        Json j = Json::parse(line, nullptr, false);
        if (j.is_object()) {
            lines.push_back(std::move(j));
        } else if (!line.empty()) {
            lines.push_back({{"msg", std::string(line)}, {"level", "info"}});
        }
        pos = nl + 1;
    }
    return Json{{"offset", offset},
                {"next_offset", offset + static_cast<int64_t>(end)},
                {"bytes", size},
                {"lines", std::move(lines)}};
}

}  // namespace

Dashboard::Dashboard(DashboardSettings settings) : settings_(std::move(settings)) {
    if (settings_.web_dir.empty()) settings_.web_dir = default_web_dir();
}

std::string Dashboard::default_web_dir() {
    std::error_code ec;
    const auto exe = std::filesystem::canonical("/proc/self/exe", ec);
    if (ec) return "share/tandem/web";
    return (exe.parent_path().parent_path() / "share" / "tandem" / "web").string();
}

std::optional<HttpResponse> Dashboard::handle(const HttpRequest& r) const {
    const std::string& p = r.path;
    const bool logs = p == kProcessLogs || p.starts_with(std::string(kProcessLogs) + "/");
    const bool trainer = p.starts_with(std::string(kTrainerMetrics) + "/");
    if (!settings_.run_dir.empty() && (logs || trainer)) {
        if (settings_.auth) {
            if (AuthDecision d = settings_.auth->check(r, Role::kViewer); !d.ok())
                return d.response();
        }
        if (r.method != "GET") return json_reply(405, {{"error", "use GET"}});
        return logs ? process_logs(r) : trainer_metrics(r);
    }
    const bool ours = p == "/" || p == "/index.html" || p.starts_with("/ui/");
    if (!ours) return std::nullopt;
    if (r.method != "GET" && r.method != "HEAD")
        return text_reply(405, "the dashboard is read-only\n");
    if (p == "/ui/mode.json") {
        return HttpResponse{
            200, "application/json",
            fmt::format(R"({{"mode": "{}"}})", settings_.history ? "history" : "live")};
    }
    return file(p.starts_with("/ui/") ? p.substr(4) : "index.html");
}

HttpResponse Dashboard::process_logs(const HttpRequest& r) const {
    namespace fs = std::filesystem;
    std::error_code ec;
    const std::string logs_dir = settings_.run_dir + "/logs";
    if (r.path == kProcessLogs) {
        Json list = Json::array();
        for (const auto& e : fs::directory_iterator(logs_dir, ec)) {
            if (e.path().extension() != ".jsonl" || !e.is_regular_file(ec)) continue;
            list.push_back({{"process", e.path().stem().string()}, {"bytes", e.file_size(ec)}});
        }
        std::sort(list.begin(), list.end(),
                  [](const Json& a, const Json& b) { return a["process"] < b["process"]; });
        return json_reply(200, {{"processes", list}});
    }
    const std::string name = r.path.substr(kProcessLogs.size() + 1);
    if (!safe_relative(name) || name.find('/') != std::string::npos)
        return json_reply(404, {{"error", fmt::format("no process log {}", name)}});
    auto offset = query_offset(r);
    if (!offset) return json_reply(400, {{"error", "offset: expected an integer"}});
    auto lines = read_json_lines(logs_dir + "/" + name + ".jsonl", *offset);
    if (!lines) return json_reply(404, {{"error", fmt::format("no process log {}", name)}});
    (*lines)["process"] = name;
    return json_reply(200, *lines);
}

HttpResponse Dashboard::trainer_metrics(const HttpRequest& r) const {
    const std::string job = r.path.substr(kTrainerMetrics.size() + 1);
    if (!safe_relative(job) || job.find('/') != std::string::npos)
        return json_reply(404, {{"error", fmt::format("no job {}", job)}});
    auto offset = query_offset(r);
    if (!offset) return json_reply(400, {{"error", "offset: expected an integer"}});
    auto lines = read_json_lines(settings_.run_dir + "/jobs/" + job + "/metrics.jsonl", *offset);
    if (!lines) {  // the trainer ran on another machine, or has not started: nothing to show
        return json_reply(200, {{"job", job}, {"available", false}, {"lines", Json::array()}});
    }
    (*lines)["job"] = job;
    (*lines)["available"] = true;
    return json_reply(200, *lines);
}

HttpResponse Dashboard::file(const std::string& relative) const {
    if (!safe_relative(relative)) return text_reply(404, "no such dashboard file\n");
    const std::string path = settings_.web_dir + "/" + relative;
    std::error_code ec;
    auto body = std::filesystem::is_regular_file(path, ec) ? read_file(path)
                                                           : Result<std::string>(not_found(path));
    if (!body.ok()) {
        if (!std::filesystem::exists(settings_.web_dir)) {
            return text_reply(503, fmt::format("the dashboard's files are not installed ({} is "
                                               "missing: build the tandem_web target)\n",
                                               settings_.web_dir));
        }
        return text_reply(404, fmt::format("no such dashboard file: {}\n", relative));
    }
    return {200, content_type_of(path), std::move(*body)};
}

}  // namespace tandem::coord
