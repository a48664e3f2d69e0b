#pragma once

// What every command that talks to a cluster needs: the coordinator's address, found from
// --address, else TANDEM_ADDRESS, else the run directory's coordinator.json; and the API token,
// found from --token, else TANDEM_TOKEN, else the run directory's api-token. From another
// directory or machine, pass both (or set both variables).

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
    bool address_from_run_dir = false;  // coordinator.json, not --address / TANDEM_ADDRESS
    std::string token_source;           // "--token", "TANDEM_TOKEN", the api-token path, or ""

    // GET/POST returning the JSON body; HTTP errors become Status with the server's message.
    Result<Json> get(const std::string& target) const;
    Result<Json> post(const std::string& target, const Json& body) const;
};

// Options shared by cluster commands.
inline void add_cluster_options(ArgSpec& spec) {
    spec.options.insert({"--address", "--token", "--run-dir", "--output"});
}
// Fails with invalid_argument for an --output other than text or json.
Result<ClusterContext> cluster_context(const Args& args);

// Prints `e` to stderr ("tandem: ...") and returns the exit code for it.
int report(const Status& s);
bool json_output(const Args& args);
std::string format_time_ns(int64_t wall_ns);
std::string format_duration_s(double seconds);

}  // namespace tandem::cli
