// tandem-bench-cluster: one trainer host publishes weight versions that N rollout hosts fetch, on a
// cluster in a box (every host a network namespace, each link limited by tc in both directions).
// Per N and mode (direct: every reader pulls from the trainer; relay: readers in the relay tree,
// fan-out F, by default 1 and 2) it prints one JSON line:
//   {"hosts": N, "relay": bool, "fanout": F (relay only), "bytes": B, "rate": "1gbit",
//   "seconds_per_version": best of the
//    timed versions (publish excluded: from the fetch commands to the last reader's answer),
//    "trainer_egress_bytes_per_version": tx bytes on the trainer host's link per version,
//    "copies_per_version": that / B, "cpu_busy_share": the machine's CPU busy share (all cores)
//    over the timed versions, "reader_seconds": each reader's own fetch time in the best version,
//    in tree order (relay: reader i reads from reader i - F), to see what each relay hop adds}
// The publisher and readers are tandem-bench-weights --role processes (UCX over TCP) started in
// the hosts with `ip netns exec`.
//
//   tandem-bench-cluster [--hosts 1,2,4,6] [--bytes 64M] [--rate 1gbit] [--versions 3]
//                        [--fanouts 1,2] [--direct 1] [--chunk-bytes 4M]
// --direct 0 leaves out the direct case; --chunk-bytes is the publisher's chunk (the relay's
// forwarding unit: a relay serves a chunk once it has verified all of it).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/weights/descriptor.h"
#include "tests/integration/hosts/cluster_in_a_box.h"

using json = nlohmann::json;
using namespace tandem;

namespace {

// A role process in a box host: JSON lines on stdout, commands on stdin. Closing stdin ends it.
class Role {
public:
    Role(const testing::ClusterInABox& box, int host, const std::vector<std::string>& args) {
        int out[2], in[2];
        if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(in, O_CLOEXEC) != 0) return;
        std::vector<std::string> argv = {"ip",
                                         "netns",
                                         "exec",
                                         box.namespace_name(host),
                                         "env",
                                         "UCX_NET_DEVICES=eth0",
                                         TANDEM_BENCH_WEIGHTS};
        argv.insert(argv.end(), args.begin(), args.end());
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(out[1], STDOUT_FILENO);
            ::dup2(in[0], STDIN_FILENO);
            std::vector<char*> a;
            for (auto& s : argv) a.push_back(s.data());
            a.push_back(nullptr);
            ::execvp(a[0], a.data());
            ::_exit(127);
        }
        ::close(out[1]);
        ::close(in[0]);
        out_ = ::fdopen(out[0], "r");
        in_ = in[1];
    }
    ~Role() {
        if (in_ >= 0) ::close(in_);
        if (out_) std::fclose(out_);
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    Role(const Role&) = delete;
    Role& operator=(const Role&) = delete;

    void send(const std::string& line) {
        const std::string l = line + "\n";
        (void)!::write(in_, l.data(), l.size());
    }
    // The next JSON line (nullopt at end of output).
    std::optional<json> message() {
        char* line = nullptr;
        size_t cap = 0;
        while (out_ && ::getline(&line, &cap, out_) > 0) {
            auto j = json::parse(line, nullptr, false);
            if (j.is_object()) {
                std::free(line);
                return j;
            }
        }
        std::free(line);
        return std::nullopt;
    }

private:
    pid_t pid_ = -1;
    FILE* out_ = nullptr;
    int in_ = -1;
};

// The machine's CPU time (all cores, in clock ticks from /proc/stat): {busy, total}. The box hosts
// share this machine's cores, so the busy share over a version says whether the transfer was
// bound by CPU rather than by the links.
std::pair<uint64_t, uint64_t> cpu_ticks() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    uint64_t v[8] = {};
    in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
    const uint64_t idle = v[3] + v[4];
    uint64_t total = 0;
    for (uint64_t x : v) total += x;
    return {total - idle, total};
}

uint64_t tx_bytes(const testing::ClusterInABox& box, int host) {
    FILE* p = ::popen(box.exec(host, "cat /sys/class/net/eth0/statistics/tx_bytes").c_str(), "r");
    unsigned long long v = 0;
    if (p) {
        if (std::fscanf(p, "%llu", &v) != 1) v = 0;
        ::pclose(p);
    }
    return v;
}

uint64_t parse_size(std::string s) {
    uint64_t mult = 1;
    if (!s.empty() && (s.back() == 'M' || s.back() == 'G' || s.back() == 'K')) {
        mult = s.back() == 'G' ? 1ull << 30 : s.back() == 'M' ? 1ull << 20 : 1ull << 10;
        s.pop_back();
    }
    return std::stoull(s) * mult;
}

std::vector<int> parse_list(const std::string& s) {
    std::vector<int> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
    return out;
}

int run_case(int readers, int fanout, uint64_t bytes, const std::string& rate, int versions,
             const std::string& chunk) {
    const bool relay = fanout > 0;
    auto box = testing::ClusterInABox::create({.hosts = readers + 1, .rate = rate, .sshd = false});
    if (!box.ok()) {
        std::cout << json{{"hosts", readers}, {"error", box.status().message()}}.dump() << "\n";
        return 1;
    }
    const auto& b = **box;
    const std::vector<std::string> common = {
        "--tls", "tcp,self", "--bytes", std::to_string(bytes), "--chunk-bytes", chunk};
    auto args = [&](const std::string& role, std::vector<std::string> more) {
        std::vector<std::string> a = {"--role", role};
        a.insert(a.end(), common.begin(), common.end());
        a.insert(a.end(), more.begin(), more.end());
        return a;
    };
    Role publisher(b, 0, args("publisher", {}));
    auto ready = publisher.message();
    if (!ready || !ready->contains("ready")) {
        std::cout << json{{"hosts", readers}, {"error", "publisher did not start"}}.dump() << "\n";
        return 1;
    }
    std::vector<std::unique_ptr<Role>> rs;
    std::vector<json> sources;
    std::vector<std::string> names;
    for (int i = 0; i < readers; ++i) {
        std::vector<std::string> more = {"--index", std::to_string(i)};
        if (relay) more.push_back("--relay");
        rs.push_back(std::make_unique<Role>(b, i + 1, args("reader", more)));
        auto m = rs.back()->message();
        if (!m || !m->contains("relay")) {
            std::cout << json{{"hosts", readers}, {"error", "reader did not start"}}.dump() << "\n";
            return 1;
        }
        sources.push_back(m->at("relay"));
        names.push_back(std::to_string(i));
    }
    const auto plan = weights::plan_relay_tree(names, relay ? static_cast<uint32_t>(fanout) : 1);
    double best = 1e30;
    std::vector<double> best_readers;
    uint64_t egress = 0, busy = 0, ticks = 0;
    for (int v = 0; v < versions + 1; ++v) {  // the first version warms up connections
        publisher.send("publish");
        auto d = publisher.message();
        if (!d || !d->contains("descriptor")) return 1;
        const uint64_t tx0 = tx_bytes(b, 0);
        const auto cpu0 = cpu_ticks();
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < readers; ++r) {
            json cmd = {{"descriptor", d->at("descriptor")}};
            if (relay && plan[r].source) cmd["relay"] = sources[*plan[r].source];
            rs[r]->send(cmd.dump());
        }
        std::vector<double> reader_seconds;
        for (auto& r : rs) {
            auto m = r->message();
            if (!m || !m->value("ok", false)) {
                std::cout << json{{"hosts", readers},
                                  {"relay", relay},
                                  {"error", m ? m->dump() : "no reply"}}
                                 .dump()
                          << "\n";
                return 1;
            }
            reader_seconds.push_back(m->value("seconds", 0.0));
        }
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (v > 0) {
            const auto cpu1 = cpu_ticks();
            busy += cpu1.first - cpu0.first;
            ticks += cpu1.second - cpu0.second;
            if (s < best) best_readers = reader_seconds;
            best = std::min(best, s);
            egress += tx_bytes(b, 0) - tx0;
        }
    }
    const double per_version = static_cast<double>(egress) / versions;
    json out = {{"hosts", readers},
                {"relay", relay},
                {"bytes", bytes},
                {"rate", rate},
                {"chunk_bytes", parse_size(chunk)},
                {"versions", versions},
                {"seconds_per_version", best},
                {"trainer_egress_bytes_per_version", static_cast<uint64_t>(per_version)},
                {"copies_per_version", per_version / static_cast<double>(bytes)},
                {"cpu_busy_share", ticks ? static_cast<double>(busy) / ticks : 0.0},
                {"reader_seconds", best_readers}};
    if (relay) out["fanout"] = fanout;
    std::cout << out.dump() << std::endl;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string hosts = "1,2,4,6", size = "64M", rate = "1gbit", fanouts = "1,2", chunk = "4M";
    int versions = 3;
    bool direct = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--hosts")
            hosts = v;
        else if (k == "--bytes")
            size = v;
        else if (k == "--rate")
            rate = v;
        else if (k == "--versions")
            versions = std::stoi(v);
        else if (k == "--fanouts")
            fanouts = v;
        else if (k == "--direct")
            direct = v != "0";
        else if (k == "--chunk-bytes")
            chunk = v;
        else
            return std::cerr << "unknown option " << k << "\n", 2;
    }
    if (::geteuid() != 0) return std::cerr << "tandem-bench-cluster: needs root (netns)\n", 2;
    int rc = 0;
    for (int n : parse_list(hosts)) {
        if (direct) rc |= run_case(n, 0, parse_size(size), rate, versions, chunk);
        for (int f : parse_list(fanouts))
            rc |= run_case(n, f, parse_size(size), rate, versions, chunk);
    }
    return rc;
}
