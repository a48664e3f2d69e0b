// tandem-bench-weights: the weight plane's throughput against the ceilings measured in the same
// run (ucx_perftest ucp_get and ucp_am_bw on the same transport and size, and memcpy).
// Prints one JSON object per line per case:
//   mode      pull | map | relay | zmq_copy | publish
//   transport shm | tcp   (UCX_TLS "shm,self" / "tcp,self"; zmq_copy uses ipc:// / tcp://)
//   bytes, readers, seconds (best of the timed iterations), gbps (1e9 bytes/s; relay: bytes
//   delivered to all readers per second), ceiling_get_gbps, ceiling_am_gbps, ceiling_gbps (the
//   better of the two), ratio (gbps / ceiling_gbps), plus memcpy_seconds for publish (ceiling:
//   memcpy) and switch_ms for map.
//
//   tandem-bench-weights [--sizes 64M,256M] [--max] [--transports shm,tcp]
//                        [--modes pull,map,relay,zmq_copy,publish] [--iterations 4]
//                        [--chunk-bytes 4M] [--piece-bytes 256K] [--window 16]
//                        [--inline-checksums] [--perftest ucx_perftest]
// --max adds 1 GiB to the sizes. Internal roles (--role publisher|reader|zmq-sender) are the
// child processes the benchmark starts.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/log.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"

extern char** environ;

using namespace tandem;
using namespace tandem::weights;
using SteadyClock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

// ---- small utilities ----

double since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// The fastest of the timed iterations: on a shared machine interference only ever slows a run
// down, so the best run is the one that measures the code (the ceilings get the same treatment).
double best(const std::vector<double>& v) {
    return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

uint64_t parse_size(const std::string& text) {
    uint64_t n = std::stoull(text);
    switch (text.back()) {
        case 'K':
        case 'k':
            return n << 10;
        case 'M':
        case 'm':
            return n << 20;
        case 'G':
        case 'g':
            return n << 30;
        default:
            return n;
    }
}

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, sep)) {
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

struct Args {
    std::map<std::string, std::string> values;
    std::string get(const std::string& k, const std::string& d = "") const {
        auto it = values.find(k);
        return it == values.end() ? d : it->second;
    }
    bool flag(const std::string& k) const { return values.count(k) != 0; }
};

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        if (k.rfind("--", 0) != 0) continue;
        k.erase(0, 2);
        if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
            a.values[k] = argv[++i];
        } else {
            a.values[k] = "1";
        }
    }
    return a;
}

std::string tls_of(const std::string& transport) {
    return transport == "tcp" ? "tcp,self" : "shm,self";
}

// A layout of bf16 matrices adding up to `bytes`.
Layout bench_layout(uint64_t bytes) {
    std::vector<TensorSpec> specs;
    const uint64_t per = bytes / 8;
    const int64_t cols = 4096;
    for (int i = 0; i < 8; ++i) {
        specs.push_back({fmt::format("model.layers.{}.mlp.weight", i),
                         DType::kBF16,
                         {static_cast<int64_t>(per / (cols * 2)), cols}});
    }
    return *Layout::create(std::move(specs));
}

void fill(std::span<std::byte> out, uint64_t seed) {
    auto* w = reinterpret_cast<uint64_t*>(out.data());
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < out.size() / 8; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
}

// ---- child processes ----

class Child {
public:
    static std::optional<Child> spawn(const std::vector<std::string>& argv,
                                      const std::vector<std::string>& extra_env = {}) {
        int out[2], in[2];
        if (pipe2(out, O_CLOEXEC) != 0 || pipe2(in, O_CLOEXEC) != 0) return std::nullopt;
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        posix_spawn_file_actions_adddup2(&actions, in[0], 0);
        std::vector<char*> args;
        for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
        args.push_back(nullptr);
        std::vector<std::string> env_storage;
        for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
        for (const auto& e : extra_env) env_storage.push_back(e);
        std::vector<char*> env;
        for (auto& e : env_storage) env.push_back(e.data());
        env.push_back(nullptr);
        pid_t pid = -1;
        const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), env.data());
        posix_spawn_file_actions_destroy(&actions);
        close(out[1]);
        close(in[0]);
        if (rc != 0) {
            close(out[0]);
            close(in[1]);
            return std::nullopt;
        }
        Child c;
        c.pid_ = pid;
        c.out_ = out[0];
        c.in_ = in[1];
        return c;
    }
    Child(Child&& o) noexcept
        : pid_(std::exchange(o.pid_, -1)),
          out_(std::exchange(o.out_, -1)),
          in_(std::exchange(o.in_, -1)),
          buf_(std::move(o.buf_)) {}
    Child& operator=(Child&&) = delete;
    ~Child() {
        if (in_ >= 0) close(in_);
        if (pid_ > 0) {
            // Closing stdin asks the child to exit; give it a moment, then make sure.
            pollfd p{out_, POLLIN, 0};
            const auto deadline = SteadyClock::now() + std::chrono::seconds(5);
            int status = 0;
            while (waitpid(pid_, &status, WNOHANG) == 0) {
                if (SteadyClock::now() > deadline) {
                    kill(pid_, SIGKILL);
                    waitpid(pid_, &status, 0);
                    break;
                }
                char b[4096];
                if (::poll(&p, 1, 50) > 0 && ::read(out_, b, sizeof(b)) <= 0) p.fd = -1;
            }
        }
        if (out_ >= 0) close(out_);
    }
    bool send(const std::string& line) {
        const std::string text = line + "\n";
        return ::write(in_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    }
    std::optional<std::string> line(std::chrono::milliseconds timeout) {
        const auto deadline = SteadyClock::now() + timeout;
        for (;;) {
            const auto nl = buf_.find('\n');
            if (nl != std::string::npos) {
                std::string l = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return l;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - SteadyClock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{out_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char b[65536];
            const ssize_t n = ::read(out_, b, sizeof(b));
            if (n <= 0) return std::nullopt;
            buf_.append(b, static_cast<size_t>(n));
        }
    }
    std::optional<json> message(std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
        for (;;) {
            auto l = line(timeout);
            if (!l) return std::nullopt;
            auto j = json::parse(*l, nullptr, false);
            if (!j.is_discarded()) return j;
        }
    }
    std::string drain(std::chrono::milliseconds timeout) {
        std::string all;
        while (auto l = line(timeout)) all += *l + "\n";
        return all;
    }
    pid_t pid() const { return pid_; }

private:
    Child() = default;
    pid_t pid_ = -1;
    int out_ = -1;
    int in_ = -1;
    std::string buf_;
};

std::string self_path() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "tandem-bench-weights";
}

void emit(const json& j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
}

// Reads command lines from stdin until EOF.
std::optional<std::string> read_command() {
    static std::string pending;
    char buf[65536];
    for (;;) {
        const auto nl = pending.find('\n');
        if (nl != std::string::npos) {
            std::string l = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            return l;
        }
        const ssize_t n = ::read(0, buf, sizeof(buf));
        if (n <= 0) return std::nullopt;
        pending.append(buf, static_cast<size_t>(n));
    }
}

// ---- roles ----

int role_publisher(const Args& a) {
    const uint64_t bytes = parse_size(a.get("bytes"));
    const Layout layout = bench_layout(bytes);
    VersionDirectory directory;
    PublisherOptions o;
    o.job = JobId(1);
    o.publisher_id = "job-000001/trainer-0";
    o.chunk_bytes = parse_size(a.get("chunk-bytes", "4M"));
    o.slots = 3;
    o.ucx.transports = a.get("tls");
    auto publisher = Publisher::create(o, layout, directory);
    if (!publisher.ok()) {
        emit({{"error", publisher.status().to_string()}});
        return 1;
    }
    auto data = *HostBuffer::allocate(layout.total_bytes(), true);
    fill(data.span(), 1);
    emit({{"ready", true}});
    Version v = 1;
    while (auto cmd = read_command()) {
        if (*cmd != "publish") continue;
        std::memcpy(data.data(), &v, sizeof(v));  // each version differs
        Status s = (*publisher)->publish(v, data.span());
        if (!s.ok()) {
            emit({{"error", s.to_string()}});
            return 1;
        }
        emit({{"descriptor", to_json(*directory.get(JobId(1), v))}});
        ++v;
    }
    return 0;
}

int role_reader(const Args& a) {
    const uint64_t bytes = parse_size(a.get("bytes"));
    const Layout layout = bench_layout(bytes);
    ReaderOptions o;
    o.job = JobId(1);
    o.reader_id = "job-000001/rollout-" + a.get("index", "0");
    o.ucx.transports = a.get("tls");
    o.relay = a.flag("relay");
    auto reader = Reader::create(o, layout);
    if (!reader.ok()) {
        emit({{"error", reader.status().to_string()}});
        return 1;
    }
    emit({{"relay", to_json((*reader)->relay_source())}});
    while (auto cmd = read_command()) {
        auto j = json::parse(*cmd, nullptr, false);
        if (j.is_discarded()) continue;
        auto d = descriptor_from_json(j.at("descriptor"));
        std::optional<RelaySource> relay;
        if (j.contains("relay")) relay = *relay_source_from_json(j.at("relay"));
        const auto t0 = SteadyClock::now();
        Status s = (*reader)->fetch(*d, relay ? &*relay : nullptr);
        const double seconds = since(t0);
        (*reader)->swap();
        emit({{"ok", s.ok()}, {"message", s.to_string()}, {"seconds", seconds}});
    }
    return 0;
}

int role_zmq_sender(const Args& a) {
    const uint64_t bytes = parse_size(a.get("bytes"));
    auto data = *HostBuffer::allocate(bytes, true);
    fill(data.span(), 2);
    zmq::context_t ctx;
    zmq::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::sndhwm, 2);
    push.bind(a.get("endpoint"));
    emit({{"ready", true}});
    while (auto cmd = read_command()) {
        if (*cmd != "send") continue;
        // The naive way: the whole buffer as one message (copied into the message).
        zmq::message_t msg(data.data(), data.size());
        push.send(msg, zmq::send_flags::none);
    }
    return 0;
}

// ---- ceilings ----

bool port_listening(int port) {
    for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(file);
        std::string line;
        std::getline(in, line);
        while (std::getline(in, line)) {
            std::istringstream l(line);
            std::string slot, local, remote, state;
            l >> slot >> local >> remote >> state;
            const auto colon = local.rfind(':');
            if (colon == std::string::npos) continue;
            if (std::stoi(local.substr(colon + 1), nullptr, 16) == port && state == "0A") {
                return true;
            }
        }
    }
    return false;
}

// ucx_perftest's overall bandwidth (MB/s of 2^20 bytes) as GB/s (1e9 bytes/s), or 0.
double perftest_once(const std::string& perftest, const std::string& test, const std::string& tls,
                     uint64_t bytes, int iterations) {
    static std::mt19937 rng(static_cast<unsigned>(getpid()));
    const int port = 20000 + static_cast<int>(rng() % 30000);
    const std::vector<std::string> env = {"UCX_TLS=" + tls};
    const std::vector<std::string> common = {"-t", test,
                                             "-s", std::to_string(bytes),
                                             "-n", std::to_string(iterations),
                                             "-p", std::to_string(port)};
    std::vector<std::string> server_argv = {perftest};
    server_argv.insert(server_argv.end(), common.begin(), common.end());
    auto server = Child::spawn(server_argv, env);
    if (!server) return 0;
    const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (!port_listening(port)) {
        if (SteadyClock::now() > deadline) {
            std::fprintf(stderr, "ucx_perftest server on port %d did not start listening\n", port);
            return 0;
        }
        std::this_thread::yield();
    }
    std::vector<std::string> client_argv = {perftest, "127.0.0.1"};
    client_argv.insert(client_argv.end(), common.begin(), common.end());
    auto client = Child::spawn(client_argv, env);
    if (!client) return 0;
    const std::string out = client->drain(std::chrono::seconds(120));
    const auto pos = out.find("Final:");
    if (pos == std::string::npos) {
        std::fprintf(stderr, "ucx_perftest %s on %s with %llu bytes gave no result:\n%s\n",
                     test.c_str(), tls.c_str(), static_cast<unsigned long long>(bytes),
                     out.substr(out.size() > 600 ? out.size() - 600 : 0).c_str());
        return 0;
    }
    // "Final: iterations lat50 lat_avg lat_overall bw_avg bw_overall ..." (some may be "inf").
    std::istringstream in(out.substr(pos + 6));
    std::vector<std::string> fields;
    for (std::string f; in >> f && fields.size() < 6;) fields.push_back(f);
    if (fields.size() < 6) return 0;
    return std::strtod(fields[5].c_str(), nullptr) * 1048576.0 / 1e9;
}

// The better of two ucx_perftest runs (a run that fails to start counts as 0).
double perftest_gbps(const std::string& perftest, const std::string& test, const std::string& tls,
                     uint64_t bytes, int iterations) {
    double gbps = 0;
    for (int i = 0; i < 2; ++i) {
        gbps = std::max(gbps, perftest_once(perftest, test, tls, bytes, iterations));
    }
    return gbps;
}

double memcpy_seconds(uint64_t bytes) {
    auto a = *HostBuffer::allocate(bytes, true);
    auto b = *HostBuffer::allocate(bytes, true);
    fill(a.span(), 3);
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) {
        const auto t0 = SteadyClock::now();
        std::memcpy(b.data(), a.data(), bytes);
        t.push_back(since(t0));
    }
    return *std::min_element(t.begin(), t.end());
}

struct Ceilings {
    double get = 0;
    double am = 0;
    double best() const { return std::max(get, am); }
};

json result(const std::string& mode, const std::string& transport, uint64_t bytes, int readers,
            double seconds, double gbps, const Ceilings& c, double ceiling) {
    return {{"mode", mode},
            {"transport", transport},
            {"bytes", bytes},
            {"readers", readers},
            {"seconds", seconds},
            {"gbps", gbps},
            {"ceiling_get_gbps", c.get},
            {"ceiling_am_gbps", c.am},
            {"ceiling_gbps", ceiling},
            {"ratio", ceiling > 0 ? gbps / ceiling : 0}};
}

// ---- cases ----

struct Bench {
    std::string self;
    std::string chunk;
    int iterations = 4;
    uint64_t piece_bytes = 256 << 10;
    uint32_t window_reads = 16;
    bool inline_checksums = false;

    std::vector<std::string> role(const std::string& r, const std::string& transport,
                                  uint64_t bytes, std::vector<std::string> extra = {}) const {
        std::vector<std::string> a = {self,
                                      "--role",
                                      r,
                                      "--tls",
                                      tls_of(transport),
                                      "--bytes",
                                      std::to_string(bytes),
                                      "--chunk-bytes",
                                      chunk};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    }

    std::optional<json> publish(Child& publisher) const {
        publisher.send("publish");
        auto m = publisher.message();
        if (!m || !m->contains("descriptor")) return std::nullopt;
        return m->at("descriptor");
    }

    void pull(const std::string& transport, uint64_t bytes, const Ceilings& c) const {
        auto publisher = Child::spawn(role("publisher", transport, bytes));
        if (!publisher || !publisher->message()) return;
        ReaderOptions o;
        o.job = JobId(1);
        o.ucx.transports = tls_of(transport);
        o.piece_bytes = piece_bytes;
        o.window_reads = window_reads;
        o.verify_on_helper_thread = !inline_checksums;
        auto reader = Reader::create(o, bench_layout(bytes));
        if (!reader.ok()) return;
        std::vector<double> times;
        std::string path;
        for (int i = 0; i < 3 + iterations; ++i) {  // 3 warm-ups touch every slot once
            auto d = publish(*publisher);
            if (!d) return;
            auto desc = descriptor_from_json(*d);
            const auto t0 = SteadyClock::now();
            Status s = (*reader)->fetch(*desc);
            const double t = since(t0);
            if (!s.ok()) {
                emit({{"mode", "pull"}, {"transport", transport}, {"error", s.to_string()}});
                return;
            }
            (*reader)->swap();
            path = std::string(read_path_name((*reader)->last_fetch().path));
            if (i >= 3) times.push_back(t);
        }
        const double s = best(times);
        json j = result("pull", transport, bytes, 1, s, bytes / s / 1e9, c, c.best());
        j["path"] = path;
        emit(j);
    }

    void map(const std::string& transport, uint64_t bytes, const Ceilings& c,
             double memcpy_s) const {
        auto publisher = Child::spawn(role("publisher", transport, bytes));
        if (!publisher || !publisher->message()) return;
        ReaderOptions o;
        o.job = JobId(1);
        o.ucx.transports = tls_of(transport);
        const Layout layout = bench_layout(bytes);
        auto reader = Reader::create(o, layout);
        if (!reader.ok()) return;
        std::vector<double> times;
        for (int i = 0; i < 3 + iterations; ++i) {
            auto d = publish(*publisher);
            if (!d) return;
            auto desc = descriptor_from_json(*d);
            const auto t0 = SteadyClock::now();
            auto mapped = (*reader)->map(*desc);
            // Usable: the first tensor's first byte can be read.
            volatile std::byte first{};
            if (mapped.ok()) first = (*mapped)->tensor(layout.tensors()[0].name)[0];
            (void)first;
            const double t = since(t0);
            if (!mapped.ok()) {
                emit({{"mode", "map"},
                      {"transport", transport},
                      {"error", mapped.status().to_string()}});
                return;
            }
            if (i >= 3) times.push_back(t);
        }
        const double s = best(times);
        const double ceiling = bytes / memcpy_s / 1e9;
        json j = result("map", transport, bytes, 1, s, bytes / s / 1e9, c, ceiling);
        j["switch_ms"] = s * 1e3;
        j["ceiling_gbps"] = ceiling;  // a copy is what mapping avoids
        emit(j);
    }

    void relay(const std::string& transport, uint64_t bytes, const Ceilings& c) const {
        constexpr int kReaders = 4;
        constexpr uint32_t kFanOut = 2;
        auto publisher = Child::spawn(role("publisher", transport, bytes));
        if (!publisher || !publisher->message()) return;
        std::vector<Child> readers;
        std::vector<json> relays;
        for (int i = 0; i < kReaders; ++i) {
            auto r = Child::spawn(
                role("reader", transport, bytes, {"--relay", "--index", std::to_string(i)}));
            if (!r) return;
            auto m = r->message();
            if (!m || !m->contains("relay")) return;
            relays.push_back(m->at("relay"));
            readers.push_back(std::move(*r));
        }
        std::vector<std::string> names;
        for (int i = 0; i < kReaders; ++i) names.push_back(std::to_string(i));
        const auto plan = plan_relay_tree(names, kFanOut);
        std::vector<double> times;
        for (int i = 0; i < 2 + iterations; ++i) {
            auto d = publish(*publisher);
            if (!d) return;
            const auto t0 = SteadyClock::now();
            for (int r = 0; r < kReaders; ++r) {
                json cmd = {{"descriptor", *d}};
                if (plan[r].source) cmd["relay"] = relays[*plan[r].source];
                readers[r].send(cmd.dump());
            }
            for (auto& r : readers) {
                auto m = r.message();
                if (!m || !m->value("ok", false)) {
                    emit({{"mode", "relay"},
                          {"transport", transport},
                          {"error", m ? m->dump() : "no reply"}});
                    return;
                }
            }
            if (i >= 2) times.push_back(since(t0));
        }
        const double s = best(times);
        emit(result("relay", transport, bytes, kReaders, s, kReaders * bytes / s / 1e9, c,
                    c.best()));
    }

    void zmq_copy(const std::string& transport, uint64_t bytes, const Ceilings& c) const {
        const std::string endpoint =
            transport == "tcp" ? fmt::format("tcp://127.0.0.1:{}", 30000 + getpid() % 20000)
                               : fmt::format("ipc:///tmp/tandem-bench-weights-{}", getpid());
        auto sender = Child::spawn(role("zmq-sender", transport, bytes, {"--endpoint", endpoint}));
        if (!sender || !sender->message()) return;
        zmq::context_t ctx;
        zmq::socket_t pull(ctx, zmq::socket_type::pull);
        pull.connect(endpoint);
        auto dest = *HostBuffer::allocate(bytes, true);
        std::vector<double> times;
        for (int i = 0; i < 1 + iterations; ++i) {
            const auto t0 = SteadyClock::now();
            sender->send("send");
            zmq::message_t msg;
            if (!pull.recv(msg, zmq::recv_flags::none)) return;
            std::memcpy(dest.data(), msg.data(), std::min<size_t>(msg.size(), bytes));
            if (i >= 1) times.push_back(since(t0));
        }
        const double s = best(times);
        emit(result("zmq_copy", transport, bytes, 1, s, bytes / s / 1e9, c, c.best()));
    }

    void publish_case(const std::string& transport, uint64_t bytes, const Ceilings& c,
                      double memcpy_s) const {
        const Layout layout = bench_layout(bytes);
        VersionDirectory directory;
        PublisherOptions o;
        o.job = JobId(1);
        o.chunk_bytes = parse_size(chunk);
        o.ucx.transports = tls_of(transport);
        o.checksum_on_helper_thread = !inline_checksums;
        auto publisher = Publisher::create(o, layout, directory);
        if (!publisher.ok()) return;
        auto data = *HostBuffer::allocate(layout.total_bytes(), true);
        auto copy = *HostBuffer::allocate(layout.total_bytes(), true);
        fill(data.span(), 4);
        // The memcpy ceiling is timed next to each publish, so both see the same machine.
        std::vector<double> times;
        std::vector<double> copies;
        for (int i = 0; i < 3 + iterations; ++i) {  // the first pass over each slot faults it in
            auto t0 = SteadyClock::now();
            Status s = (*publisher)->publish(static_cast<Version>(i + 1), data.span());
            const double t = since(t0);
            if (!s.ok()) return;
            t0 = SteadyClock::now();
            std::memcpy(copy.data(), data.data(), data.size());
            const double m = since(t0);
            if (i >= 3) {
                times.push_back(t);
                copies.push_back(m);
            }
        }
        (void)memcpy_s;
        const double s = best(times);
        const double copy_s = best(copies);
        const double ceiling = layout.total_bytes() / copy_s / 1e9;
        json j = result("publish", transport, layout.total_bytes(), 0, s,
                        layout.total_bytes() / s / 1e9, c, ceiling);
        j["memcpy_seconds"] = copy_s;
        emit(j);
    }
};

}  // namespace

int main(int argc, char** argv) {
    const Args a = parse_args(argc, argv);
    LogOptions log;
    log.console_level = LogLevel::kWarn;
    if (!init_logging(log).ok()) return 2;
    const std::string r = a.get("role");
    if (r == "publisher") return role_publisher(a);
    if (r == "reader") return role_reader(a);
    if (r == "zmq-sender") return role_zmq_sender(a);
    ::signal(SIGPIPE, SIG_IGN);

    std::vector<uint64_t> sizes;
    for (const auto& s : split(a.get("sizes", "64M,256M"), ',')) sizes.push_back(parse_size(s));
    if (a.flag("max")) sizes.push_back(uint64_t{1} << 30);
    const auto transports = split(a.get("transports", "shm,tcp"), ',');
    const auto modes = split(a.get("modes", "pull,map,relay,zmq_copy,publish"), ',');
    auto has = [&](const std::string& m) {
        return std::find(modes.begin(), modes.end(), m) != modes.end();
    };
    Bench bench;
    bench.self = self_path();
    bench.chunk = a.get("chunk-bytes", "4M");
    bench.iterations = std::stoi(a.get("iterations", "4"));
    bench.piece_bytes = parse_size(a.get("piece-bytes", "256K"));
    bench.window_reads = static_cast<uint32_t>(std::stoul(a.get("window", "16")));
    bench.inline_checksums = a.flag("inline-checksums");
    const std::string perftest = a.get("perftest", "ucx_perftest");

    for (uint64_t bytes : sizes) {
        const double memcpy_s = memcpy_seconds(bytes);
        for (const auto& t : transports) {
            Ceilings c;
            const int n = bytes >= (uint64_t{256} << 20) ? 5 : 10;
            c.get = perftest_gbps(perftest, "ucp_get", tls_of(t), bytes, n);
            c.am = perftest_gbps(perftest, "ucp_am_bw", tls_of(t), bytes, n);
            if (has("pull")) bench.pull(t, bytes, c);
            if (has("map")) bench.map(t, bytes, c, memcpy_s);
            if (has("relay")) bench.relay(t, bytes, c);
            if (has("zmq_copy")) bench.zmq_copy(t, bytes, c);
            if (has("publish")) bench.publish_case(t, bytes, c, memcpy_s);
        }
    }
    return 0;
}
