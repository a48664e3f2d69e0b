#pragma once

// Starting and stopping node agents on other hosts over ssh, for `tandem up` / `tandem down`.
//
// For a node with `launcher: ssh` (the default for a host that is not this machine), `up`:
//   1. runs one ssh command that checks the agent binary on the host (`<bin_dir>/tandem-<role>-node
//      --version` must print this CLI's version) and whether the agent already runs there;
//   2. copies the cluster file and the cluster secret into the node's remote run directory
//      (umask 077: never world-readable) and starts the agent detached from the ssh session,
//      pointed at the coordinator's address, its output in <remote run dir>/logs/<node>.out;
//   3. records the start in <run dir>/remote/<node>.json (host, ssh arguments, remote pid), which
//      `down` uses to stop it (SIGTERM, then SIGKILL) without needing the cluster file.
// Failures name the node and the cause: unreachable, auth refused, binary missing, version
// mismatch, or the remote command's own error.
//
// Used by the CLI's one thread; not thread-safe.

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "common/config/cluster_spec.h"
#include "common/run_dir.h"
#include "common/status.h"

namespace tandem::cli {

// Runs argv with `input` on stdin, stdout and stderr captured, killed at `timeout`. `code` is -1
// when it could not run or was killed at the deadline.
struct Captured {
    int code = -1;
    std::string out, err;
};
Captured run_captured(const std::vector<std::string>& argv, const std::string& input,
                      std::chrono::milliseconds timeout);

// Whether `host` names this machine: loopback, its hostname, or an address of one of its
// interfaces.
bool is_local_host(const std::string& host);

// The node's launcher: as written, else local for this machine's addresses and ssh otherwise.
config::Launcher launcher_of(const config::NodeSpec& node);

// The `ssh ... user@host` argument vector (without the remote command) for a node.
std::vector<std::string> ssh_command(const config::NodeSpec& node);

struct SshOutcome {
    bool started = false;  // false: it was already running
    long pid = 0;          // the agent's pid on its host
};

class SshLauncher {
public:
    // `cluster_path`: the local cluster file; `overrides`: KEY=VALUE given to `tandem up`, passed
    // on to every agent; `local_bin_dir`: where this CLI's binaries are (the default remote
    // bin_dir).
    SshLauncher(const RunDir& run, const config::ClusterSpec& spec, std::string cluster_path,
                std::vector<std::string> overrides, std::string local_bin_dir);

    // Checks that the coordinator's address can be reached from other hosts (not loopback, not a
    // wildcard): the agents are told to connect to coordinator.host.
    Status check_coordinator_address() const;

    // Ensures the node's agent runs on its host (starts it if not) and records it.
    Result<SshOutcome> ensure_running(const config::NodeSpec& node) const;

    // The last lines of the node's output on its host, and whether its agent is alive: for
    // startup errors (empty when the host cannot be reached).
    std::string startup_report(const config::NodeSpec& node, size_t lines) const;

private:
    std::string remote_dir(const config::NodeSpec& node) const;
    std::string remote_exe(const config::NodeSpec& node) const;

    const RunDir& run_;
    const config::ClusterSpec& spec_;
    std::string cluster_path_;
    std::vector<std::string> overrides_;
    std::string local_bin_dir_;
};

// Stops every agent recorded under <run dir>/remote (or only `nodes` when not empty), prints one
// line per node to `out`, removes the records of those gone. Returns how many were stopped; nodes
// whose host cannot be reached keep their record and are named in `out`.
int stop_remote_agents(const RunDir& run, std::ostream& out,
                       const std::vector<std::string>& nodes = {});

}  // namespace tandem::cli
