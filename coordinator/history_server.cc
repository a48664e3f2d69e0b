#include "coordinator/history_server.h"

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "common/run_dir.h"
#include "coordinator/auth.h"
#include "coordinator/cluster_metrics.h"
#include "coordinator/dashboard.h"
#include "coordinator/http_api.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/state_store.h"
#include "coordinator/version_table.h"

namespace tandem::coord {

namespace {

// No agents in history mode: nothing is ever sent (the JobManager is never asked to schedule).
class NoAgents : public AgentLink {
public:
    Status send(const std::string& node_id, const wire::Envelope&) override {
        return unavailable(fmt::format("history mode: node {} is not reachable", node_id));
    }
};

}  // namespace

Status serve_history(const HistoryOptions& options,
                     const std::function<void(const std::string& url)>& on_listening) {
    TANDEM_ASSIGN_OR_RETURN(auto store, StateStore::open_existing(options.state_dir));
    TANDEM_ASSIGN_OR_RETURN(auto nodes, store->load_nodes());
    TANDEM_ASSIGN_OR_RETURN(auto jobs, store->load_jobs());

    const Clock& clock = SystemClock::instance();
    Metrics metrics;
    NodeRegistry registry(clock, *store, config::CoordinatorSpec{}, "");
    NoAgents agents;
    JobManager job_manager(clock, *store, registry, agents, metrics);
    VersionTable versions(clock, *store);
    for (const auto& j : jobs) {
        auto v = store->versions(j.id);
        if (v.ok()) versions.restore(j.id, std::move(*v));
    }
    registry.restore(std::move(nodes));
    job_manager.restore(std::move(jobs));
    register_cluster_metrics(metrics, clock, job_manager, registry, versions);

    TANDEM_ASSIGN_OR_RETURN(const std::string token, random_hex(16));
    Auth auth;
    auth.add(token, Role::kViewer, "history");
    HttpApi api(clock, job_manager, registry, versions, *store, metrics, auth,
                {"history of " + options.state_dir, store->epoch()});
    const Dashboard dashboard(
        {.web_dir = options.web_dir, .history = true, .run_dir = options.run_dir, .auth = &auth});

    boost::asio::io_context io;
    auto http = HttpServer::listen(io, options.bind, options.port, [&](const HttpRequest& r) {
        if (auto page = dashboard.handle(r)) return *page;
        if (r.method != "GET" && r.method != "HEAD") {
            return HttpResponse{
                405, "application/json",
                R"({"error": "tandem dashboard is read-only: the cluster is stopped"})"};
        }
        return api.handle(r);
    });
    if (!http.ok()) return http.status();
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
    on_listening(fmt::format("http://{}:{}/?token={}", options.bind, (*http)->port(), token));
    io.run();
    return Status();
}

}  // namespace tandem::coord
