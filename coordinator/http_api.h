#pragma once

// HttpApi: the coordinator's HTTP/JSON API (documented in docs/api.md): cluster status, nodes, jobs
// (submit, list, get, cancel, events, logs, metrics), versions, /healthz and /metrics. Mutating
// requests need the API token (`Authorization: Bearer TOKEN`). Owned by the coordinator loop; not
// thread-safe.

#include <string>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/http_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/state_store.h"
#include "coordinator/version_table.h"

namespace tandem::coord {

struct ApiSettings {
    std::string cluster_name;
    std::string token;  // required for POST; empty disables the check (tests only)
    uint64_t epoch = 0;
};

class HttpApi {
public:
    HttpApi(const Clock& clock, JobManager& jobs, const NodeRegistry& nodes,
            const VersionTable& versions, StateStore& store, Metrics& metrics,
            ApiSettings settings);

    HttpResponse handle(const HttpRequest& r);

private:
    HttpResponse route(const HttpRequest& r);
    HttpResponse job_route(const HttpRequest& r, const std::string& job, const std::string& rest);
    HttpResponse version_route(const HttpRequest& r, JobId job, const std::string& rest);
    HttpResponse submit(const HttpRequest& r);
    Json job_json(const JobRecord& j, bool detail) const;
    Json node_json(const NodeRegistry::Entry& e, const std::vector<NodeCapacity>& caps) const;

    const Clock& clock_;
    JobManager& jobs_;
    const NodeRegistry& nodes_;
    const VersionTable& versions_;
    StateStore& store_;
    Metrics& metrics_;
    const ApiSettings settings_;
    Logger log_;
    const Clock::TimePoint started_;
};

}  // namespace tandem::coord
