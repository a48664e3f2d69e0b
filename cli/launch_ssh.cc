#include "cli/launch_ssh.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/net/curve.h"
#include "common/version.h"

namespace tandem::cli {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr auto kSshTimeout = std::chrono::seconds(60);

using Ran = Captured;

}  // namespace

Captured run_captured(const std::vector<std::string>& argv, const std::string& input,
                      std::chrono::milliseconds timeout) {
    Ran r;
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0) {
        r.err = std::strerror(errno);
        return r;
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(in[0], STDIN_FILENO);
        ::dup2(out[1], STDOUT_FILENO);
        ::dup2(err[1], STDERR_FILENO);
        ::execvp(args[0], args.data());
        const std::string why = fmt::format("cannot run {}: {}\n", argv[0], std::strerror(errno));
        (void)!::write(STDERR_FILENO, why.data(), why.size());
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    signal(SIGPIPE, SIG_IGN);
    size_t written = 0;
    if (input.empty()) ::close(in[1]), in[1] = -1;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool out_open = true, err_open = true, timed_out = false;
    while (out_open || err_open) {
        std::vector<pollfd> fds;
        if (out_open) fds.push_back({out[0], POLLIN, 0});
        if (err_open) fds.push_back({err[0], POLLIN, 0});
        if (in[1] >= 0) fds.push_back({in[1], POLLOUT, 0});
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            timed_out = true;
            r.err += fmt::format("(no answer within {} s)", timeout.count() / 1000);
            break;
        }
        if (::poll(fds.data(), fds.size(), static_cast<int>(left.count())) < 0 && errno != EINTR)
            break;
        for (const auto& p : fds) {
            if (p.revents == 0) continue;
            if (p.fd == in[1]) {
                const ssize_t n = ::write(in[1], input.data() + written, input.size() - written);
                if (n > 0) written += static_cast<size_t>(n);
                if (n < 0 || written == input.size()) ::close(in[1]), in[1] = -1;
                continue;
            }
            std::array<char, 4096> buf;
            const ssize_t n = ::read(p.fd, buf.data(), buf.size());
            if (n <= 0) {
                (p.fd == out[0] ? out_open : err_open) = false;
            } else {
                (p.fd == out[0] ? r.out : r.err).append(buf.data(), static_cast<size_t>(n));
            }
        }
    }
    if (in[1] >= 0) ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status) && !timed_out) r.code = WEXITSTATUS(status);
    return r;
}

namespace {

// A single-quoted shell word.
std::string sq(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string target_of(const config::NodeSpec& n) {
    return n.ssh.user.empty() ? n.host : n.ssh.user + "@" + n.host;
}

// Exit codes of the remote scripts below.
constexpr int kNoBinary = 3;
constexpr int kNoVersion = 4;
constexpr int kVersionMismatch = 5;

// What an ssh failure means for the user.
Status explain(const config::NodeSpec& n, const Ran& r, const std::string& exe) {
    const std::string who = fmt::format("node {} ({})", n.id, target_of(n));
    const std::string err = trim(r.err);
    if (r.code == 255 || r.code == -1) {
        std::string cause = "ssh failed";
        for (const char* s : {"Connection refused", "No route to host", "timed out",
                              "Could not resolve", "Network is unreachable", "no answer within",
                              "Connection closed", "Connection reset"}) {
            if (err.find(s) != std::string::npos) cause = "unreachable";
        }
        if (err.find("Permission denied") != std::string::npos ||
            err.find("Host key verification failed") != std::string::npos ||
            err.find("Too many authentication failures") != std::string::npos) {
            cause = "auth refused";
        }
        return unavailable(fmt::format("{}: {}: {}", who, cause, err));
    }
    if (r.code == kNoBinary)
        return not_found(
            fmt::format("{}: binary missing: {} is not an executable there (set "
                        "nodes[].ssh.bin_dir)",
                        who, exe));
    if (r.code == kNoVersion)
        return internal_error(
            fmt::format("{}: {} --version failed: {}", who, exe, trim(r.out + r.err)));
    if (r.code == kVersionMismatch)
        return invalid_argument(fmt::format("{}: version mismatch: {} is {}, this tandem is {}",
                                            who, exe, trim(r.out), kVersion));
    return internal_error(
        fmt::format("{}: the remote command failed ({}): {}", who, r.code, trim(r.out + r.err)));
}

std::string record_path(const RunDir& run, const std::string& node) {
    return run.root() + "/remote/" + node + ".json";
}

// Stops `pid` if it is a tandem process; prints "stopped", "killed" or "gone".
std::string stop_script(long pid) {
    return fmt::format(
        "p={}; if kill -0 $p 2>/dev/null && grep -q tandem- /proc/$p/cmdline 2>/dev/null; then "
        "kill -TERM $p; i=0; while kill -0 $p 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; "
        "i=$((i+1)); done; if kill -0 $p 2>/dev/null; then kill -KILL $p; echo killed; else "
        "echo stopped; fi; else echo gone; fi",
        pid);
}

}  // namespace

bool is_local_host(const std::string& host) {
    if (host == "127.0.0.1" || host == "localhost" || host == "::1") return true;
    char name[256] = {};
    ::gethostname(name, sizeof(name) - 1);
    if (host == name) return true;
    ifaddrs* ifs = nullptr;
    if (::getifaddrs(&ifs) != 0) return false;
    bool local = false;
    for (ifaddrs* i = ifs; i && !local; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        char buf[INET6_ADDRSTRLEN] = {};
        if (i->ifa_addr->sa_family == AF_INET) {
            ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf,
                        sizeof(buf));
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, buf,
                        sizeof(buf));
        }
        local = host == buf;
    }
    ::freeifaddrs(ifs);
    return local;
}

config::Launcher launcher_of(const config::NodeSpec& node) {
    if (node.launcher) return *node.launcher;
    return is_local_host(node.host) ? config::Launcher::kLocal : config::Launcher::kSsh;
}

std::vector<std::string> ssh_command(const config::NodeSpec& n) {
    std::vector<std::string> a = {
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"};
    if (n.ssh.port != 22) a.insert(a.end(), {"-p", std::to_string(n.ssh.port)});
    if (!n.ssh.identity_file.empty())
        a.insert(a.end(), {"-i", n.ssh.identity_file, "-o", "IdentitiesOnly=yes"});
    for (const auto& o : n.ssh.options) a.insert(a.end(), {"-o", o});
    a.push_back(target_of(n));
    return a;
}

SshLauncher::SshLauncher(const RunDir& run, const config::ClusterSpec& spec,
                         std::string cluster_path, std::vector<std::string> overrides,
                         std::string local_bin_dir)
    : run_(run),
      spec_(spec),
      cluster_path_(std::move(cluster_path)),
      overrides_(std::move(overrides)),
      local_bin_dir_(std::move(local_bin_dir)) {}

Status SshLauncher::check_coordinator_address() const {
    const std::string& h = spec_.coordinator.host;
    if (h == "127.0.0.1" || h == "localhost" || h == "::1" || h == "0.0.0.0" || h == "::" ||
        h == "*") {
        return invalid_argument(fmt::format(
            "coordinator.host is {}: nodes on other hosts connect to that address; set it to this "
            "machine's address on their network",
            h));
    }
    return Status();
}

std::string SshLauncher::remote_dir(const config::NodeSpec& n) const {
    return n.ssh.run_dir.empty() ? fmt::format(".tandem/{}/{}", spec_.name, n.id) : n.ssh.run_dir;
}

std::string SshLauncher::remote_exe(const config::NodeSpec& n) const {
    const std::string dir = n.ssh.bin_dir.empty() ? local_bin_dir_ : n.ssh.bin_dir;
    return fmt::format("{}/tandem-{}-node", dir, actor_role_name(n.role));
}

Result<SshOutcome> SshLauncher::ensure_running(const config::NodeSpec& n) const {
    TANDEM_ASSIGN_OR_RETURN(std::string secret, read_cluster_secret(spec_, run_));
    TANDEM_ASSIGN_OR_RETURN(std::string cluster_text, read_file(cluster_path_));
    // With CURVE: the node's secret key (unless the cluster file gives its public key: then its
    // key is on the host already) and the coordinator's public key travel like the secret.
    std::string node_key, coordinator_key;
    if (spec_.curve_enabled()) {
        if (n.public_key.empty()) {
            TANDEM_ASSIGN_OR_RETURN(net::CurveKeys k,
                                    net::read_curve_keys(net::curve_key_path(run_.root(), n.id)));
            node_key = k.secret_z85;
        }
        TANDEM_ASSIGN_OR_RETURN(coordinator_key, net::read_curve_public(net::curve_public_path(
                                                     run_.root(), "coordinator")));
    }
    const std::string dir = remote_dir(n);
    const std::string exe = remote_exe(n);
    // The agent's command line: the copied files, this run's overrides, its own secret file.
    std::string agent = fmt::format(
        "{} --cluster \"$d/cluster.yaml\" --node {} --run-dir \"$d\" "
        "\"secret_file=$d/cluster-secret\"",
        sq(exe), sq(n.id));
    for (const auto& o : overrides_) agent += " " + sq(o);
    // One round trip: check, copy (stdin: the secret's line, the node's CURVE key and the
    // coordinator's public key, each a line, empty without CURVE; then the cluster file), start.
    const std::string script = fmt::format(
        "umask 077; d={dir}; case $d in /*) ;; *) d=\"$HOME/$d\";; esac; "
        "mkdir -p \"$d/logs\" || exit 6; "
        "if [ -f \"$d/agent.pid\" ]; then p=$(cat \"$d/agent.pid\"); "
        "  if kill -0 $p 2>/dev/null && grep -q tandem- /proc/$p/cmdline 2>/dev/null; then "
        "    echo running $p; exit 0; fi; fi; "
        "[ -x {exe} ] || exit {no_binary}; "
        "v=$({exe} --version 2>&1) || {{ echo \"$v\"; exit {no_version}; }}; "
        "[ \"$v\" = {version} ] || {{ echo \"$v\"; exit {mismatch}; }}; "
        "IFS= read -r s; printf '%s\\n' \"$s\" > \"$d/cluster-secret\"; "
        "IFS= read -r k; IFS= read -r c; mkdir -p \"$d/keys\" || exit 6; "
        "if [ -n \"$k\" ]; then printf '%s\\n' \"$k\" > \"$d/keys/\"{node}.key; fi; "
        "if [ -n \"$c\" ]; then printf '%s\\n' \"$c\" > \"$d/keys/coordinator.pub\"; fi; "
        "cat > \"$d/cluster.yaml\"; "
        "setsid {agent} > \"$d/logs/{node}.out\" 2>&1 < /dev/null & "
        "echo $! > \"$d/agent.pid\"; echo started $!",
        fmt::arg("dir", sq(dir)), fmt::arg("exe", sq(exe)), fmt::arg("no_binary", kNoBinary),
        fmt::arg("no_version", kNoVersion), fmt::arg("version", sq(kVersion)),
        fmt::arg("mismatch", kVersionMismatch), fmt::arg("agent", agent), fmt::arg("node", n.id));
    std::vector<std::string> argv = ssh_command(n);
    argv.push_back(script);
    const Ran r = run_captured(
        argv, trim(secret) + "\n" + node_key + "\n" + coordinator_key + "\n" + cluster_text,
        kSshTimeout);
    if (r.code != 0) return explain(n, r, exe);
    std::istringstream words(r.out);
    std::string what;
    SshOutcome outcome;
    words >> what >> outcome.pid;
    if ((what != "started" && what != "running") || outcome.pid <= 0)
        return internal_error(
            fmt::format("node {} ({}): unexpected answer: {}{}", n.id, target_of(n), r.out, r.err));
    outcome.started = what == "started";
    fs::create_directories(run_.root() + "/remote");
    const Json record = {{"node", n.id},
                         {"host", n.host},
                         {"ssh", ssh_command(n)},
                         {"pid", outcome.pid},
                         {"dir", dir}};
    TANDEM_RETURN_IF_ERROR(write_file_atomic(record_path(run_, n.id), record.dump() + "\n"));
    return outcome;
}

std::string SshLauncher::startup_report(const config::NodeSpec& n, size_t lines) const {
    const std::string script = fmt::format(
        "d={}; case $d in /*) ;; *) d=\"$HOME/$d\";; esac; p=$(cat \"$d/agent.pid\" 2>/dev/null); "
        "if [ -n \"$p\" ] && kill -0 $p 2>/dev/null; then echo \"(agent running, pid $p)\"; "
        "else echo \"(agent not running)\"; fi; tail -n {} \"$d/logs/{}.out\" 2>/dev/null",
        sq(remote_dir(n)), lines, n.id);
    std::vector<std::string> argv = ssh_command(n);
    argv.push_back(script);
    const Ran r = run_captured(argv, "", kSshTimeout);
    return r.code == 0 ? r.out : trim(r.err) + "\n";
}

int stop_remote_agents(const RunDir& run, std::ostream& out,
                       const std::vector<std::string>& nodes) {
    const std::string dir = run.root() + "/remote";
    if (!fs::exists(dir)) return 0;
    int stopped = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() != ".json") continue;
        const std::string node = e.path().stem().string();
        if (!nodes.empty() && std::find(nodes.begin(), nodes.end(), node) == nodes.end()) continue;
        auto text = read_file(e.path().string());
        const Json rec = text.ok() ? Json::parse(*text, nullptr, false) : Json();
        if (!rec.is_object() || !rec.contains("ssh") || !rec.contains("pid")) {
            out << fmt::format("{}: unreadable record, removed\n", e.path().string());
            fs::remove(e.path());
            continue;
        }
        std::vector<std::string> argv = rec["ssh"].get<std::vector<std::string>>();
        argv.push_back(stop_script(rec["pid"].get<long>()));
        const Ran r = run_captured(argv, "", kSshTimeout);
        const std::string how = trim(r.out);
        if (r.code != 0) {
            out << fmt::format("node {} on {}: not stopped, ssh failed: {}\n", node,
                               rec.value("host", "?"), trim(r.err));
            continue;
        }
        if (how != "gone") {
            out << fmt::format("stopped {} on {} (pid {}){}\n", node, rec.value("host", "?"),
                               rec["pid"].get<long>(), how == "killed" ? " with SIGKILL" : "");
            ++stopped;
        }
        fs::remove(e.path());
    }
    return stopped;
}

}  // namespace tandem::cli
