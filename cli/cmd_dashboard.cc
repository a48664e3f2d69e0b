// `tandem dashboard [--run-dir DIR] [--state-dir DIR] [--port P] [--bind ADDR]`: the dashboard of
// a stopped cluster, read-only, from its state directory (coordinator/history_server.h).
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/context.h"
#include "common/log.h"
#include "coordinator/history_server.h"

namespace tandem::cli {

namespace {

constexpr const char* kDashboardUsage =
    "usage: tandem dashboard [--run-dir DIR] [--state-dir DIR] [--port P] [--bind ADDR]\n"
    "  Serves the dashboard of a stopped cluster from its state directory (default\n"
    "  RUN_DIR/state, RUN_DIR default .tandem), read-only, on http://ADDR:P (default\n"
    "  127.0.0.1:7690; --port 0 picks a free port). Ctrl-C stops it.\n";

}  // namespace

int cmd_dashboard(const std::vector<std::string>& argv) {
    ArgSpec spec{.flags = {"--help"},
                 .options = {"--run-dir", "--state-dir", "--port", "--bind", "--web-dir"}};
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem dashboard"));
    if (args->has("--help")) return std::cout << kDashboardUsage, kExitOk;
    if (!args->positional.empty()) return std::cerr << kDashboardUsage, kExitUsage;
    coord::HistoryOptions o;
    const std::string run_dir = args->get("--run-dir").value_or(".tandem");
    o.state_dir = args->get("--state-dir").value_or(run_dir + "/state");
    o.run_dir = run_dir;
    o.bind = args->get("--bind").value_or(o.bind);
    o.web_dir = args->get("--web-dir").value_or("");
    if (auto p = args->get("--port")) {
        int port = -1;
        try {
            size_t used = 0;
            port = std::stoi(*p, &used);
            if (used != p->size()) port = -1;
        } catch (const std::exception&) {
            port = -1;
        }
        if (port < 0 || port > 65535) {
            std::cerr << fmt::format("tandem dashboard: --port: expected 0..65535, got \"{}\"\n",
                                     *p);
            return kExitUsage;
        }
        o.port = static_cast<uint16_t>(port);
    }
    // The managers log what they restore at info; only warnings belong on this console.
    LogOptions log_options;
    log_options.console_level = LogLevel::kWarn;
    if (Status s = init_logging(log_options); !s.ok()) return report(s);
    Status s = coord::serve_history(o, [&](const std::string& url) {
        std::cout << fmt::format("tandem dashboard: {} (read-only, from {}); Ctrl-C stops\n", url,
                                 o.state_dir)
                  << std::flush;
    });
    shutdown_logging();
    if (!s.ok()) return report(s.with_context("tandem dashboard"));
    return kExitOk;
}

}  // namespace tandem::cli
