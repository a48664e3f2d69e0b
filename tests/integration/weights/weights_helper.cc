// tandem-weights-helper: the processes of the weight-plane integration tests.
//
//   publish  --dir D --tls T [--seed S --bytes B --versions N --duration-ms M --chunk-bytes C
//             --slots K --ttl-ms L --shard I --shards N --first-version F]
//       publishes versions (N of them, or as many as fit in M ms), announcing each into D, then
//       serves readers until stdin closes. Lines on stdin: "publish" publishes the next version;
//       with --hold-control also "hold acquire" or "hold read [FROM]" (fault injection: the
//       publisher's SourceServer holds, unanswered, every such request, reads only at region
//       offsets >= FROM, reporting each once as {"event":"held",...}) until "release"; "stats"
//       prints the server's counters ({"event":"stats",...}).
//   read     --dir D --tls T [--seed S --bytes B --mode pull|map|partial --version V --path P
//             --relay --index I --readers N --fan-out F --join --duration-ms M --serve]
//       reads a version (or, with --duration-ms, the newest version again and again) and checks
//       every byte; prints one JSON object per line. With --relay the reader's place in the relay
//       tree comes from plan_relay_tree(N, F), or with --join from the test playing the
//       coordinator: the reader prints {"event":"join","reader":..,"relay_source":..} and reads
//       one line {"source": null | RelaySource} from stdin.

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/weights/protocol.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "tests/integration/weights/test_support.h"

using namespace tandem;
using namespace tandem::weights;
using namespace tandem::weights::testing;

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
    std::map<std::string, std::string> values;
    std::string get(const std::string& key, const std::string& fallback = "") const {
        auto it = values.find(key);
        return it == values.end() ? fallback : it->second;
    }
    uint64_t num(const std::string& key, uint64_t fallback) const {
        auto it = values.find(key);
        return it == values.end() ? fallback : std::stoull(it->second);
    }
    bool flag(const std::string& key) const { return values.count(key) != 0; }
};

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 2; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg.size() < 3 || arg.substr(0, 2) != "--") continue;
        const std::string key(arg.substr(2));
        const bool has_value = i + 1 < argc && std::string_view(argv[i + 1]).substr(0, 2) != "--";
        a.values[key] = has_value ? argv[++i] : "1";
    }
    return a;
}

void emit(const nlohmann::json& j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
}

// Blocks until the test closes our stdin (or kills us).
void serve_until_stdin_closes() {
    char buf[256];
    for (;;) {
        pollfd p{0, POLLIN, 0};
        if (::poll(&p, 1, -1) < 0) return;
        if (::read(0, buf, sizeof(buf)) <= 0) return;
    }
}

ucx::UcxOptions ucx_options(const Args& a) {
    ucx::UcxOptions o;
    o.transports = a.get("tls", "shm,self");
    return o;
}

// The publisher's request hold (--hold-control), set from stdin, asked on the loop thread.
class HoldControl {
public:
    bool hold(const wire::Request& rq) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!type_ || rq.type != *type_) return false;
        if (rq.type == wire::RequestType::kRead && rq.offset < from_) return false;
        if (seen_.insert({rq.reader_id, rq.request_id}).second) {
            ++held_;
            emit({{"event", "held"},
                  {"type", std::string(wire::request_type_name(rq.type))},
                  {"version", rq.version},
                  {"offset", rq.offset}});
        }
        return true;
    }
    // "hold acquire", "hold read [FROM]", "release"; false for other lines.
    bool command(const std::string& line) {
        std::lock_guard<std::mutex> lock(mu_);
        if (line == "release") {
            type_.reset();
            emit({{"event", "released"}, {"held", held_}});
            return true;
        }
        if (line.rfind("hold ", 0) != 0) return false;
        std::istringstream words(line.substr(5));
        std::string type;
        words >> type >> from_;
        type_ = type == "read" ? wire::RequestType::kRead : wire::RequestType::kAcquire;
        emit({{"event", "holding"}, {"type", type}, {"from", from_}});
        return true;
    }
    uint64_t held() {
        std::lock_guard<std::mutex> lock(mu_);
        return held_;
    }

private:
    std::mutex mu_;
    std::optional<wire::RequestType> type_;
    uint64_t from_ = 0;
    std::set<std::pair<uint64_t, uint64_t>> seen_;
    uint64_t held_ = 0;
};

int publish(const Args& a) {
    const std::string dir = a.get("dir");
    const uint64_t seed = a.num("seed", 1);
    const Layout layout = random_layout(seed, a.num("bytes", 4 << 20));
    FileAnnouncer announcer(dir);
    PublisherOptions o;
    o.job = JobId(a.num("job", 1));
    o.publisher_id = fmt::format("job-{:06}/trainer-{}", o.job.number(), a.num("shard", 0));
    o.slots = static_cast<uint32_t>(a.num("slots", 3));
    o.chunk_bytes = a.num("chunk-bytes", 1 << 20);
    o.lease_ttl_ms = std::chrono::milliseconds(a.num("ttl-ms", 2000));
    o.shard_index = static_cast<uint32_t>(a.num("shard", 0));
    o.shard_count = static_cast<uint32_t>(a.num("shards", 1));
    o.ucx = ucx_options(a);
    HoldControl hold;
    if (a.flag("hold-control")) {
        o.server.hold_request = [&hold](const wire::Request& rq) { return hold.hold(rq); };
    }
    auto publisher = Publisher::create(o, layout, announcer);
    if (!publisher.ok()) {
        emit({{"event", "error"}, {"message", publisher.status().to_string()}});
        return 1;
    }
    auto full = *HostBuffer::allocate(layout.total_bytes());
    const ByteRange range = (*publisher)->shard_range();
    const uint64_t versions = a.num("versions", 1);
    const auto duration = std::chrono::milliseconds(a.num("duration-ms", 0));
    const auto start = Clock::now();
    Version v = a.num("first-version", 1);
    for (uint64_t n = 0;; ++n, ++v) {
        if (duration.count() > 0 ? Clock::now() - start >= duration : n >= versions) break;
        fill_version(full.span(), seed, v);
        Status s = (*publisher)->publish(v, full.span().subspan(range.begin, range.size()));
        if (!s.ok()) {
            emit({{"event", "error"}, {"version", v}, {"message", s.to_string()}});
            return 1;
        }
        if (n == 0) emit({{"event", "ready"}, {"pid", getpid()}});
        emit({{"event", "published"}, {"version", v}});
    }
    const auto stats = (*publisher)->stats();
    emit({{"event", "done"},
          {"published", stats.published},
          {"reclaim_waits", stats.reclaim_waits}});
    // Serve readers; each "publish" line on stdin publishes the next version.
    std::string pending;
    char buf[256];
    for (;;) {
        pollfd p{0, POLLIN, 0};
        if (::poll(&p, 1, -1) < 0) break;
        const ssize_t n = ::read(0, buf, sizeof(buf));
        if (n <= 0) break;
        pending.append(buf, static_cast<size_t>(n));
        for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
            const std::string line = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            if (a.flag("hold-control") && hold.command(line)) continue;
            if (line == "stats") {
                const auto st = (*publisher)->stats();
                emit({{"event", "stats"},
                      {"requests", st.requests_served},
                      {"refused", st.requests_refused},
                      {"held", hold.held()},
                      {"live_leases", st.live_leases}});
                continue;
            }
            if (line != "publish") continue;
            const auto t0 = Clock::now();
            fill_version(full.span(), seed, v);
            Status s = (*publisher)->publish(v, full.span().subspan(range.begin, range.size()));
            emit({{"event", s.ok() ? "published" : "error"},
                  {"version", v},
                  {"message", s.to_string()},
                  {"ms", std::chrono::duration<double, std::milli>(Clock::now() - t0).count()}});
            ++v;
        }
    }
    return 0;
}

std::optional<VersionDescriptor> wait_version(const std::string& dir, JobId job,
                                              std::optional<Version> version,
                                              std::chrono::milliseconds timeout) {
    std::optional<VersionDescriptor> found;
    wait_for_directory(dir, timeout, [&] {
        found = version ? load_version(dir, job, *version) : newest_version(dir, job);
        return found.has_value();
    });
    return found;
}

int read(const Args& a) {
    const std::string dir = a.get("dir");
    const uint64_t seed = a.num("seed", 1);
    const Layout layout = random_layout(seed, a.num("bytes", 4 << 20));
    const JobId job(a.num("job", 1));
    const std::string mode = a.get("mode", "pull");
    const uint32_t index = static_cast<uint32_t>(a.num("index", 0));
    ReaderOptions o;
    o.job = job;
    o.reader_id = fmt::format("job-{:06}/rollout-{}", job.number(), index);
    o.ucx = ucx_options(a);
    const std::string path = a.get("path", "auto");
    o.read_path = path == "get"  ? ReadPath::kGet
                  : path == "am" ? ReadPath::kActiveMessage
                                 : ReadPath::kAuto;
    o.stall_timeout_ms = std::chrono::milliseconds(a.num("stall-ms", 3000));
    o.request_timeout_ms = std::chrono::milliseconds(a.num("request-ms", 3000));
    o.min_chunk_bytes = 4096;
    o.relay = a.flag("relay");
    auto reader = Reader::create(o, layout);
    if (!reader.ok()) {
        emit({{"event", "error"}, {"message", reader.status().to_string()}});
        return 1;
    }
    Reader& r = **reader;

    std::optional<RelaySource> source;
    if (o.relay) {
        // Publish where downstream readers find us, then find our own source in the tree.
        Status written = write_file_atomically(dir, fmt::format("relay-{}.json", index),
                                               to_json(r.relay_source()).dump());
        if (!written.ok()) {
            emit({{"event", "error"}, {"message", written.to_string()}});
            return 1;
        }
        if (a.flag("join")) {
            emit({{"event", "join"},
                  {"reader", o.reader_id},
                  {"relay_source", to_json(r.relay_source())}});
            std::string line;
            if (!std::getline(std::cin, line)) {
                emit({{"event", "error"}, {"message", "no relay assignment on stdin"}});
                return 1;
            }
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded() || !j.is_object()) {
                emit({{"event", "error"}, {"message", "bad relay assignment: " + line}});
                return 1;
            }
            if (j.contains("source") && !j["source"].is_null()) {
                auto parsed = relay_source_from_json(j["source"]);
                if (!parsed.ok()) {
                    emit({{"event", "error"}, {"message", parsed.status().to_string()}});
                    return 1;
                }
                source = *parsed;
            }
        }
        std::vector<std::string> names;
        for (uint64_t i = 0; i < a.num("readers", 1); ++i) names.push_back(std::to_string(i));
        const auto plan = plan_relay_tree(names, static_cast<uint32_t>(a.num("fan-out", 2)));
        if (!a.flag("join") && plan.at(index).source) {
            const std::string file = fmt::format("{}/relay-{}.json", dir, *plan[index].source);
            wait_for_directory(dir, std::chrono::seconds(20),
                               [&] { return access(file.c_str(), R_OK) == 0; });
            std::ifstream in(file);
            nlohmann::json j;
            in >> j;
            source = *relay_source_from_json(j);
        }
    }

    const auto duration = std::chrono::milliseconds(a.num("duration-ms", 0));
    if (duration.count() > 0) {
        // Stress: fetch the newest version over and over; every success is checked in full.
        uint64_t ok = 0, torn = 0, errors = 0, retryable = 0;
        Version lowest = UINT64_MAX, highest = 0;
        std::optional<Version> last;
        std::string last_error;
        const auto start = Clock::now();
        while (Clock::now() - start < duration) {
            auto d = wait_version(dir, job, std::nullopt, std::chrono::milliseconds(500));
            if (!d) continue;
            if (last && d->version <= *last) {
                wait_for_directory(dir, std::chrono::milliseconds(200), [&] {
                    auto n = newest_version(dir, job);
                    return n && n->version > *last;
                });
                continue;
            }
            const auto t0 = Clock::now();
            auto fetched = fetch_newest(
                r, [&] { return newest_version(dir, job); }, d->version);
            Status s = fetched.status();
            if (a.flag("verbose")) {
                emit(
                    {{"event", "fetch"},
                     {"version", d->version},
                     {"ok", s.ok()},
                     {"message", s.to_string()},
                     {"ms", std::chrono::duration<double, std::milli>(Clock::now() - t0).count()}});
            }
            if (!s.ok()) {
                ++errors;
                retryable += s.retryable() ? 1 : 0;
                last_error = s.to_string();
                continue;
            }
            r.swap();
            auto view = r.current();
            if (first_mismatch(view->bytes(), seed, view->version())) {
                ++torn;
            } else {
                ++ok;
            }
            last = view->version();
            lowest = std::min(lowest, view->version());
            highest = std::max(highest, view->version());
        }
        emit({{"event", "summary"},
              {"ok", ok},
              {"torn", torn},
              {"errors", errors},
              {"retryable", retryable},
              {"lowest", lowest},
              {"highest", highest},
              {"last_error", last_error}});
        return torn == 0 ? 0 : 1;
    }

    std::optional<Version> want;
    if (a.flag("version")) want = a.num("version", 0);
    auto d = wait_version(dir, job, want, std::chrono::seconds(20));
    if (!d) {
        emit({{"event", "error"}, {"message", "no version announced"}});
        return 1;
    }
    const auto t0 = Clock::now();
    if (mode == "map") {
        auto mapped = r.map(*d);
        if (!mapped.ok()) {
            emit({{"event", "error"}, {"message", mapped.status().to_string()}});
            return 1;
        }
        const auto mismatch = first_mismatch((*mapped)->bytes(), seed, d->version);
        emit({{"event", "mapped"},
              {"version", d->version},
              {"identical", !mismatch.has_value()},
              {"valid", (*mapped)->still_valid()},
              {"seconds", std::chrono::duration<double>(Clock::now() - t0).count()}});
        serve_until_stdin_closes();
        emit({{"event", "unmapped"}, {"valid", (*mapped)->still_valid()}});
        return 0;
    }
    if (mode == "partial") {
        std::vector<TensorSelection> selection;
        for (const auto& t : layout.tensors()) {
            if (t.shape.size() == 2 && t.shape[0] >= 4 && selection.empty()) {
                selection.push_back({t.name, RowRange{1, t.shape[0] - 1}});
            } else if (t.shape.size() == 1 && selection.size() == 1) {
                selection.push_back({t.name, std::nullopt});
            }
        }
        auto part = r.fetch_partial(*d, selection);
        if (!part.ok()) {
            emit({{"event", "error"}, {"message", part.status().to_string()}});
            return 1;
        }
        bool identical = true;
        for (const auto& sel : selection) {
            const TensorInfo* t = layout.find(sel.name);
            const uint64_t skip =
                sel.rows ? static_cast<uint64_t>(sel.rows->begin) * t->row_bytes() : 0;
            identical &= !first_mismatch(part->tensor(sel.name), seed, d->version, t->offset + skip)
                              .has_value();
            const uint64_t rows =
                sel.rows ? static_cast<uint64_t>(sel.rows->end - sel.rows->begin) : 0;
            if (sel.rows) identical &= part->tensor(sel.name).size() == rows * t->row_bytes();
        }
        emit({{"event", "partial"},
              {"version", d->version},
              {"identical", identical},
              {"tensors", selection.size()}});
        return identical ? 0 : 1;
    }
    Status s = r.fetch(*d, source ? &*source : nullptr);
    if (!s.ok()) {
        emit({{"event", "error"}, {"message", s.to_string()}});
        if (a.flag("serve")) serve_until_stdin_closes();
        return 1;
    }
    r.swap();
    auto view = r.current();
    const auto mismatch = first_mismatch(view->bytes(), seed, d->version);
    const auto stats = r.last_fetch();
    emit({{"event", "fetched"},
          {"version", view->version()},
          {"identical", !mismatch.has_value()},
          {"mismatch_at", mismatch ? static_cast<int64_t>(*mismatch) : -1},
          {"seconds", stats.seconds},
          {"path", std::string(read_path_name(stats.path))},
          {"via_relay", stats.via_relay}});
    if (a.flag("serve")) serve_until_stdin_closes();
    return mismatch ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s publish|read --dir D --tls T ...\n", argv[0]);
        return 2;
    }
    const std::string command = argv[1];
    const Args args = parse(argc, argv);
    if (args.flag("debug")) {
        LogOptions log;
        log.console_level = LogLevel::kDebug;
        if (!init_logging(log).ok()) return 2;
    }
    if (command == "publish") return publish(args);
    if (command == "read") return read(args);
    std::fprintf(stderr, "unknown command %s\n", command.c_str());
    return 2;
}
