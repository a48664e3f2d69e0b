#pragma once

// ActorProcess: one actor as a child process of its node agent. Starts it with stdout and stderr
// on pipes, reads them without blocking, and reaps it. The child dies with the agent
// (PR_SET_PDEATHSIG), so a killed node takes its actors along. Owned by the agent loop; not
// thread-safe; neither copyable nor movable (owns the pid and fds).

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace tandem::agent {

class ActorProcess {
public:
    // Starts `argv[0]` with `argv`; the child's stdout and stderr come back through the pipes.
    static Result<std::unique_ptr<ActorProcess>> spawn(const std::vector<std::string>& argv);

    // A user's program (common/agent/user_actor.h). argv[0] is a path (relative: to working_dir)
    // or a name looked up on PATH (env's PATH if it sets one, else the agent's); invalid_argument
    // names what is missing before anything is forked.
    struct Command {
        std::vector<std::string> argv;
        std::string working_dir;                 // empty: the agent's
        std::map<std::string, std::string> env;  // set over the agent's environment
    };
    static Result<std::unique_ptr<ActorProcess>> spawn(const Command& command);

    // The last kStderrTail non-empty lines read from stderr, oldest first.
    static constexpr size_t kStderrTail = 5;
    const std::deque<std::string>& stderr_tail() const { return stderr_tail_; }
    // "exited with code 3; last stderr lines: a | b | c" (or "exited with code 3, no stderr
    // output"): how an exit nobody explained is reported.
    std::string describe_exit(int code) const;
    ~ActorProcess();  // kills and reaps a child still running
    ActorProcess(const ActorProcess&) = delete;
    ActorProcess& operator=(const ActorProcess&) = delete;

    pid_t pid() const { return pid_; }
    int stdout_fd() const { return out_fd_; }
    int stderr_fd() const { return err_fd_; }

    // Reads what is available on a pipe and returns complete lines (a final partial line is
    // returned once the pipe closes).
    std::vector<std::string> read_lines(int fd);

    // Non-blocking reap: the exit code (128+signal for a signal) once the child has exited.
    std::optional<int> poll_exit();
    // SIGTERM now; SIGKILL from kill_if_overdue() once `grace` has passed.
    void terminate(const Clock& clock, Clock::Duration grace);
    void kill_if_overdue(const Clock& clock);
    bool terminating() const { return kill_at_.has_value(); }

private:
    ActorProcess(pid_t pid, int out_fd, int err_fd) : pid_(pid), out_fd_(out_fd), err_fd_(err_fd) {}

    pid_t pid_;
    int out_fd_;
    int err_fd_;
    std::string out_buf_, err_buf_;
    std::deque<std::string> stderr_tail_;
    std::optional<int> exit_code_;
    std::optional<Clock::TimePoint> kill_at_;
};

}  // namespace tandem::agent
