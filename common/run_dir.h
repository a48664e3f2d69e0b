#pragma once

// The run directory of a cluster (`run_dir` in the cluster file, `.tandem` by default): what
// `tandem up` writes and the daemons and the CLI read.
//
//   cluster-secret      secret agents present when registering (0600)
//   api-token           token for mutating HTTP requests (0600)
//   coordinator.json    {"http": "http://127.0.0.1:7680", "agent": "tcp://...", "pid": N}
//   pids/NAME.pid       pids of the processes `tandem up` started
//   logs/NAME.jsonl     JSON-lines logs of each process (NAME.out: its stdout/stderr)
//   state/state.db      the coordinator's SQLite state (unless coordinator.state_dir is set)

#include <string>

#include "common/config/cluster_spec.h"
#include "common/status.h"

namespace tandem {

class RunDir {
public:
    explicit RunDir(std::string root) : root_(std::move(root)) {}
    // The run directory of a cluster file, with `--run-dir` given precedence when non-empty.
    static RunDir of(const config::ClusterSpec& spec, const std::string& override_dir = "");

    const std::string& root() const { return root_; }
    std::string secret_path() const { return root_ + "/cluster-secret"; }
    std::string token_path() const { return root_ + "/api-token"; }
    std::string address_path() const { return root_ + "/coordinator.json"; }
    std::string pid_path(const std::string& name) const { return root_ + "/pids/" + name + ".pid"; }
    std::string log_path(const std::string& name) const {
        return root_ + "/logs/" + name + ".jsonl";
    }
    std::string out_path(const std::string& name) const { return root_ + "/logs/" + name + ".out"; }
    std::string state_dir(const config::ClusterSpec& spec) const;

    // Creates root, pids/ and logs/.
    Status create() const;

private:
    std::string root_;
};

// Writes `content` to a temporary file and renames it over `path` (readers never see half a
// file), with `mode` permissions.
Status write_file_atomic(const std::string& path, const std::string& content, unsigned mode = 0644);
Result<std::string> read_file(const std::string& path);
// A random hex string of `bytes` bytes from /dev/urandom.
Result<std::string> random_hex(size_t bytes);

// The cluster secret: from spec.secret_file if set, else the run directory's cluster-secret.
Result<std::string> read_cluster_secret(const config::ClusterSpec& spec, const RunDir& run);

}  // namespace tandem
