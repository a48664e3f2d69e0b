#include "common/agent/actor_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace tandem::agent {

Result<std::unique_ptr<ActorProcess>> ActorProcess::spawn(const std::vector<std::string>& argv) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0)
        return unavailable(fmt::format("pipe: {}", std::strerror(errno)));
    if (::pipe2(err, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return unavailable(fmt::format("pipe: {}", std::strerror(errno)));
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
        return unavailable(fmt::format("fork: {}", std::strerror(errno)));
    }
    if (pid == 0) {
        // Child: only async-signal-safe calls until exec.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);  // the agent died before prctl
        ::dup2(out[1], STDOUT_FILENO);
        ::dup2(err[1], STDERR_FILENO);
        ::execv(args[0], args.data());
        const char msg[] = "exec of the actor binary failed\n";
        (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
        ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    for (int fd : {out[0], err[0]}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return std::unique_ptr<ActorProcess>(new ActorProcess(pid, out[0], err[0]));
}

ActorProcess::~ActorProcess() {
    if (!exit_code_) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
}

std::vector<std::string> ActorProcess::read_lines(int fd) {
    std::string& buf = fd == out_fd_ ? out_buf_ : err_buf_;
    std::vector<std::string> lines;
    char chunk[65536];
    bool closed = false;
    while (true) {
        const ssize_t n = ::read(fd, chunk, sizeof(chunk));
        if (n > 0) {
            buf.append(chunk, static_cast<size_t>(n));
            continue;
        }
        if (n == 0) closed = true;
        if (n < 0 && errno == EINTR) continue;
        break;  // EAGAIN or closed
    }
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
        lines.push_back(buf.substr(start, nl - start));
    }
    buf.erase(0, start);
    if (closed) {
        if (!buf.empty()) lines.push_back(std::move(buf));
        buf.clear();
        ::close(fd);
        if (fd == out_fd_) out_fd_ = -1;
        if (fd == err_fd_) err_fd_ = -1;
    }
    return lines;
}

std::optional<int> ActorProcess::poll_exit() {
    if (exit_code_) return exit_code_;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r != pid_) return std::nullopt;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
}

void ActorProcess::terminate(const Clock& clock, Clock::Duration grace) {
    if (exit_code_ || kill_at_) return;
    ::kill(pid_, SIGTERM);
    kill_at_ = clock.now() + grace;
}

void ActorProcess::kill_if_overdue(const Clock& clock) {
    if (!exit_code_ && kill_at_ && clock.now() >= *kill_at_) ::kill(pid_, SIGKILL);
}

}  // namespace tandem::agent
