#include "cli/processes.h"

#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace tandem::cli {

Result<pid_t> spawn_daemon(const std::vector<std::string>& argv, const std::string& out_path) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0)
        return unavailable(fmt::format("cannot open {}: {}", out_path, std::strerror(errno)));
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(out);
        return unavailable(fmt::format("fork: {}", std::strerror(errno)));
    }
    if (pid == 0) {
        ::setsid();
        const int in = ::open("/dev/null", O_RDONLY);
        ::dup2(in, STDIN_FILENO);
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out);
    return pid;
}

std::optional<pid_t> running_pid(const std::string& pid_file, const std::string& name) {
    std::ifstream in(pid_file);
    pid_t pid = 0;
    if (!(in >> pid) || pid <= 0) return std::nullopt;
    if (::kill(pid, 0) != 0) return std::nullopt;
    std::ifstream stat(fmt::format("/proc/{}/stat", pid));
    std::string s;
    std::getline(stat, s);
    const auto rp = s.rfind(')');
    if (rp != std::string::npos && rp + 2 < s.size() && s[rp + 2] == 'Z') return std::nullopt;
    std::ifstream cmd(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
    std::stringstream buf;
    buf << cmd.rdbuf();
    if (buf.str().find(name) == std::string::npos) return std::nullopt;
    return pid;
}

namespace {
// Gone, or a zombie waiting for a parent that is not us to reap it.
bool exited(pid_t pid) {
    ::waitpid(pid, nullptr, WNOHANG);  // reap if it is our child
    if (::kill(pid, 0) != 0) return true;
    std::ifstream stat(fmt::format("/proc/{}/stat", pid));
    std::string s;
    std::getline(stat, s);
    const auto rp = s.rfind(')');
    return rp != std::string::npos && rp + 2 < s.size() && s[rp + 2] == 'Z';
}
}  // namespace

bool stop_process(pid_t pid, std::chrono::milliseconds grace) {
    if (::kill(pid, SIGTERM) != 0) return true;
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
        if (exited(pid)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid, SIGKILL);
    return wait_exit(pid, std::chrono::seconds(2));
}

bool wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exited(pid)) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

std::string bind_error(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    const std::string service = std::to_string(port);
    const char* node = host.empty() || host == "*" ? nullptr : host.c_str();
    if (const int rc = ::getaddrinfo(node, service.c_str(), &hints, &res); rc != 0)
        return ::gai_strerror(rc);
    std::string why;
    const int fd = ::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    if (fd < 0) {
        why = std::strerror(errno);
    } else {
        // As the daemons bind: SO_REUSEADDR, so a port left in TIME_WAIT does not count.
        const int one = 1;
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0) why = std::strerror(errno);
        ::close(fd);
    }
    ::freeaddrinfo(res);
    return why;
}

std::string tail_lines(const std::string& path, size_t max_lines) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
        if (lines.size() > max_lines) lines.erase(lines.begin());
    }
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

std::string self_dir() {
    std::error_code ec;
    auto p = std::filesystem::canonical("/proc/self/exe", ec);
    return ec ? "." : p.parent_path().string();
}

}  // namespace tandem::cli
