#pragma once

// What an actor process gets from its node agent, and how it talks back. An actor is a child
// process of the agent (`tandem-<role>-node actor --context FILE`): a crash, an abort or a kill
// takes only the actor down, and the agent reports the exit. The actor speaks to its agent with
// JSON lines on stdout (one object per line, "type" first); everything it writes to stderr is
// forwarded as log lines of its job.
//
//   {"type":"progress", "progress":{...}}                      -> ActorState(running, progress)
//   {"type":"log", "level":"info", "msg":"..."}                -> LogLines
//   {"type":"metrics", "step":N, "values":{...}}               -> JobMetrics
//   {"type":"version", "version":N, "descriptor":{...}}        -> VersionPublished
//   {"type":"retire", "version":N, "shard":S}                  -> VersionRetired (slot reclaimed)
//   {"type":"relay_join", "version":N, "relay_source":{...}}   -> RelayJoin (where do I read N?)
//   {"type":"endpoint", "name":"...", "address":"tcp://..."}   -> ActorEndpoint
//   {"type":"error", "msg":"..."}                              the failure reason if it exits != 0

#include <mutex>
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

    Json to_json() const;
    static Result<ActorContext> from_json(const Json& j);
    static Result<ActorContext> load(const std::string& path);
};

// Writes protocol lines to stdout. Thread-safe.
class ActorChannel {
public:
    void progress(const Json& progress);
    void log(std::string_view level, std::string_view msg);
    void metrics(int64_t step, const Json& values);
    void version(uint64_t version, const Json& descriptor);
    void retire(uint64_t version, uint32_t shard);
    void relay_join(uint64_t version, const Json& relay_source);  // null: the reader won't relay
    void endpoint(std::string_view name, std::string_view address);
    void error(std::string_view msg);

private:
    void write(const Json& line);
    std::mutex mu_;
};

// Runs the built-in `kind: diagnostic` actor: reports progress every report_every_s for
// duration_s and succeeds, or fails after fail_after_s. Returns the process exit code.
int run_diagnostic_actor(const ActorContext& ctx, ActorChannel& channel);

}  // namespace tandem::agent
