#pragma once

// The dashboard over a stopped cluster (`tandem dashboard --run-dir DIR`): reads the coordinator's
// state directory (jobs, actors, events, logs, metrics, versions, nodes as last recorded) into the
// same managers the coordinator uses and serves the dashboard and the API's read endpoints on
// loopback, with a fresh viewer token; nothing is written and no agent is contacted. Runs its
// own Boost.Asio loop on the calling thread until SIGINT or SIGTERM.

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"

namespace tandem::coord {

struct HistoryOptions {
    std::string state_dir;  // holds state.db
    std::string bind = "127.0.0.1";
    uint16_t port = 7690;  // 0: any free port
    std::string web_dir;   // empty: Dashboard::default_web_dir()
    std::string run_dir;   // logs/ and jobs/ for the logs page and trainer metrics; empty: none
};

// `on_listening(url)` is called once the port is open; the URL carries the viewer token as
// ?token=... (the pages keep it). Returns when stopped by a signal, or the error that kept it from
// serving.
Status serve_history(const HistoryOptions& options,
                     const std::function<void(const std::string& url)>& on_listening);

}  // namespace tandem::coord
