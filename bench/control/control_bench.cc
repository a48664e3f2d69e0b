// tandem-bench-control: many simulated node agents (DEALER sockets on a few threads of a few
// child processes, so that 10,000 agents fit the per-process file limit) heartbeating against a
// real tandem-coordinator process. They speak the agents' protocol: a heartbeat is not answered
// except when it asks for an echo (every --echo-every'th) or the node has had no ack for
// dead_after_ms; the full actor list rides on every 10th heartbeat. Prints one JSON object per
// line:
//   {"case":"heartbeat", agents, rate_hz, seconds, coordinator_cpu_pct, simulators_cpu_pct,
//   rtt_p50_ms, rtt_p99_ms, ...}   rtt: a heartbeat until its answer reaches the agent
//   (heartbeat-to-command latency); CPU from /proc/PID/stat (user + system, all threads)
//   {"case":"submit_to_placed", samples, p50_ms, p99_ms, ...}
//   {"case":"node_loss", detect_ms, limit_ms, ...}   an agent stops: until the API says it is dead
//
//   tandem-bench-control [--agents 1000] [--seconds 20] [--threads 4] [--procs N] [--submits 20]
//                        [--rate-hz 1] [--echo-every 10]
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
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
#include <queue>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/net/http_client.h"
#include "common/version.h"
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

int64_t ns_of(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// What a simulator process reports to the benchmark, one line each (steady-clock nanoseconds,
// which are the same clock in every process): "G" an agent registered; "R <at_ns> <rtt_ms>" a
// heartbeat answered; "S <actor> <at_ns>" a start_actor arrived; "L <node> <last_heartbeat_ns>" the
// agent that was told to stop heartbeating sent its last one.
class Report {
public:
    explicit Report(int fd) : fd_(fd) {}
    void line(const std::string& l, bool now = false) {
        std::lock_guard lock(mu_);
        if (buf_.size() + l.size() + 1 > PIPE_BUF) flush_locked();
        buf_ += l;
        buf_ += '\n';
        if (now) flush_locked();
    }
    void flush() {
        std::lock_guard lock(mu_);
        flush_locked();
    }

private:
    void flush_locked() {
        // Whole lines of at most PIPE_BUF bytes: one atomic write.
        if (!buf_.empty()) (void)!::write(fd_, buf_.data(), buf_.size());
        buf_.clear();
    }
    const int fd_;
    std::mutex mu_;
    std::string buf_;
};

std::atomic<bool> g_stop_one{false};  // SIGUSR1: the first agent stops heartbeating
std::atomic<bool> g_stop{false};      // SIGTERM: the simulator ends

// One thread drives `ids` simulated agents: registers each, then heartbeats at `rate_hz` with
// jitter, answers nothing else, reports heartbeat round trips and start_actor arrivals. Its cost
// grows with the messages, not with the agents: the due heartbeats come off a heap, and an epoll
// set over the sockets' ZMQ_FDs names the sockets that may have something to read (a zmq_poll
// over thousands of sockets per wake-up made the simulator, not the coordinator, the bottleneck).
void agent_thread(zmq::context_t& ctx, const std::string& endpoint, const std::string& secret,
                  std::vector<std::string> ids, double rate_hz, int echo_every, bool first,
                  Report& report) {
    struct Sim {
        std::string id;
        std::unique_ptr<zmq::socket_t> s;
        Clock::time_point next;
        bool registered = false;
        bool stopped = false;
        uint64_t beats = 0;
    };
    std::mt19937_64 rng(std::hash<std::string>()(ids.front()));
    std::vector<Sim> sims;
    const auto period =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate_hz));
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) throw std::runtime_error("epoll_create1 failed");
    for (size_t i = 0; i < ids.size(); ++i) {
        Sim sim;
        sim.id = ids[i];
        sim.s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
        sim.s->set(zmq::sockopt::linger, 0);
        sim.s->connect(endpoint);
        // Level-triggered: a mailbox fd that ZeroMQ has not emptied is reported again.
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        if (::epoll_ctl(ep, EPOLL_CTL_ADD, sim.s->get(zmq::sockopt::fd), &ev) != 0)
            throw std::runtime_error("epoll_ctl failed");
        wire::Register r;
        r.node_id = sim.id;
        r.role = i % 2 == 0 ? "rollout" : "trainer";
        r.host = "127.0.0.1";
        r.secret = secret;
        r.instance = sim.id;
        r.agent_version = kVersion;  // this build: no version-skew warnings
        r.resources = {8, 65536, 0};
        (void)wire::send_envelope(*sim.s, wire::make_envelope(r, 1));
        sim.next = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      period * (static_cast<double>(rng() % 1000) / 1000.0));
        sim.beats = rng() % static_cast<uint64_t>(std::max(1, echo_every));
        sims.push_back(std::move(sim));
    }
    using Due = std::pair<Clock::time_point, size_t>;  // (next heartbeat, sim)
    std::priority_queue<Due, std::vector<Due>, std::greater<>> due;
    // Reads everything waiting on sim i (ZMQ_EVENTS also clears its fd's readiness).
    auto drain = [&](size_t i) {
        Sim& sim = sims[i];
        while (sim.s->get(zmq::sockopt::events) & ZMQ_POLLIN) {
            while (auto frames = wire::try_recv_frames(*sim.s)) {
                auto env = wire::decode(*frames);
                if (!env.ok()) continue;
                const auto t = Clock::now();
                if (env->type == wire::RegisterAck::kType) {
                    if (!sim.registered) {
                        report.line("G");
                        due.emplace(sim.next, i);
                    }
                    sim.registered = true;
                } else if (env->type == wire::HeartbeatAck::kType) {
                    const auto sent = std::chrono::nanoseconds(env->body["sent_ns"].get<int64_t>());
                    const double ms =
                        std::chrono::duration<double, std::milli>(t.time_since_epoch() - sent)
                            .count();
                    report.line(fmt::format("R {} {:.4f}", ns_of(t), ms));
                } else if (env->type == wire::StartActor::kType) {
                    report.line(
                        fmt::format("S {} {}", env->body["actor"].get<std::string>(), ns_of(t)),
                        true);
                }
            }
        }
    };
    for (size_t i = 0; i < sims.size(); ++i) drain(i);
    uint64_t seq = 1;
    std::vector<epoll_event> ready(256);
    auto last_flush = Clock::now();
    while (!g_stop.load()) {
        if (first && g_stop_one.load() && !sims[0].stopped) {
            sims[0].stopped = true;
            const auto last = sims[0].next - period;  // when it sent its last heartbeat
            report.line(fmt::format("L {} {}", sims[0].id, ns_of(last)), true);
        }
        while (!due.empty() && due.top().first <= Clock::now()) {
            const size_t i = due.top().second;
            due.pop();
            Sim& s = sims[i];
            if (s.stopped) continue;
            wire::Heartbeat h;
            h.node_id = s.id;
            h.sent_ns = ns_of(Clock::now());
            auto e = wire::make_envelope(h, ++seq);
            ++s.beats;
            if (echo_every > 0 && s.beats % static_cast<uint64_t>(echo_every) == 0)
                e.body["echo"] = true;
            if (s.beats % 10 != 0) e.body.erase("actors");  // unchanged: not sent
            (void)wire::send_envelope(*s.s, e);
            s.next += period;
            due.emplace(s.next, i);
            drain(i);  // a send may consume the edge of a reply that arrived meanwhile
        }
        // Sleep until the next heartbeat is due or a socket has something to read, not a fixed
        // tick, so the simulator leaves the cores to the coordinator.
        auto wait = std::chrono::milliseconds(50);
        if (!due.empty()) {
            wait = std::min(
                wait, std::chrono::ceil<std::chrono::milliseconds>(due.top().first - Clock::now()));
        }
        const int n = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()),
                                   static_cast<int>(std::max<int64_t>(0, wait.count())));
        for (int k = 0; k < n; ++k) drain(static_cast<size_t>(ready[k].data.u64));
        if (Clock::now() - last_flush > std::chrono::milliseconds(200)) {
            report.flush();
            last_flush = Clock::now();
        }
    }
    report.flush();
    ::close(ep);
}

// A simulator process: `threads` threads over `ids`, reporting on `fd`.
[[noreturn]] void simulator(const std::string& endpoint, const std::string& secret,
                            const std::vector<std::string>& ids, int threads, double rate_hz,
                            int echo_every, bool first, int fd) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::signal(SIGUSR1, [](int) { g_stop_one = true; });
    ::signal(SIGTERM, [](int) { g_stop = true; });
    {
        zmq::context_t ctx(1);
        zmq_ctx_set(ctx.handle(), ZMQ_MAX_SOCKETS, static_cast<int>(ids.size()) + 64);
        Report report(fd);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            std::vector<std::string> mine;
            for (size_t i = static_cast<size_t>(t); i < ids.size();
                 i += static_cast<size_t>(threads))
                mine.push_back(ids[i]);
            if (mine.empty()) continue;
            pool.emplace_back(agent_thread, std::ref(ctx), endpoint, secret, mine, rate_hz,
                              echo_every, first && t == 0, std::ref(report));
        }
        for (auto& t : pool) t.join();
    }
    ::_exit(0);
}

struct Shared {
    std::mutex mu;
    std::vector<std::pair<int64_t, double>> rtt;  // (at ns, ms); guarded by mu
    std::map<std::string, int64_t> starts;        // actor -> start_actor arrival ns; guarded by mu
    std::optional<std::pair<std::string, int64_t>> lost;  // guarded by mu
    std::atomic<int> registered{0};
};

// Reads the simulators' report lines until every pipe closes.
void read_reports(std::vector<int> fds, Shared& shared) {
    std::vector<std::string> partial(fds.size());
    size_t open = fds.size();
    std::vector<pollfd> p;
    for (int fd : fds) p.push_back({fd, POLLIN, 0});
    char buf[65536];
    while (open > 0) {
        if (::poll(p.data(), p.size(), 200) <= 0) continue;
        for (size_t i = 0; i < p.size(); ++i) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP))) continue;
            const ssize_t n = ::read(p[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                ::close(p[i].fd);
                p[i].fd = -1;
                --open;
                continue;
            }
            partial[i].append(buf, static_cast<size_t>(n));
            size_t start = 0, nl;
            std::lock_guard lock(shared.mu);
            while ((nl = partial[i].find('\n', start)) != std::string::npos) {
                std::istringstream l(partial[i].substr(start, nl - start));
                start = nl + 1;
                char kind = 0;
                l >> kind;
                if (kind == 'G') {
                    shared.registered.fetch_add(1);
                } else if (kind == 'R') {
                    int64_t at = 0;
                    double ms = 0;
                    l >> at >> ms;
                    shared.rtt.emplace_back(at, ms);
                } else if (kind == 'S') {
                    std::string actor;
                    int64_t at = 0;
                    l >> actor >> at;
                    shared.starts[actor] = at;
                } else if (kind == 'L') {
                    std::string node;
                    int64_t at = 0;
                    l >> node >> at;
                    shared.lost = {node, at};
                }
            }
            partial[i].erase(0, start);
        }
    }
}

double load_average() {
    std::ifstream in("/proc/loadavg");
    double l = -1;
    in >> l;
    return l;
}

}  // namespace

int main(int argc, char** argv) {
    int agents = 1000, seconds = 20, threads = 4, procs = 0, submits = 20, echo_every = 10;
    double rate_hz = 1.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--agents")
            agents = std::stoi(argv[i + 1]);
        else if (a == "--seconds")
            seconds = std::stoi(argv[i + 1]);
        else if (a == "--threads")
            threads = std::stoi(argv[i + 1]);
        else if (a == "--procs")
            procs = std::stoi(argv[i + 1]);
        else if (a == "--submits")
            submits = std::stoi(argv[i + 1]);
        else if (a == "--rate-hz")
            rate_hz = std::stod(argv[i + 1]);
        else if (a == "--echo-every")
            echo_every = std::stoi(argv[i + 1]);
        else {
            std::cerr << "tandem-bench-control: unknown option " << a << "\n";
            return 2;
        }
    }
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
    // A simulated agent holds two descriptors (its TCP connection and its socket's mailbox): split
    // the agents over processes so that each stays within the file limit.
    const int per_proc_max = std::max<int>(1, static_cast<int>(lim.rlim_cur / 2) - 512);
    if (procs <= 0) procs = std::max(1, (agents + per_proc_max - 1) / per_proc_max);
    if ((agents + procs - 1) / procs > per_proc_max) {
        std::cerr << fmt::format(
            "tandem-bench-control: {} agents in {} processes exceed the file limit ({} per "
            "process, 2 per agent): raise --procs\n",
            agents, procs, lim.rlim_cur);
        return 2;
    }
    const double load_before = load_average();

    namespace fs = std::filesystem;
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("tandem_bench_control_{}", ::getpid());
    fs::create_directories(dir / "run");
    const int agent_port = free_port(), http_port = free_port();
    const std::string secret = "bench-secret", token = "bench-token";
    const int heartbeat_ms = static_cast<int>(1000 / rate_hz);
    const int dead_after_ms = static_cast<int>(5000 / rate_hz);
    std::ofstream(dir / "run" / "cluster-secret") << secret << "\n";
    std::ofstream(dir / "run" / "api-token") << token << "\n";
    std::ofstream(dir / "cluster.yaml") << fmt::format(
        "name: bench\nrun_dir: {}\ncoordinator: {{agent_port: {}, http_port: {}, heartbeat_ms: {}, "
        "dead_after_ms: {}}}\n"
        "nodes:\n  - {{id: placeholder, role: trainer}}\n",
        (dir / "run").string(), agent_port, http_port, heartbeat_ms, dead_after_ms);
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
    auto coordinator_alive = [&] { return ::waitpid(coord, nullptr, WNOHANG) == 0; };

    const std::string endpoint = fmt::format("tcp://127.0.0.1:{}", agent_port);
    std::vector<pid_t> sims;
    std::vector<int> fds;
    for (int p = 0; p < procs; ++p) {
        std::vector<std::string> ids;
        for (int i = p; i < agents; i += procs) ids.push_back(fmt::format("sim-{:05d}", i));
        int pipe_fds[2];
        if (::pipe(pipe_fds) != 0) return 1;
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(pipe_fds[0]);
            simulator(endpoint, secret, ids, std::max(1, threads / procs), rate_hz, echo_every,
                      p == 0, pipe_fds[1]);
        }
        ::close(pipe_fds[1]);
        sims.push_back(pid);
        fds.push_back(pipe_fds[0]);
    }
    Shared shared;
    std::thread reader(read_reports, fds, std::ref(shared));
    auto finish = [&](int code) {
        for (pid_t pid : sims) ::kill(pid, SIGTERM);
        for (pid_t pid : sims) ::waitpid(pid, nullptr, 0);
        reader.join();
        ::kill(coord, SIGTERM);
        ::waitpid(coord, nullptr, 0);
        fs::remove_all(dir);
        return code;
    };

    const auto reg_start = Clock::now();
    while (shared.registered.load() < agents &&
           Clock::now() - reg_start < std::chrono::seconds(120) && coordinator_alive()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const double register_s = std::chrono::duration<double>(Clock::now() - reg_start).count();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // let the heartbeat phases settle
    if (!coordinator_alive()) {
        std::cerr << "tandem-bench-control: the coordinator exited while agents registered\n";
        return finish(1);
    }

    // The simulators' CPU too: they share the cores with the coordinator, so a busy simulator
    // would show up as coordinator latency.
    auto sims_cpu = [&] {
        double s = 0;
        for (pid_t pid : sims) s += cpu_seconds(pid);
        return s;
    };
    const double cpu0 = cpu_seconds(coord), sims0 = sims_cpu();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    const double cpu1 = cpu_seconds(coord), sims1 = sims_cpu();
    const auto t1 = Clock::now();
    const double wall = std::chrono::duration<double>(t1 - t0).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last reports
    std::vector<double> rtt;
    {
        std::lock_guard lock(shared.mu);
        for (const auto& [at, ms] : shared.rtt) {
            if (at >= ns_of(t0) && at <= ns_of(t1)) rtt.push_back(ms);
        }
    }
    const double cpu_pct = 100.0 * (cpu1 - cpu0) / wall;
    std::cout << Json{{"case", "heartbeat"},
                      {"agents", agents},
                      {"registered", shared.registered.load()},
                      {"register_all_s", register_s},
                      {"rate_hz", rate_hz},
                      {"echo_every", echo_every},
                      {"seconds", wall},
                      {"answers", rtt.size()},
                      {"answers_per_heartbeat",
                       static_cast<double>(rtt.size()) / (wall * rate_hz * agents)},
                      {"coordinator_cpu_pct", cpu_pct},
                      {"simulators_cpu_pct", 100.0 * (sims1 - sims0) / wall},
                      {"rtt_p50_ms", percentile(rtt, 0.50)},
                      {"rtt_p99_ms", percentile(rtt, 0.99)},
                      {"rtt_max_ms", percentile(rtt, 1.0)},
                      {"load_before", load_before},
                      {"load_after", load_average()},
                      {"target_cpu_pct", 25},
                      {"target_p99_ms", 20},
                      {"ratio", cpu_pct / 25.0}}
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
        int64_t placed = 0;
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
        lat.push_back(static_cast<double>(placed - ns_of(s0)) / 1e6);
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

    // Node loss: the first agent stops heartbeating; time from its last heartbeat until the API
    // counts a dead node. The limit is dead_after_ms plus one heartbeat.
    ::kill(sims[0], SIGUSR1);
    double detect_ms = -1;
    const auto loss_deadline = Clock::now() + std::chrono::milliseconds(3 * dead_after_ms);
    while (Clock::now() < loss_deadline) {
        auto r = net::http_call(http, "GET", "/api/v1/cluster", "", token);
        const auto t = Clock::now();
        if (r.ok() && r->status == 200) {
            auto j = Json::parse(r->body, nullptr, false);
            if (j.is_object() && j["nodes"].value("dead", 0) >= 1) {
                std::lock_guard lock(shared.mu);
                if (shared.lost)
                    detect_ms = static_cast<double>(ns_of(t) - shared.lost->second) / 1e6;
                break;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const double limit_ms = dead_after_ms + heartbeat_ms;
    std::cout << Json{{"case", "node_loss"},
                      {"agents", agents},
                      {"dead_after_ms", dead_after_ms},
                      {"heartbeat_ms", heartbeat_ms},
                      {"detect_ms", detect_ms},
                      {"limit_ms", limit_ms},
                      {"ratio", detect_ms / limit_ms}}
                     .dump()
              << std::endl;
    return finish(0);
}
