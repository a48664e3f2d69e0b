#include "common/rl/reward_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

extern char** environ;

namespace tandem::rl {
namespace {

using Clock = std::chrono::steady_clock;

void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// A line that is exactly one finite number (surrounding whitespace allowed).
bool parse_reward(std::string_view line, double& out) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front())))
        line.remove_prefix(1);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
        line.remove_suffix(1);
    if (line.empty()) return false;
    const std::string s(line);
    char* end = nullptr;
    errno = 0;
    out = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size() && errno == 0 && std::isfinite(out);
}

// Waits up to `timeout_ms` for `pid` to exit (a pidfd polled, no sleeping); true with its
// status when it did.
bool wait_exit(pid_t pid, int timeout_ms, int& status) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return true;
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) {
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, timeout_ms);
        ::close(fd);
    }
    return ::waitpid(pid, &status, WNOHANG) == pid;
}

std::string describe_exit(int status) {
    if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("was killed by signal {}", WTERMSIG(status));
    return "stopped";
}

}  // namespace

Result<std::unique_ptr<RewardCommand>> RewardCommand::start(const Options& options) {
    if (options.command.empty()) return invalid_argument("reward command: empty");
    std::unique_ptr<RewardCommand> rc(new RewardCommand(options));
    int in[2], out[2], err[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0) {
        return internal_error(fmt::format("reward command: socketpair: {}", std::strerror(errno)));
    }
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
        return internal_error(fmt::format("reward command: pipe: {}", std::strerror(errno)));
    }
    // The child's ends become fds 0, 1, 2 (dup2 clears close-on-exec on them).
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[1], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    if (!options.working_dir.empty()) {
        posix_spawn_file_actions_addchdir_np(&actions, options.working_dir.c_str());
    }
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);

    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
        if (std::strncmp(*e, "PYTHONUNBUFFERED=", 17) != 0) env_strings.emplace_back(*e);
    }
    env_strings.emplace_back("PYTHONUNBUFFERED=1");
    std::vector<char*> env;
    for (auto& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::string sh = "/bin/sh", dash_c = "-c", command = options.command;
    char* argv[] = {sh.data(), dash_c.data(), command.data(), nullptr};
    const int spawn_error = posix_spawn(&rc->pid_, "/bin/sh", &actions, &attr, argv, env.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(in[1]);
    ::close(out[1]);
    ::close(err[1]);
    rc->in_fd_ = in[0];
    rc->out_fd_ = out[0];
    rc->err_fd_ = err[0];
    if (spawn_error != 0) {
        rc->pid_ = -1;
        return unavailable(
            fmt::format("reward command \"{}\": cannot start{}: {}", options.command,
                        options.working_dir.empty() ? "" : " in " + options.working_dir,
                        std::strerror(spawn_error)));
    }
    for (int fd : {rc->in_fd_, rc->out_fd_, rc->err_fd_}) {
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    return rc;
}

RewardCommand::~RewardCommand() { stop(); }

void RewardCommand::stop() {
    close_fd(in_fd_);
    if (pid_ > 0) {
        // Wait for the command to close its output (it exits when stdin ends), at most 2 s.
        const auto deadline = Clock::now() + std::chrono::seconds(2);
        while (Clock::now() < deadline) {
            const int left = static_cast<int>(
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                    .count());
            if (!pump(std::max(left, 1), nullptr)) break;
        }
        int status = 0;
        const int left = static_cast<int>(std::max<int64_t>(
            1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                   .count()));
        if (!wait_exit(pid_, left, status)) {
            ::kill(-pid_, SIGKILL);
            ::waitpid(pid_, &status, 0);
        }
        pid_ = -1;
    }
    close_fd(out_fd_);
    close_fd(err_fd_);
}

bool RewardCommand::pump(int wait_ms, std::string_view* pending_input) {
    pollfd fds[3];
    nfds_t n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out_fd_ >= 0) fds[out_i = static_cast<int>(n++)] = {out_fd_, POLLIN, 0};
    if (err_fd_ >= 0) fds[err_i = static_cast<int>(n++)] = {err_fd_, POLLIN, 0};
    if (pending_input != nullptr && !pending_input->empty() && in_fd_ >= 0) {
        fds[in_i = static_cast<int>(n++)] = {in_fd_, POLLOUT, 0};
    }
    if (n == 0) return false;
    if (::poll(fds, n, wait_ms) <= 0) return true;
    char buf[65536];
    const auto drain = [&](int& fd, std::string& into, bool bounded) {
        while (true) {
            const ssize_t got = ::read(fd, buf, sizeof(buf));
            if (got > 0) {
                into.append(buf, static_cast<size_t>(got));
                if (bounded && into.size() > 2 * kStderrKeep)
                    into.erase(0, into.size() - kStderrKeep);
                continue;
            }
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
            close_fd(fd);  // end of file or error
            return;
        }
    };
    if (out_i >= 0 && fds[out_i].revents) drain(out_fd_, out_, false);
    if (err_i >= 0 && fds[err_i].revents) drain(err_fd_, err_, true);
    if (in_i >= 0 && fds[in_i].revents) {
        const ssize_t sent =
            ::send(in_fd_, pending_input->data(), pending_input->size(), MSG_NOSIGNAL);
        if (sent > 0) {
            pending_input->remove_prefix(static_cast<size_t>(sent));
        } else if (sent < 0 && errno != EAGAIN && errno != EINTR) {
            pending_input->remove_prefix(pending_input->size());  // the command stopped reading
        }
    }
    return out_fd_ >= 0 || err_fd_ >= 0;
}

Status RewardCommand::fail(std::string what) {
    // The command is of no further use: end it, then collect what its stderr pipe still holds.
    if (pid_ > 0) ::kill(-pid_, SIGKILL);
    const auto deadline = Clock::now() + std::chrono::milliseconds(500);
    while (err_fd_ >= 0 && Clock::now() < deadline && pump(50, nullptr)) {
    }
    std::string tail = err_.size() > kStderrKeep ? err_.substr(err_.size() - kStderrKeep) : err_;
    while (!tail.empty() && std::isspace(static_cast<unsigned char>(tail.back()))) tail.pop_back();
    failed_ =
        invalid_argument(fmt::format("reward command \"{}\": {}; stderr: {}", options_.command,
                                     what, tail.empty() ? "(empty)" : tail));
    stop();
    return failed_;
}

Result<std::vector<double>> RewardCommand::score(std::span<const RewardSample> samples) {
    if (!failed_.ok()) return failed_;
    if (pid_ <= 0) return fail("not running");
    std::string input;
    for (const RewardSample& s : samples) {
        input +=
            nlohmann::json{{"prompt", s.prompt}, {"completion", s.completion}, {"answer", s.answer}}
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        input += '\n';
    }
    std::string_view pending = input;
    std::vector<double> rewards;
    rewards.reserve(samples.size());
    const auto deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
    while (rewards.size() < samples.size()) {
        for (size_t nl;
             rewards.size() < samples.size() && (nl = out_.find('\n')) != std::string::npos;) {
            const std::string line = out_.substr(0, nl);
            out_.erase(0, nl + 1);
            double r = 0;
            if (!parse_reward(line, r)) {
                return fail(fmt::format("line {} of {} is not one finite number: \"{}\"",
                                        rewards.size() + 1, samples.size(), line.substr(0, 200)));
            }
            rewards.push_back(r);
        }
        if (rewards.size() == samples.size()) break;
        const auto now = Clock::now();
        if (now >= deadline) {
            return fail(fmt::format("no answer for sample {} of {} within {} ms",
                                    rewards.size() + 1, samples.size(), options_.timeout_ms));
        }
        const int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
        if (out_fd_ < 0) {  // stdout closed: no more answers can come
            int status = 0;
            const bool exited = wait_exit(pid_, 2000, status);
            if (exited) pid_ = -1;
            return fail(fmt::format("{} after {} of {} answers",
                                    exited ? describe_exit(status) : "closed its stdout",
                                    rewards.size(), samples.size()));
        }
        pump(std::clamp(left, 1, 1000), &pending);
    }
    if (!out_.empty()) {
        return fail(fmt::format("wrote more lines than the {} samples it was given (\"{}\")",
                                samples.size(), out_.substr(0, 200)));
    }
    return rewards;
}

}  // namespace tandem::rl
