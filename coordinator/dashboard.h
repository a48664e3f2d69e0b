#pragma once

// Dashboard: the web pages served at `/` beside the API (docs/monitoring.md). The pages are static
// files (HTML, JavaScript, CSS and the vendored uPlot chart library) copied into the build's
// share/tandem/web by CMake; they hold no cluster data and load everything from the API with the
// token the user gives them, so serving them needs no token. Paths: `/` (index.html) and `/ui/*`.
// Also `GET /ui/mode.json`: {"mode": "live"|"history"} so the pages know whether to poll.
// Stateless after construction: handle() may be called from the coordinator loop only, and reads
// the files on every request (a few KiB; the vendored library ~50 KiB).

#include <optional>
#include <string>

#include "coordinator/http_server.h"

namespace tandem::coord {

struct DashboardSettings {
    std::string web_dir;   // the pages; empty: default_web_dir()
    bool history = false;  // serving a stopped cluster's state (`tandem dashboard`)
};

class Dashboard {
public:
    explicit Dashboard(DashboardSettings settings);

    // The reply for a dashboard path, or nullopt when `r` is not one (the API routes it).
    std::optional<HttpResponse> handle(const HttpRequest& r) const;

    const std::string& web_dir() const { return settings_.web_dir; }
    // <directory of this executable>/../share/tandem/web (the build and install layout).
    static std::string default_web_dir();

private:
    HttpResponse file(const std::string& relative) const;

    DashboardSettings settings_;
};

}  // namespace tandem::coord
