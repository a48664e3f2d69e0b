#include "common/agent/actor_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

extern "C" char** environ;

namespace tandem::agent {

namespace {

// The child's side between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(pid_t parent, int out_fd, int err_fd, const char* dir,
                             char* const* argv, char* const* envp, const std::string& failed) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the agent died before prctl
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    if (dir != nullptr && ::chdir(dir) != 0) {
        const char msg[] = "cannot enter the actor's working directory\n";
        (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
        ::_exit(127);
    }
    if (envp != nullptr) {
        ::execve(argv[0], argv, envp);
    } else {
        ::execv(argv[0], argv);
    }
    (void)!::write(STDERR_FILENO, failed.data(), failed.size());
    ::_exit(127);
}

Result<std::unique_ptr<ActorProcess>> start(const std::vector<std::string>& argv,
                                            const std::string& working_dir,
                                            const std::vector<std::string>* env,
                                            ActorProcess* (*make)(pid_t, int, int)) {
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
    std::vector<char*> envp;
    if (env != nullptr) {
        for (const auto& e : *env) envp.push_back(const_cast<char*>(e.c_str()));
        envp.push_back(nullptr);
    }
    const std::string failed = fmt::format("exec of {} failed\n", argv.at(0));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
        return unavailable(fmt::format("fork: {}", std::strerror(errno)));
    }
    if (pid == 0) {
        exec_child(parent, out[1], err[1], working_dir.empty() ? nullptr : working_dir.c_str(),
                   args.data(), env != nullptr ? envp.data() : nullptr, failed);
    }
    ::close(out[1]);
    ::close(err[1]);
    for (int fd : {out[0], err[0]}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return std::unique_ptr<ActorProcess>(make(pid, out[0], err[0]));
}

bool executable(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

Result<std::unique_ptr<ActorProcess>> ActorProcess::spawn(const std::vector<std::string>& argv) {
    return start(argv, "", nullptr,
                 [](pid_t pid, int out, int err) { return new ActorProcess(pid, out, err); });
}

Result<std::unique_ptr<ActorProcess>> ActorProcess::spawn(const Command& command) {
    if (command.argv.empty() || command.argv[0].empty())
        return invalid_argument("no program to run (command is empty)");
    if (!command.working_dir.empty()) {
        struct stat st {};
        if (::stat(command.working_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            return invalid_argument(
                fmt::format("working directory {} does not exist", command.working_dir));
    }
    // The environment: the agent's, with command.env set over it.
    std::map<std::string, std::string> vars;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        const std::string_view kv(*e);
        const size_t eq = kv.find('=');
        if (eq != std::string_view::npos) vars[std::string(kv.substr(0, eq))] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : command.env) vars[k] = v;
    std::vector<std::string> env;
    for (const auto& [k, v] : vars) env.push_back(k + "=" + v);

    // Resolve the program in the agent, so a typo is reported by name rather than as exit 127.
    std::vector<std::string> argv = command.argv;
    const std::string& program = command.argv[0];
    if (program.find('/') != std::string::npos) {
        std::string path = program;
        if (path[0] != '/' && !command.working_dir.empty())
            path = (std::filesystem::path(command.working_dir) / path).lexically_normal().string();
        if (!executable(path))
            return invalid_argument(fmt::format("{} is not an executable file", path));
        argv[0] = path;
    } else {
        const std::string search = vars.count("PATH") != 0 ? vars["PATH"] : "/usr/bin:/bin";
        std::string found;
        for (size_t begin = 0; begin <= search.size();) {
            size_t end = search.find(':', begin);
            if (end == std::string::npos) end = search.size();
            const std::string dir = search.substr(begin, end - begin);
            const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
            if (executable(candidate)) {
                found = candidate;
                break;
            }
            begin = end + 1;
        }
        if (found.empty())
            return invalid_argument(fmt::format("{} was not found on PATH ({})", program, search));
        argv[0] = found;
    }
    return start(argv, command.working_dir, &env,
                 [](pid_t pid, int out, int err) { return new ActorProcess(pid, out, err); });
}

std::string ActorProcess::describe_exit(int code) const {
    if (stderr_tail_.empty()) return fmt::format("exited with code {}, no stderr output", code);
    return fmt::format("exited with code {}; last stderr lines: {}", code,
                       fmt::join(stderr_tail_, " | "));
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
    }
    if (fd == err_fd_) {
        for (const auto& line : lines) {
            if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
            stderr_tail_.push_back(line.size() > 300 ? line.substr(0, 300) + "..." : line);
            if (stderr_tail_.size() > kStderrTail) stderr_tail_.pop_front();
        }
    }
    if (closed) {
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
