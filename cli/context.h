#pragma once

// What every command that talks to a cluster needs: the coordinator's address and the API token,
// found from --address, else TANDEM_ADDRESS, else the run directory's coordinator.json.

#include <string>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "common/net/http_client.h"
#include "common/status.h"

namespace tandem::cli {

using Json = nlohmann::json;
using net::http_call;
using net::HttpReply;

struct ClusterContext {
    std::string address;  // http://HOST:PORT
    std::string token;
    std::string run_dir;

    // GET/POST returning the JSON body; HTTP errors become Status with the server's message.
    Result<Json> get(const std::string& target) const;
    Result<Json> post(const std::string& target, const Json& body) const;
};

// Options shared by cluster commands.
inline void add_cluster_options(ArgSpec& spec) {
    spec.options.insert({"--address", "--run-dir", "--output"});
}
Result<ClusterContext> cluster_context(const Args& args);

// Prints `e` to stderr ("tandem: ...") and returns the exit code for it.
int report(const Status& s);
bool json_output(const Args& args);
std::string format_time_ns(int64_t wall_ns);
std::string format_duration_s(double seconds);

}  // namespace tandem::cli
