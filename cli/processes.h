#pragma once

// Starting and stopping the local daemons of a cluster for `tandem up` / `tandem down`.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::cli {

// Starts `argv` detached (own session, stdin from /dev/null, stdout and stderr appended to
// `out_path`) and returns its pid.
Result<pid_t> spawn_daemon(const std::vector<std::string>& argv, const std::string& out_path);

// The pid in `pid_file` if that process is alive and its command line contains `name`.
std::optional<pid_t> running_pid(const std::string& pid_file, const std::string& name);

// SIGTERM, then SIGKILL after `grace`; true if it is gone.
bool stop_process(pid_t pid, std::chrono::milliseconds grace);
// Waits until the process has exited (a zombie counts); false on timeout.
bool wait_exit(pid_t pid, std::chrono::milliseconds timeout);

// Whether a TCP listener could bind `host:port` now: an empty string if it could, else the
// reason ("address already in use"). `host` is an IPv4/IPv6 literal or a name.
std::string bind_error(const std::string& host, int port);

// The last `max_lines` lines of a text file (empty if it cannot be read).
std::string tail_lines(const std::string& path, size_t max_lines);

// The directory holding this executable (and its sibling binaries).
std::string self_dir();

}  // namespace tandem::cli
