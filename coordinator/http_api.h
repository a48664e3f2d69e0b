#pragma once

// HttpApi: the coordinator's HTTP/JSON API (documented in docs/api.md): cluster status, nodes, jobs
// (submit, list, get, cancel, events, logs, metrics), versions, tokens, /healthz and /metrics.
// Every endpoint but /healthz needs a bearer token whose role allows it (coordinator/auth.h;
// 401 without one, 403 with too little). Owned by the coordinator loop; not thread-safe.

#include <map>
#include <string>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/auth.h"
#include "coordinator/http_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/state_store.h"
#include "coordinator/version_table.h"

namespace tandem::coord {

struct ApiSettings {
    std::string cluster_name;
    uint64_t epoch = 0;
    size_t max_json_depth = 64;  // deeper request bodies are refused before parsing
};

class HttpApi {
public:
    HttpApi(const Clock& clock, JobManager& jobs, const NodeRegistry& nodes,
            const VersionTable& versions, StateStore& store, Metrics& metrics, Auth& auth,
            ApiSettings settings);

    HttpResponse handle(const HttpRequest& r);

private:
    HttpResponse route(const HttpRequest& r, const Principal& who);
    HttpResponse job_route(const HttpRequest& r, const Principal& who, const std::string& job,
                           const std::string& rest);
    HttpResponse version_route(const HttpRequest& r, JobId job, const std::string& rest);
    HttpResponse submit(const HttpRequest& r, const Principal& who);
    HttpResponse create_token(const HttpRequest& r);
    // Who submitted `job` (the token's name), from its "owner" event; empty when unknown.
    std::string owner_of(JobId job);
    Json job_json(const JobRecord& j, bool detail) const;
    Json node_json(const NodeRegistry::Entry& e, const std::vector<NodeCapacity>& caps) const;

    const Clock& clock_;
    JobManager& jobs_;
    const NodeRegistry& nodes_;
    const VersionTable& versions_;
    StateStore& store_;
    Metrics& metrics_;
    Auth& auth_;
    const ApiSettings settings_;
    std::map<JobId, std::string> owners_;  // cache of owner_of
    Logger log_;
    const Clock::TimePoint started_;
};

}  // namespace tandem::coord
