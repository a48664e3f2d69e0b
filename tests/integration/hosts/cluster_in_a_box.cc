#include "tests/integration/hosts/cluster_in_a_box.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace tandem::testing {

namespace {

namespace fs = std::filesystem;

struct Shell {
    int code = -1;
    std::string out;
};

// Runs `cmd` under /bin/sh, stdout and stderr captured.
Shell sh(const std::string& cmd) {
    Shell r;
    FILE* p = ::popen(("(" + cmd + ") 2>&1").c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf;
    while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
    const int status = ::pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

Status must(const std::string& cmd) {
    Shell r = sh(cmd);
    if (r.code != 0) return unavailable(fmt::format("`{}` failed ({}): {}", cmd, r.code, r.out));
    return Status();
}

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

bool tcp_open(const std::string& address, int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, address.c_str(), &a.sin_addr);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(fd);
    return ok;
}

std::atomic<int> g_boxes{0};

// Holds an exclusive flock on a file for its lifetime (subnet choice across processes).
class FileLock {
public:
    explicit FileLock(const char* path) : fd_(::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
        if (fd_ >= 0) ::flock(fd_, LOCK_EX);
    }
    ~FileLock() {
        if (fd_ >= 0) ::close(fd_);
    }
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;

private:
    int fd_;
};

}  // namespace

Result<std::unique_ptr<ClusterInABox>> ClusterInABox::create(const BoxOptions& options) {
    if (::geteuid() != 0) return unavailable("needs root to create network namespaces");
    if (options.hosts < 1 || options.hosts > 200 || options.networks < 1 || options.networks > 8)
        return invalid_argument("1..200 hosts and 1..8 networks");
    if (sh("command -v ip && command -v tc").code != 0)
        return unavailable("iproute2 (ip, tc) is not installed");
    if (options.sshd && !fs::exists("/usr/sbin/sshd"))
        return unavailable("/usr/sbin/sshd is missing (Debian openssh-server)");
    std::unique_ptr<ClusterInABox> box(new ClusterInABox(options));
    if (Status s = box->build(); !s.ok()) return s;  // the destructor removes what was made
    return box;
}

std::string ClusterInABox::address(int host, int network) const {
    return fmt::format("10.{}.{}.{}", subnet_a_, subnet_b_ + network, 10 + host);
}
std::string ClusterInABox::root_address(int network) const {
    return fmt::format("10.{}.{}.1", subnet_a_, subnet_b_ + network);
}
std::string ClusterInABox::namespace_name(int host) const {
    return fmt::format("{}-h{}", tag_, host);
}
std::string ClusterInABox::exec(int host, const std::string& cmd) const {
    return fmt::format("ip netns exec {} sh -c {}", namespace_name(host), quote(cmd));
}

Status ClusterInABox::build() {
    tag_ = fmt::format("tb{}{}", ::getpid() % 100000, static_cast<char>('a' + g_boxes++ % 26));
    dir_ = (fs::temp_directory_path() / ("tandem-" + tag_)).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    {
        // Choose subnets no interface uses and make the bridges before another box can look.
        FileLock lock("/tmp/tandem-cluster-in-a-box.lock");
        const std::string used = sh("ip -o -4 addr show").out;
        for (int a = 180; a < 200 && subnet_a_ == 0; ++a) {
            for (int b = 0; b + options_.networks <= 256 && subnet_a_ == 0; b += 8) {
                bool free = true;
                for (int k = 0; k < options_.networks; ++k)
                    free =
                        free && used.find(fmt::format(" 10.{}.{}.", a, b + k)) == std::string::npos;
                if (free) subnet_a_ = a, subnet_b_ = b;
            }
        }
        if (subnet_a_ == 0) return unavailable("no free 10.180-199.x.0/24 subnet");
        bridges_made_ = true;
        for (int k = 0; k < options_.networks; ++k) {
            const std::string br = fmt::format("{}b{}", tag_, k);
            TANDEM_RETURN_IF_ERROR(must(
                fmt::format("ip link add {br} type bridge && ip addr add {addr}/24 dev {br} && "
                            "ip link set {br} up",
                            fmt::arg("br", br), fmt::arg("addr", root_address(k)))));
        }
    }
    for (int i = 0; i < options_.hosts; ++i) {
        const std::string ns = namespace_name(i);
        TANDEM_RETURN_IF_ERROR(must(fmt::format("ip netns add {}", ns)));
        namespaces_made_ = i + 1;
        TANDEM_RETURN_IF_ERROR(must(fmt::format("ip netns exec {} ip link set lo up", ns)));
        for (int k = 0; k < options_.networks; ++k) {
            const std::string outer = fmt::format("{}h{}n{}", tag_, i, k);
            const std::string inner = fmt::format("{}i{}n{}", tag_, i, k);
            TANDEM_RETURN_IF_ERROR(must(fmt::format(
                "ip link add {o} type veth peer name {in} && ip link set {in} netns {ns} && "
                "ip link set {o} master {tag}b{k} && ip link set {o} up && "
                "ip netns exec {ns} ip link set {in} name eth{k} && "
                "ip netns exec {ns} ip addr add {addr}/24 dev eth{k} && "
                "ip netns exec {ns} ip link set eth{k} up",
                fmt::arg("o", outer), fmt::arg("in", inner), fmt::arg("ns", ns),
                fmt::arg("tag", tag_), fmt::arg("k", k), fmt::arg("addr", address(i, k)))));
            if (!options_.rate.empty()) {
                // Both directions: the host's egress on eth<k>, its ingress as the bridge port's
                // egress. Burst sized for HZ=250 at 1 Gbit/s.
                const std::string tbf =
                    fmt::format("root tbf rate {} burst 512kb latency 20ms", options_.rate);
                TANDEM_RETURN_IF_ERROR(must(fmt::format(
                    "ip netns exec {} tc qdisc add dev eth{} {} && tc qdisc add dev {} {}", ns, k,
                    tbf, outer, tbf)));
            }
        }
    }
    if (options_.sshd) {
        identity_ = dir_ + "/id_ed25519";
        TANDEM_RETURN_IF_ERROR(
            must(fmt::format("ssh-keygen -q -t ed25519 -N '' -C tandem-box -f {}", identity_)));
        TANDEM_RETURN_IF_ERROR(
            must(fmt::format("ssh-keygen -q -t ed25519 -N '' -f {}/host_key", dir_)));
        fs::copy_file(identity_ + ".pub", dir_ + "/authorized_keys");
        std::ofstream(dir_ + "/authorized_keys_none") << "";
        fs::create_directories("/run/sshd");  // sshd's privilege-separation directory
        for (int i = 0; i < options_.hosts; ++i) TANDEM_RETURN_IF_ERROR(start_sshd(i));
    }
    return Status();
}

Status ClusterInABox::start_sshd(int host) {
    bool refuse = false;
    for (int r : options_.refuse_ssh) refuse = refuse || r == host;
    const std::string cfg = fmt::format("{}/sshd_{}.conf", dir_, host);
    std::ofstream(cfg) << fmt::format(
        "Port 22\nHostKey {dir}/host_key\nPidFile none\nAuthorizedKeysFile {dir}/{keys}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
        "AcceptEnv LANG\nSubsystem sftp internal-sftp\n",
        fmt::arg("dir", dir_),
        fmt::arg("keys", refuse ? "authorized_keys_none" : "authorized_keys"));
    const std::string log = fmt::format("{}/sshd_{}.log", dir_, host);
    const std::string ns = namespace_name(host);
    const pid_t pid = ::fork();
    if (pid < 0) return unavailable("fork failed");
    if (pid == 0) {
        const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
        ::execl("/usr/sbin/ip", "ip", "netns", "exec", ns.c_str(), "/usr/sbin/sshd", "-D", "-e",
                "-f", cfg.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    sshd_.push_back(pid);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!tcp_open(address(host), 22)) {
        if (::waitpid(pid, nullptr, WNOHANG) == pid ||
            std::chrono::steady_clock::now() > deadline) {
            std::ifstream in(log);
            std::stringstream why;
            why << in.rdbuf();
            return unavailable(fmt::format("sshd in {} did not start: {}", ns, why.str()));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Status();
}

std::vector<pid_t> ClusterInABox::processes(int host) const {
    std::vector<pid_t> out;
    std::istringstream in(sh(fmt::format("ip netns pids {}", namespace_name(host))).out);
    for (pid_t p; in >> p;) {
        std::ifstream comm(fmt::format("/proc/{}/comm", p));
        std::string name;
        comm >> name;
        if (name != "sshd" && !name.empty()) out.push_back(p);
    }
    return out;
}

void ClusterInABox::kill_processes(int host) const {
    for (pid_t p : processes(host)) ::kill(p, SIGKILL);
}

uint64_t ClusterInABox::interface_bytes(int host, int network) const {
    const Shell r = sh(exec(host, fmt::format("cat /sys/class/net/eth{0}/statistics/rx_bytes "
                                              "/sys/class/net/eth{0}/statistics/tx_bytes",
                                              network)));
    std::istringstream in(r.out);
    uint64_t rx = 0, tx = 0;
    in >> rx >> tx;
    return rx + tx;
}

ClusterInABox::~ClusterInABox() {
    for (int i = 0; i < namespaces_made_; ++i) {
        const std::string ns = namespace_name(i);
        (void)sh(fmt::format("ip netns pids {} | xargs -r kill -9", ns));
    }
    for (pid_t p : sshd_) {
        ::kill(p, SIGKILL);
        ::waitpid(p, nullptr, 0);
    }
    for (int i = 0; i < namespaces_made_; ++i) {
        // The host's end of each veth pair first: that removes the pair at once. Deleting the
        // namespace would too, but in the kernel's cleanup work after `ip netns del` returns, so a
        // loaded machine still listed the pairs afterwards.
        for (int k = 0; k < options_.networks; ++k)
            (void)sh(fmt::format("ip link del {}h{}n{} 2>/dev/null", tag_, i, k));
        (void)sh(fmt::format("ip netns del {}", namespace_name(i)));
    }
    if (bridges_made_) {
        for (int k = 0; k < options_.networks; ++k)
            (void)sh(fmt::format("ip link del {}b{} 2>/dev/null", tag_, k));
    }
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
}

}  // namespace tandem::testing
