#include "coordinator/dashboard.h"

#include <filesystem>

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
