#pragma once

// A user's reward program (task.reward.command): started once with /bin/sh -c in its own
// process group, it reads one JSON line per sample on stdin
//   {"prompt": "...", "completion": "...", "answer": "..."}
// and writes one number per line on stdout, in order. Every failure is an error that carries the
// command's stderr: the process exiting, no answer within the timeout, a line that is not one
// finite number. No sample is ever scored 0 in place of an answer; after an error the command
// stays failed (every later score() returns the same error).
//
// PYTHONUNBUFFERED=1 is set for the child, so a Python script's print() reaches us at once;
// programs in other languages must flush stdout after each line (or each batch).

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::rl {

struct RewardSample {
    std::string_view prompt;
    std::string_view completion;
    std::string_view answer;
};

// Owned by one rollout actor; not thread-safe. Not copyable or movable (it owns the child).
class RewardCommand {
public:
    struct Options {
        std::string command;         // run as /bin/sh -c COMMAND
        std::string working_dir;     // empty: this process's
        int64_t timeout_ms = 60000;  // for all the answers of one score() call
    };

    static Result<std::unique_ptr<RewardCommand>> start(const Options& options);
    // Closes the command's stdin, gives it 2 s to exit, then kills its process group.
    ~RewardCommand();
    RewardCommand(const RewardCommand&) = delete;
    RewardCommand& operator=(const RewardCommand&) = delete;

    // One reward per sample, in order.
    Result<std::vector<double>> score(std::span<const RewardSample> samples);

    pid_t pid() const { return pid_; }

private:
    explicit RewardCommand(Options options) : options_(std::move(options)) {}
    // Reads what stdout and stderr have (waiting up to `wait_ms`); false when both are closed.
    bool pump(int wait_ms, std::string_view* pending_input);
    Status fail(std::string what);
    void stop();

    Options options_;
    pid_t pid_ = -1;
    int in_fd_ = -1;   // our end of the child's stdin (a socket: writes never raise SIGPIPE)
    int out_fd_ = -1;  // the child's stdout
    int err_fd_ = -1;  // the child's stderr
    std::string out_;  // stdout read but not yet consumed as answers
    std::string err_;  // the last kStderrKeep bytes of stderr
    Status failed_;
    static constexpr size_t kStderrKeep = 4096;
};

}  // namespace tandem::rl
