#pragma once

// What an actor process gets from its node agent. An actor is a child process of the agent
// (`tandem-<role>-node actor --context FILE`, or a job's own `command:`): a crash, an abort or a
// kill takes only the actor down, and the agent reports the exit with its code and last stderr
// lines. The actor reaches the cluster only through the actor runtime
// (common/runtime/job_runtime.h) at `runtime_endpoint`; its stdout and stderr are forwarded as log
// lines of its job.

#include <string>

#include <nlohmann/json.hpp>

#include "common/config/job_spec.h"
#include "common/ids.h"
#include "common/status.h"

namespace tandem::agent {

using Json = nlohmann::json;

// The context file the agent writes for an actor.
struct ActorContext {
    ActorId actor;
    int64_t attempt = 0;
    std::string node;
    std::string spec_yaml;
    config::JobSpec spec;  // parsed from spec_yaml
    Json placement = Json::object();
    std::string coordinator_http;  // "http://127.0.0.1:7680"
    std::string api_token;         // bearer token (role actor) for coordinator_http; may be empty
    std::string run_dir;
    std::string runtime_endpoint;  // the agent's actor-runtime socket (ipc://...)

    Json to_json() const;
    static Result<ActorContext> from_json(const Json& j);
    static Result<ActorContext> load(const std::string& path);
};

}  // namespace tandem::agent
