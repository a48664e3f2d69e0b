#pragma once

// Dashboard: the web pages served at `/` beside the API (docs/monitoring.md). The pages are static
// files (HTML, JavaScript, CSS and the vendored uPlot chart library) copied into the build's
// share/tandem/web by CMake; they hold no cluster data and load everything from the API with the
// token the user gives them, so serving them needs no token. Paths: `/` (index.html) and `/ui/*`.
// Also `GET /ui/mode.json`: {"mode": "live"|"history"} so the pages know whether to poll.
//
// One data endpoint the API lacks, for the logs page, behind a viewer token like the API's reads:
//   GET /api/v1/process-logs              {"processes": [{"process": "coordinator", "bytes": N}]}
//   GET /api/v1/process-logs/NAME?offset=B  lines of RUN_DIR/logs/NAME.jsonl from byte B (negative:
//       the last -B bytes), at most 1 MiB of whole lines: {"process", "offset", "next_offset",
//       "bytes", "lines": [{"ts", "level", "component", "msg", "node", "job", "actor", ...}]}
//   GET /api/v1/trainer-metrics/JOB?offset=B  the same over RUN_DIR/jobs/JOB/metrics.jsonl, the
//       built-in trainer's every step with the histograms the coordinator does not get
//       (weights/staleness_hist); {"available": false} when the trainer wrote it elsewhere
// Stateless after construction: handle() is called from the coordinator loop only, and reads the
// files on every request (a few KiB; the vendored library ~50 KiB; logs at most 1 MiB).

#include <optional>
#include <string>

#include "coordinator/auth.h"
#include "coordinator/http_server.h"

namespace tandem::coord {

struct DashboardSettings {
    std::string web_dir;         // the pages; empty: default_web_dir()
    bool history = false;        // serving a stopped cluster's state (`tandem dashboard`)
    std::string run_dir;         // RUN_DIR (logs/, jobs/); empty: no process logs
    const Auth* auth = nullptr;  // checks the process-log requests (viewer); null: unchecked
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
    HttpResponse process_logs(const HttpRequest& r) const;
    HttpResponse trainer_metrics(const HttpRequest& r) const;

    DashboardSettings settings_;
};

}  // namespace tandem::coord
