// tandem-bench-control: many simulated node agents (DEALER sockets on a few threads) heartbeating
// against a real tandem-coordinator process. Prints one JSON object per line:
//   {"case":"heartbeat", agents, rate_hz, seconds, coordinator_cpu_pct, rtt_p50_ms, rtt_p99_ms,
//   ...}
//   {"case":"submit_to_placed", samples, p50_ms, p99_ms, ...}
//
//   tandem-bench-control [--agents 1000] [--seconds 20] [--threads 4] [--submits 20]
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/net/http_client.h"
#include "common/wire/messages.h"
#include "common/wire/zmq_io.h"

namespace {

using namespace tandem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

int free_port() {
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::router);
    s.bind("tcp://127.0.0.1:*");
    const std::string ep = s.get(zmq::sockopt::last_endpoint);
    return std::stoi(ep.substr(ep.rfind(':') + 1));
}

// User plus system CPU seconds of a process (all its threads, ZeroMQ's I/O thread included).
double cpu_seconds(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string s;
    std::getline(in, s);
    std::istringstream rest(s.substr(s.rfind(')') + 2));
    std::string field;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stol(field);
        if (i == 15) stime = std::stol(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Shared {
    std::mutex mu;
    std::vector<double> rtt_ms;                       // guarded by mu
    std::map<std::string, Clock::time_point> starts;  // actor -> StartActor receipt; guarded by mu
    std::atomic<bool> measuring{false};
    std::atomic<bool> stop{false};
    std::atomic<int> registered{0};
};

// One thread drives `ids` simulated agents: registers each, then heartbeats at `rate_hz` with
// jitter, answers nothing else, records heartbeat round trips and StartActor arrivals.
void agent_thread(zmq::context_t& ctx, const std::string& endpoint, const std::string& secret,
                  std::vector<std::string> ids, double rate_hz, Shared& shared) {
    struct Sim {
        std::string id;
        std::unique_ptr<zmq::socket_t> s;
        Clock::time_point next;
        bool registered = false;
    };
    std::mt19937_64 rng(std::hash<std::string>()(ids.front()));
    std::vector<Sim> sims;
    const auto period =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate_hz));
    for (size_t i = 0; i < ids.size(); ++i) {
        Sim sim;
        sim.id = ids[i];
        sim.s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
        sim.s->set(zmq::sockopt::linger, 0);
        sim.s->connect(endpoint);
        wire::Register r;
        r.node_id = sim.id;
        r.role = i % 2 == 0 ? "rollout" : "trainer";
        r.host = "127.0.0.1";
        r.secret = secret;
        r.instance = sim.id;
        r.agent_version = "bench";
        r.resources = {8, 65536, 0};
        (void)wire::send_envelope(*sim.s, wire::make_envelope(r, 1));
        sim.next = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      period * (static_cast<double>(rng() % 1000) / 1000.0));
        sims.push_back(std::move(sim));
    }
    uint64_t seq = 1;
    std::vector<zmq::pollitem_t> items;
    for (auto& s : sims) items.push_back({s.s->handle(), 0, ZMQ_POLLIN, 0});
    while (!shared.stop.load()) {
        const auto now = Clock::now();
        for (auto& s : sims) {
            if (!s.registered || now < s.next) continue;
            wire::Heartbeat h;
            h.node_id = s.id;
            h.sent_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch())
                            .count();
            (void)wire::send_envelope(*s.s, wire::make_envelope(h, ++seq));
            s.next += period;
        }
        // Sleep until the next heartbeat is due (or a reply arrives), not a fixed tick, so the
        // simulator itself leaves the cores to the coordinator.
        auto next = Clock::now() + std::chrono::milliseconds(50);
        for (const auto& s : sims) {
            if (s.registered) next = std::min(next, s.next);
        }
        const auto wait =
            std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now());
        zmq::poll(items.data(), items.size(), std::max(wait, std::chrono::milliseconds(0)));
        for (size_t i = 0; i < items.size(); ++i) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            while (auto frames = wire::try_recv_frames(*sims[i].s)) {
                auto env = wire::decode(*frames);
                if (!env.ok()) continue;
                const auto t = Clock::now();
                if (env->type == wire::RegisterAck::kType) {
                    sims[i].registered = true;
                    shared.registered.fetch_add(1);
                } else if (env->type == wire::HeartbeatAck::kType && shared.measuring.load()) {
                    const auto sent = std::chrono::nanoseconds(env->body["sent_ns"].get<int64_t>());
                    const double ms =
                        std::chrono::duration<double, std::milli>(t.time_since_epoch() - sent)
                            .count();
                    std::lock_guard lock(shared.mu);
                    shared.rtt_ms.push_back(ms);
                } else if (env->type == wire::StartActor::kType) {
                    std::lock_guard lock(shared.mu);
                    shared.starts[env->body["actor"].get<std::string>()] = t;
                }
            }
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    int agents = 1000, seconds = 20, threads = 4, submits = 20;
    double rate_hz = 1.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--agents")
            agents = std::stoi(argv[i + 1]);
        else if (a == "--seconds")
            seconds = std::stoi(argv[i + 1]);
        else if (a == "--threads")
            threads = std::stoi(argv[i + 1]);
        else if (a == "--submits")
            submits = std::stoi(argv[i + 1]);
        else if (a == "--rate-hz")
            rate_hz = std::stod(argv[i + 1]);
    }
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);

    namespace fs = std::filesystem;
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("tandem_bench_control_{}", ::getpid());
    fs::create_directories(dir / "run");
    const int agent_port = free_port(), http_port = free_port();
    const std::string secret = "bench-secret", token = "bench-token";
    std::ofstream(dir / "run" / "cluster-secret") << secret << "\n";
    std::ofstream(dir / "run" / "api-token") << token << "\n";
    std::ofstream(dir / "cluster.yaml") << fmt::format(
        "name: bench\nrun_dir: {}\ncoordinator: {{agent_port: {}, http_port: {}, heartbeat_ms: {}, "
        "dead_after_ms: {}}}\n"
        "nodes:\n  - {{id: placeholder, role: trainer}}\n",
        (dir / "run").string(), agent_port, http_port, static_cast<int>(1000 / rate_hz),
        static_cast<int>(5000 / rate_hz));
    const std::string coord_bin =
        fs::canonical("/proc/self/exe").parent_path().parent_path().parent_path().string() +
        "/bin/tandem-coordinator";
    const pid_t coord = ::fork();
    if (coord == 0) {
        // The coordinator goes with the benchmark, however that ends (a closed pipe, Ctrl-C).
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        const int devnull = ::open("/dev/null", O_WRONLY);
        ::dup2(devnull, STDERR_FILENO);
        ::execl(coord_bin.c_str(), coord_bin.c_str(), "--cluster", (dir / "cluster.yaml").c_str(),
                nullptr);
        ::_exit(127);
    }
    const std::string http = fmt::format("http://127.0.0.1:{}", http_port);
    for (int i = 0; i < 500; ++i) {
        if (net::http_call(http, "GET", "/healthz").ok()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    zmq::context_t ctx(2);
    zmq_ctx_set(ctx.handle(), ZMQ_MAX_SOCKETS, agents + 64);
    Shared shared;
    std::vector<std::thread> pool;
    const std::string endpoint = fmt::format("tcp://127.0.0.1:{}", agent_port);
    for (int t = 0; t < threads; ++t) {
        std::vector<std::string> ids;
        for (int i = t; i < agents; i += threads) ids.push_back(fmt::format("sim-{:05d}", i));
        pool.emplace_back(agent_thread, std::ref(ctx), endpoint, secret, ids, rate_hz,
                          std::ref(shared));
    }
    const auto reg_start = Clock::now();
    while (shared.registered.load() < agents &&
           Clock::now() - reg_start < std::chrono::seconds(60)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const double register_s = std::chrono::duration<double>(Clock::now() - reg_start).count();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // let the heartbeat phases settle

    shared.measuring = true;
    const double cpu0 = cpu_seconds(coord);
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    const double cpu1 = cpu_seconds(coord);
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    shared.measuring = false;
    std::vector<double> rtt;
    {
        std::lock_guard lock(shared.mu);
        rtt = shared.rtt_ms;
    }
    const double cpu_pct = 100.0 * (cpu1 - cpu0) / wall;
    std::cout << Json{{"case", "heartbeat"},
                      {"agents", agents},
                      {"registered", shared.registered.load()},
                      {"register_all_s", register_s},
                      {"rate_hz", rate_hz},
                      {"seconds", wall},
                      {"heartbeats", rtt.size()},
                      {"coordinator_cpu_pct", cpu_pct},
                      {"rtt_p50_ms", percentile(rtt, 0.50)},
                      {"rtt_p99_ms", percentile(rtt, 0.99)},
                      {"rtt_max_ms", percentile(rtt, 1.0)},
                      {"target_cpu_pct", 10},
                      {"target_p99_ms", 10},
                      {"ratio", cpu_pct / 10.0}}
                     .dump()
              << std::endl;

    // Submit-to-placed: POST a job, time until its StartActor messages reach the simulated agents.
    std::vector<double> lat;
    const std::string spec =
        "name: b\nkind: diagnostic\ntrainer: {replicas: 1}\nrollout: {replicas: 2}\n";
    for (int i = 0; i < submits; ++i) {
        const auto s0 = Clock::now();
        auto r =
            net::http_call(http, "POST", "/api/v1/jobs", Json{{"spec_yaml", spec}}.dump(), token);
        if (!r.ok() || r->status != 201) {
            std::cerr << "submit failed: " << (r.ok() ? r->body : r.status().message()) << "\n";
            break;
        }
        const std::string job = Json::parse(r->body)["job"];
        const std::vector<std::string> actors = {job + "/trainer-0", job + "/rollout-0",
                                                 job + "/rollout-1"};
        Clock::time_point placed{};
        const auto deadline = Clock::now() + std::chrono::seconds(5);
        while (Clock::now() < deadline) {
            {
                std::lock_guard lock(shared.mu);
                bool all = true;
                for (const auto& a : actors) {
                    auto it = shared.starts.find(a);
                    if (it == shared.starts.end())
                        all = false;
                    else
                        placed = std::max(placed, it->second);
                }
                if (all) break;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        lat.push_back(std::chrono::duration<double, std::milli>(placed - s0).count());
        (void)net::http_call(http, "POST", "/api/v1/jobs/" + job + "/cancel", "{}", token);
    }
    std::cout << Json{{"case", "submit_to_placed"},
                      {"agents", agents},
                      {"samples", lat.size()},
                      {"p50_ms", percentile(lat, 0.5)},
                      {"p99_ms", percentile(lat, 0.99)},
                      {"target_ms", 100},
                      {"ratio", percentile(lat, 0.99) / 100.0}}
                     .dump()
              << std::endl;

    shared.stop = true;
    for (auto& t : pool) t.join();
    ::kill(coord, SIGTERM);
    ::waitpid(coord, nullptr, 0);
    fs::remove_all(dir);
    return 0;
}
