#pragma once

// Starts a real local cluster (coordinator + node agents as processes, via `tandem up`) in a temp
// run directory with free loopback ports and fast heartbeats, and talks to it through the CLI and
// the HTTP API. Every wait has a deadline.

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/net/http_client.h"

namespace tandem::testing {

struct CmdResult {
    int code = -1;
    std::string out;  // stdout and stderr
};

inline CmdResult run_cmd(const std::string& cmd) {
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    CmdResult r;
    std::array<char, 4096> buf;
    while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
    const int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// Polls `ok` every 20 ms until it holds or `timeout` passes; returns whether it held.
inline bool wait_until(const std::function<bool()>& ok, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (ok()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return ok();
}

class LocalCluster {
public:
    static constexpr int kHeartbeatMs = 200;
    static constexpr int kDeadAfterMs = 1000;

    explicit LocalCluster(const std::string& name, int rollout_nodes = 2, int trainer_nodes = 1) {
        dir_ = std::filesystem::temp_directory_path() /
               fmt::format("tandem_it_{}_{}", name, ::getpid());
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
        agent_port_ = free_port();
        http_port_ = free_port();
        std::string nodes;
        for (int i = 0; i < trainer_nodes; ++i) {
            nodes += fmt::format(
                "  - {{id: trainer-{}, role: trainer, host: 127.0.0.1, resources: {{cpus: 2}}}}\n",
                i);
        }
        for (int i = 0; i < rollout_nodes; ++i) {
            nodes += fmt::format(
                "  - {{id: rollout-{}, role: rollout, host: 127.0.0.1, resources: {{cpus: 2}}}}\n",
                i);
        }
        cluster_file_ = (dir_ / "cluster.yaml").string();
        std::ofstream(cluster_file_) << fmt::format(
            "name: {}\nrun_dir: {}\ncoordinator:\n  agent_port: {}\n  http_port: {}\n"
            "  heartbeat_ms: {}\n  dead_after_ms: {}\nnodes:\n{}",
            name, run_dir(), agent_port_, http_port_, kHeartbeatMs, kDeadAfterMs, nodes);
    }
    ~LocalCluster() {
        run_cmd(tandem() + " down --run-dir " + run_dir());
        std::filesystem::remove_all(dir_);
    }

    static std::string tandem() { return std::string(TANDEM_BINARY_DIR) + "/bin/tandem"; }
    std::string run_dir() const { return (dir_ / "run").string(); }
    const std::string& cluster_file() const { return cluster_file_; }
    std::string address() const { return fmt::format("http://127.0.0.1:{}", http_port_); }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    CmdResult up() { return run_cmd(tandem() + " up -f " + cluster_file_ + " --timeout-s 20"); }
    CmdResult cli(const std::string& args) {
        return run_cmd(tandem() + " " + args + " --run-dir " + run_dir());
    }

    std::string token() const {
        std::ifstream in(run_dir() + "/api-token");
        std::string t;
        in >> t;
        return t;
    }
    nlohmann::json get(const std::string& target) const {
        auto r = net::http_call(address(), "GET", target, "", token());
        if (!r.ok() || r->status != 200) return nullptr;
        return nlohmann::json::parse(r->body, nullptr, false);
    }
    std::string write_file(const std::string& name, const std::string& text) const {
        const std::string p = path(name);
        std::ofstream(p) << text;
        return p;
    }
    pid_t pid_of(const std::string& process) const {
        std::ifstream in(run_dir() + "/pids/" + process + ".pid");
        pid_t pid = 0;
        in >> pid;
        return pid;
    }
    nlohmann::json job(const std::string& id) const { return get("/api/v1/jobs/" + id); }
    std::string job_state(const std::string& id) const {
        auto j = job(id);
        return j.is_object() ? j.value("state", "") : "";
    }

private:
    std::filesystem::path dir_;
    std::string cluster_file_;
    int agent_port_ = 0;
    int http_port_ = 0;
};

}  // namespace tandem::testing
