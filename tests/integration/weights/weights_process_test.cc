// Multi-process weight-plane tests: publisher and readers are separate processes (the helper
// program) talking over real UCX, once with shared memory and once with TCP.

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "common/weights/slot_format.h"
#include "coordinator/state_store.h"
#include "coordinator/version_table.h"
#include "tests/integration/weights/test_support.h"

namespace tandem::weights::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kHelper =
    std::string(TANDEM_BINARY_DIR) + "/tests/integration/weights/tandem-weights-helper";

// CI runs the stress test for this long per transport; TANDEM_WEIGHTS_STRESS_MS overrides it
// (the 20 s run: TANDEM_WEIGHTS_STRESS_MS=20000).
milliseconds stress_duration() {
    const char* env = std::getenv("TANDEM_WEIGHTS_STRESS_MS");
    return milliseconds(env != nullptr ? std::atoll(env) : 10'000);
}

// A publisher's slot mapped read-write from outside (its "sysv:ID" segment or /proc path), to
// corrupt bytes the way a bad disk or a buggy writer would.
class SlotMapping {
public:
    SlotMapping(const std::string& share, size_t bytes) : bytes_(bytes) {
        sysv_ = share.rfind("sysv:", 0) == 0;
        void* p = MAP_FAILED;
        if (sysv_) {
            p = shmat(std::atoi(share.c_str() + 5), nullptr, 0);
            if (p == reinterpret_cast<void*>(-1)) p = MAP_FAILED;
        } else if (const int fd = ::open(share.c_str(), O_RDWR); fd >= 0) {
            p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            ::close(fd);
        }
        if (p != MAP_FAILED) data_ = static_cast<std::byte*>(p);
    }
    SlotMapping(const SlotMapping&) = delete;
    SlotMapping& operator=(const SlotMapping&) = delete;
    ~SlotMapping() {
        if (data_ == nullptr) return;
        if (sysv_) {
            shmdt(data_);
        } else {
            munmap(data_, bytes_);
        }
    }
    std::byte* data() const { return data_; }

private:
    std::byte* data_ = nullptr;
    size_t bytes_ = 0;
    bool sysv_ = false;
};

class WeightsProcesses : public ::testing::TestWithParam<std::string> {
protected:
    std::vector<std::string> args(const std::string& command, std::vector<std::string> extra) {
        std::vector<std::string> a = {kHelper, command, "--dir", dir_.path(), "--tls", GetParam()};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    }
    ChildProcess spawn(const std::string& command, std::vector<std::string> extra) {
        auto p = ChildProcess::spawn(args(command, std::move(extra)));
        EXPECT_TRUE(p.ok()) << p.status().to_string();
        return std::move(*p);
    }
    // The next JSON line from `p` whose "event" is `event` (skipping others), within `timeout`.
    static nlohmann::json expect_event(ChildProcess& p, const std::string& event,
                                       milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left = std::chrono::duration_cast<milliseconds>(
                deadline - std::chrono::steady_clock::now());
            auto line = p.read_line(std::max(left, milliseconds(0)));
            if (!line) {
                ADD_FAILURE() << "no \"" << event << "\" event within " << timeout.count() << " ms";
                return nlohmann::json::object();
            }
            auto j = nlohmann::json::parse(*line, nullptr, false);
            if (j.is_discarded()) continue;
            if (j.value("event", "") == "error" && event != "error") {
                ADD_FAILURE() << "helper reported: " << j.dump();
                return j;
            }
            if (j.value("event", "") == event) return j;
        }
    }
    bool shm() const { return GetParam().find("shm") != std::string::npos; }
    // A healthy publisher in this process ("job-000001/trainer-fast") that has published
    // `version` of `layout` (the bytes of fill_version(seed, version)) into `directory`.
    Result<std::unique_ptr<Publisher>> publish_in_process(const Layout& layout, uint64_t seed,
                                                          Version version, uint64_t chunk_bytes,
                                                          VersionDirectory& directory) {
        PublisherOptions po;
        po.job = JobId(1);
        po.publisher_id = "job-000001/trainer-fast";
        po.chunk_bytes = chunk_bytes;
        po.ucx.transports = GetParam();
        TANDEM_ASSIGN_OR_RETURN(auto publisher, Publisher::create(po, layout, directory));
        TANDEM_ASSIGN_OR_RETURN(auto bytes, HostBuffer::allocate(layout.total_bytes()));
        fill_version(bytes.span(), seed, version);
        TANDEM_RETURN_IF_ERROR(publisher->publish(version, bytes.span()));
        return publisher;
    }

    TempDir dir_;
};

TEST_P(WeightsProcesses, PublishThenFetchGivesIdenticalBytes) {
    auto publisher = spawn("publish", {"--seed", "7", "--bytes", "24000000", "--versions", "2"});
    expect_event(publisher, "done", seconds(30));
    for (const std::string path : {"auto", "get", "am"}) {
        if (path == "get" && !shm()) continue;  // emulated gets over TCP are slow; auto avoids them
        auto reader = spawn("read", {"--seed", "7", "--bytes", "24000000", "--path", path});
        auto fetched = expect_event(reader, "fetched", seconds(30));
        EXPECT_TRUE(fetched.value("identical", false)) << fetched.dump();
        EXPECT_EQ(fetched.value("version", 0), 2) << fetched.dump();
        if (path == "auto") {
            // The reader picks native gets on shared memory and active messages over TCP.
            EXPECT_EQ(fetched.value("path", ""), shm() ? "get" : "am") << fetched.dump();
        } else {
            EXPECT_EQ(fetched.value("path", ""), path) << fetched.dump();
        }
        EXPECT_EQ(reader.wait(seconds(10)), 0);
    }
    publisher.close_stdin();
    EXPECT_EQ(publisher.wait(seconds(10)), 0);
}

TEST_P(WeightsProcesses, PartialReadReturnsTheRightRows) {
    auto publisher = spawn("publish", {"--seed", "3", "--bytes", "8000000"});
    expect_event(publisher, "done", seconds(30));
    auto reader = spawn("read", {"--seed", "3", "--bytes", "8000000", "--mode", "partial"});
    auto part = expect_event(reader, "partial", seconds(30));
    EXPECT_TRUE(part.value("identical", false)) << part.dump();
    EXPECT_EQ(part.value("tensors", 0), 2) << part.dump();
    EXPECT_EQ(reader.wait(seconds(10)), 0);
}

TEST_P(WeightsProcesses, SameHostMapIsReadOnlyAndValid) {
    auto publisher = spawn("publish", {"--seed", "4", "--bytes", "8000000"});
    expect_event(publisher, "done", seconds(30));
    auto reader = spawn("read", {"--seed", "4", "--bytes", "8000000", "--mode", "map"});
    auto mapped = expect_event(reader, "mapped", seconds(30));
    EXPECT_TRUE(mapped.value("identical", false)) << mapped.dump();
    EXPECT_TRUE(mapped.value("valid", false)) << mapped.dump();
    reader.close_stdin();
    auto unmapped = expect_event(reader, "unmapped", seconds(10));
    EXPECT_TRUE(unmapped.value("valid", false));
    EXPECT_EQ(reader.wait(seconds(10)), 0);
}

TEST_P(WeightsProcesses, RelayTreeOfFourReadersDeliversIdenticalBytes) {
    auto publisher =
        spawn("publish", {"--seed", "5", "--bytes", "16000000", "--chunk-bytes", "262144"});
    expect_event(publisher, "done", seconds(30));
    std::vector<ChildProcess> readers;
    for (int i = 0; i < 4; ++i) {
        readers.push_back(
            spawn("read", {"--seed", "5", "--bytes", "16000000", "--relay", "--index",
                           std::to_string(i), "--readers", "4", "--fan-out", "2", "--serve"}));
    }
    for (int i = 0; i < 4; ++i) {
        auto fetched = expect_event(readers[i], "fetched", seconds(30));
        EXPECT_TRUE(fetched.value("identical", false)) << "reader " << i << ": " << fetched.dump();
        // Fan-out 2: readers 0 and 1 read the publisher, 2 and 3 read reader 0.
        EXPECT_EQ(fetched.value("via_relay", false), i >= 2) << fetched.dump();
    }
    for (auto& r : readers) r.close_stdin();
    for (auto& r : readers) EXPECT_EQ(r.wait(seconds(10)), 0);
}

// The relay tree as the control plane assigns it: each reader announces itself as a relay source
// for the version (relay_join), the coordinator's VersionTable places it with the job's fan-out
// and the reader reads from where it is told. The test stands in for the agents and the
// coordinator loop, passing the joins to a real VersionTable (on a real SQLite store) and the
// assignments back.
TEST_P(WeightsProcesses, RelayTreeAssignedByTheVersionTableDeliversIdenticalBytes) {
    auto publisher =
        spawn("publish", {"--seed", "6", "--bytes", "16000000", "--chunk-bytes", "262144"});
    expect_event(publisher, "done", seconds(30));
    const JobId job(1);
    const auto d = newest_version(dir_.path(), job);
    ASSERT_TRUE(d.has_value());
    std::filesystem::create_directories(dir_.path() + "/coordinator");
    auto store = coord::StateStore::open(dir_.path() + "/coordinator");
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    SystemClock clock;
    coord::VersionTable table(clock, **store);
    ASSERT_TRUE(table
                    .publish(job, d->version, to_json(*d), "trainer-node",
                             {d->shards.at(0).publisher, 1, "trainer-node"})
                    .ok());
    constexpr uint32_t kFanOut = 2;  // the job spec's rollout.relay_fanout
    std::vector<ChildProcess> readers;
    for (int i = 0; i < 4; ++i) {
        readers.push_back(spawn("read", {"--seed", "6", "--bytes", "16000000", "--relay", "--join",
                                         "--index", std::to_string(i), "--serve"}));
    }
    std::vector<std::string> names;
    for (int i = 0; i < 4; ++i) {
        const auto join = expect_event(readers[i], "join", seconds(30));
        const std::string reader = join.value("reader", "");
        names.push_back(reader);
        auto link = table.join_relay(job, d->version, reader,
                                     join.value("relay_source", nlohmann::json()), kFanOut);
        ASSERT_TRUE(link.ok()) << link.status().to_string();
        auto assigned = table.relay_assignment(job, d->version, reader);
        ASSERT_TRUE(assigned.ok()) << assigned.status().to_string();
        ASSERT_TRUE(readers[i].write_line(nlohmann::json{{"source", assigned->source}}.dump()));
    }
    for (int i = 0; i < 4; ++i) {
        auto fetched = expect_event(readers[i], "fetched", seconds(30));
        EXPECT_TRUE(fetched.value("identical", false)) << "reader " << i << ": " << fetched.dump();
        EXPECT_EQ(fetched.value("version", 0), d->version);
        EXPECT_EQ(fetched.value("via_relay", false), i >= 2) << fetched.dump();
    }
    // Who relays to whom, as `tandem versions` shows it: two read the publisher, two read the
    // first reader.
    const auto rec = table.get(job, d->version);
    ASSERT_TRUE(rec.ok()) << rec.status().to_string();
    ASSERT_EQ(rec->relays.size(), 4u);
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(rec->relays[i].reader, names[i]);
        EXPECT_EQ(rec->relays[i].parent, i < 2 ? "" : names[0]) << i;
    }
    for (auto& r : readers) r.close_stdin();
    for (auto& r : readers) EXPECT_EQ(r.wait(seconds(10)), 0);

    // The publisher exits: its agent reports it and the table marks the version unavailable;
    // a reader joining it now is told why.
    publisher.close_stdin();
    const auto code = publisher.wait(seconds(10));
    ASSERT_TRUE(code.has_value());
    table.on_publisher_gone(
        job, d->shards.at(0).publisher, 1,
        fmt::format("publisher {} exited (code {})", d->shards.at(0).publisher, *code));
    const Status refused =
        table.join_relay(job, d->version, "late-reader", nlohmann::json(), kFanOut).status();
    EXPECT_EQ(refused.code(), StatusCode::kUnavailable);
    EXPECT_NE(refused.message().find("is unavailable: publisher"), std::string::npos)
        << refused.message();
}

// One publisher publishing as fast as it can, three readers fetching the newest version as fast
// as they can: every completed read must be one consistent version, never a torn one.
TEST_P(WeightsProcesses, StressEveryCompletedReadIsConsistent) {
    const milliseconds duration = stress_duration();
    const std::string ms = std::to_string(duration.count());
    auto publisher = spawn("publish", {"--seed", "9", "--bytes", "6000000", "--chunk-bytes",
                                       "262144", "--ttl-ms", "1000", "--duration-ms", ms});
    expect_event(publisher, "ready", seconds(30));
    std::vector<ChildProcess> readers;
    for (int i = 0; i < 3; ++i) {
        readers.push_back(spawn("read", {"--seed", "9", "--bytes", "6000000", "--index",
                                         std::to_string(i), "--duration-ms", ms}));
    }
    uint64_t total_ok = 0;
    for (int i = 0; i < 3; ++i) {
        auto summary = expect_event(readers[i], "summary", duration + seconds(30));
        EXPECT_EQ(summary.value("torn", 1), 0) << summary.dump();
        EXPECT_GT(summary.value("ok", 0), 0) << summary.dump();
        total_ok += summary.value("ok", 0);
        EXPECT_EQ(readers[i].wait(seconds(10)), 0);
        std::printf("stress reader %d (%s, %lld ms): %s\n", i, GetParam().c_str(),
                    static_cast<long long>(duration.count()), summary.dump().c_str());
    }
    auto done = expect_event(publisher, "done", seconds(30));
    std::printf("stress publisher (%s): %s\n", GetParam().c_str(), done.dump().c_str());
    EXPECT_GT(done.value("published", 0), 3) << done.dump();
    EXPECT_GT(total_ok, 3u);
    publisher.close_stdin();
    EXPECT_EQ(publisher.wait(seconds(10)), 0);
}

// The publisher is SIGKILLed while a reader is in the middle of fetching from it: the reader must
// fail that fetch within its timeouts, naming the publisher and the version. The kill lands
// mid-fetch every time: the publisher holds the reader's requests for version 2 (its lease
// request over shared memory, where chunks are one-sided gets; its chunk reads over TCP) and is
// killed once it holds one. (Killing it after the reader's first good fetch instead sometimes
// found the reader caught up and idle, waiting for a version that never came: no fetch at all.)
TEST_P(WeightsProcesses, PublisherKilledMidReadFailsTheReaderWithinItsTimeout) {
    constexpr uint64_t kChunk = 1 << 20;
    auto publisher = spawn("publish", {"--seed", "11", "--bytes", "48000000", "--chunk-bytes",
                                       std::to_string(kChunk), "--hold-control"});
    expect_event(publisher, "done", seconds(30));
    auto reader = spawn("read", {"--seed", "11", "--bytes", "48000000", "--duration-ms", "60000",
                                 "--verbose", "--stall-ms", "1000", "--request-ms", "1000"});
    auto first = expect_event(reader, "fetch", seconds(30));
    ASSERT_TRUE(first.value("ok", false)) << first.dump();
    ASSERT_EQ(first.value("version", 0), 1) << first.dump();

    // Over TCP the reader reads by request: hold those past the first chunk, so some of version
    // 2's data has arrived when the publisher dies.
    const uint64_t data_offset =
        SlotFormat::create({{0, random_layout(11, 48000000).total_bytes()}}, kChunk).data_offset;
    ASSERT_TRUE(publisher.write_line(shm() ? "hold acquire"
                                           : fmt::format("hold read {}", data_offset + kChunk)));
    expect_event(publisher, "holding", seconds(10));
    ASSERT_TRUE(publisher.write_line("publish"));
    auto held = expect_event(publisher, "held", seconds(30));
    ASSERT_EQ(held.value("type", ""), shm() ? "acquire" : "read") << held.dump();
    publisher.kill(SIGKILL);
    ASSERT_TRUE(publisher.wait(seconds(10)).has_value());
    const auto killed = std::chrono::steady_clock::now();

    auto f = expect_event(reader, "fetch", seconds(10));
    ASSERT_FALSE(f.empty());
    const double after_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed)
            .count();
    const std::string message = f.value("message", "");
    std::printf("reader failed %.0f ms after the kill: %s\n", after_ms, message.c_str());
    EXPECT_FALSE(f.value("ok", true)) << f.dump();
    EXPECT_EQ(f.value("version", 0), 2) << f.dump();
    EXPECT_NE(message.find("publisher job-000001/trainer-0"), std::string::npos) << message;
    EXPECT_NE(message.find("version 2"), std::string::npos) << message;
    // Timeouts of 1000 ms (requests, stalls); the rest is margin for a loaded machine.
    EXPECT_LT(after_ms, 4000.0);
    reader.kill(SIGKILL);
}

// A fetch fails (a corrupt chunk, read twice) while hundreds of gets to a slow publisher are still
// in flight; UCX 1.13 cannot cancel them. The next fetch, from a healthy publisher into the same
// reader, must not be written into by those stale gets: its bytes must still be right after the
// slow publisher has answered everything it was asked. Before the reader drained a failed fetch's
// requests, the stale gets landed in the buffer the second fetch had verified and swapped in.
TEST_P(WeightsProcesses, StaleRequestsOfAFailedFetchNeverWriteIntoTheNextOne) {
    constexpr uint64_t kSeed = 41;
    constexpr uint64_t kBytes = 8'000'000;
    constexpr uint64_t kChunk = 64 << 10;
    auto slow = spawn("publish", {"--seed", std::to_string(kSeed), "--bytes",
                                  std::to_string(kBytes), "--chunk-bytes", std::to_string(kChunk),
                                  "--versions", "1", "--first-version", "1"});
    expect_event(slow, "ready", seconds(30));
    auto v1 = load_version(dir_.path(), JobId(1), 1);
    ASSERT_TRUE(v1.has_value());

    // Corrupt chunk 0 of the slow publisher's slot, from outside, through its shared memory.
    const Layout layout = random_layout(kSeed, kBytes);
    ASSERT_EQ(v1->layout_fingerprint, layout.fingerprint());
    const SlotFormat format = SlotFormat::create({{0, layout.total_bytes()}}, kChunk);
    SlotMapping slot(v1->shards[0].shm_path, format.region_bytes);
    ASSERT_NE(slot.data(), nullptr) << v1->shards[0].shm_path;
    slot.data()[format.data_offset + 100] ^= std::byte{0x40};

    // The healthy publisher of version 2, same layout, in this process.
    VersionDirectory directory;
    auto fast = publish_in_process(layout, kSeed, 2, kChunk, directory);
    ASSERT_TRUE(fast.ok()) << fast.status().to_string();
    const VersionDescriptor v2 = *directory.newest(JobId(1));

    ReaderOptions ro;
    ro.job = JobId(1);
    ro.ucx.transports = GetParam();
    ro.read_path = ReadPath::kGet;  // over TCP, UCX emulates these: they stay in flight
    ro.piece_bytes = 4096;
    ro.window_reads = 512;
    ro.request_timeout_ms = milliseconds(20'000);
    ro.stall_timeout_ms = milliseconds(20'000);
    ro.drain_timeout_ms = milliseconds(500);
    // Slow the publisher down: it runs about 0.3 ms in every 100, and not at all while `hold` is
    // set.
    std::atomic<bool> throttle{true};
    std::atomic<bool> hold{false};
    const pid_t slow_pid = slow.pid();
    std::thread throttler([&] {
        while (throttle.load()) {
            ::kill(slow_pid, SIGSTOP);
            std::this_thread::sleep_for(milliseconds(100));
            while (hold.load() && throttle.load()) std::this_thread::sleep_for(milliseconds(5));
            ::kill(slow_pid, SIGCONT);
            std::this_thread::sleep_for(std::chrono::microseconds(300));
        }
        ::kill(slow_pid, SIGCONT);
    });
    struct Joiner {
        std::atomic<bool>& flag;
        std::thread& thread;
        ~Joiner() {
            flag.store(false);
            if (thread.joinable()) thread.join();
        }
    } joiner{throttle, throttler};

    // The failed fetch must leave gets in flight (over TCP). If the slow publisher happened to
    // answer all of them before the reader noticed the bad chunk, try again with a new reader.
    std::unique_ptr<Reader> reader;
    uint64_t left_in_flight = 0;
    for (int attempt = 1;; ++attempt) {
        reader.reset();
        auto created = Reader::create(ro, layout);
        ASSERT_TRUE(created.ok()) << created.status().to_string();
        reader = std::move(*created);
        hold.store(false);
        const Status first = reader->fetch(*v1);
        // The slow publisher answers nothing more until version 2 is in and checked: whatever
        // it still owes the failed fetch arrives after that.
        hold.store(true);
        EXPECT_EQ(first.code(), StatusCode::kDataLoss) << first.to_string();
        left_in_flight = reader->drain_stats().requests;
        std::printf("attempt %d: the failed fetch left %llu request(s) in flight (%s)\n", attempt,
                    static_cast<unsigned long long>(left_in_flight), GetParam().c_str());
        if (shm() || left_in_flight > 0 || attempt == 4) break;
    }
    // Gets from an attached segment complete inside the call; emulated ones (TCP) usually do
    // not, but on a loaded machine the slow publisher can still answer all of them before the
    // reader sees the bad chunk (seen in CI: 4 attempts, none left any). Then the drain path is
    // not exercised this run: say so, and keep checking that nothing overwrites version 2.
    // (UCX serves emulated gets inside the publisher, out of reach of a request hold; the
    // request/response path has the deterministic test below,
    // HeldReadsOfAFailedFetchAreRefusedOnceItsLeaseIsReleased.)
    const bool exercised = !shm() && left_in_flight > 0;
    if (!shm() && !exercised) {
        std::printf(
            "NOTE: no request was left in flight in 4 attempts (%s): the drain and the "
            "forced close were not exercised this run\n",
            GetParam().c_str());
        RecordProperty("drain_exercised", "false");
    }

    const Status second = reader->fetch(v2);
    ASSERT_TRUE(second.ok()) << second.to_string();
    ASSERT_TRUE(reader->swap());
    auto view = reader->current();
    ASSERT_EQ(view->version(), 2u);
    EXPECT_EQ(first_mismatch(view->bytes(), kSeed, 2), std::nullopt);

    // Let the slow publisher answer everything it was asked, then look again.
    hold.store(false);
    std::this_thread::sleep_for(milliseconds(1000));
    throttle.store(false);
    throttler.join();
    std::this_thread::sleep_for(milliseconds(500));
    const auto mismatch = first_mismatch(view->bytes(), kSeed, 2);
    EXPECT_EQ(mismatch, std::nullopt)
        << "version 2 was overwritten at byte " << *mismatch << " after it was verified";
    const auto manifest = Manifest::compute(view->bytes(), kChunk);
    EXPECT_EQ(manifest.digest(), v2.shards[0].manifest_digest);
    const DrainStats end = reader->drain_stats();
    EXPECT_EQ(end.draining, 0u);
    EXPECT_EQ(end.retired_buffers, 0u);
    if (exercised) {
        // The failed operation was drained. Whether its requests were completed by the forced
        // close or by answers already on the wire when the publisher was held depends on timing
        // (CI under load: answers sent before `hold` arrived within the drain's wait, 0 forced
        // closes); either way version 2, checked above, was never written into.
        EXPECT_GE(end.operations, 1u);
        EXPECT_GE(end.requests, left_in_flight);
    }
    std::printf("drain: %llu operation(s), %llu request(s), %llu forced close(s)\n",
                static_cast<unsigned long long>(end.operations),
                static_cast<unsigned long long>(end.requests),
                static_cast<unsigned long long>(end.forced_closes));
}

// The deterministic form of the case above, on the request/response path: the slow publisher
// holds every chunk read past chunk 0 (fault injection: the helper's --hold-control), so when the
// fetch fails on chunk 0 (corrupt, read twice) its other reads are certainly still unanswered. The
// reader gives them up and releases its lease of version 1; version 2 is fetched from another
// publisher; only then are the held reads let go. Each arrives for a version the reader has
// dropped (its lease released) and must be refused; none may write into version 2.
TEST_P(WeightsProcesses, HeldReadsOfAFailedFetchAreRefusedOnceItsLeaseIsReleased) {
    constexpr uint64_t kSeed = 43;
    constexpr uint64_t kBytes = 4'000'000;
    constexpr uint64_t kChunk = 64 << 10;
    auto slow =
        spawn("publish", {"--seed", std::to_string(kSeed), "--bytes", std::to_string(kBytes),
                          "--chunk-bytes", std::to_string(kChunk), "--hold-control"});
    expect_event(slow, "done", seconds(30));
    auto v1 = load_version(dir_.path(), JobId(1), 1);
    ASSERT_TRUE(v1.has_value());
    const Layout layout = random_layout(kSeed, kBytes);
    const SlotFormat format = SlotFormat::create({{0, layout.total_bytes()}}, kChunk);
    SlotMapping slot(v1->shards[0].shm_path, format.region_bytes);
    ASSERT_NE(slot.data(), nullptr) << v1->shards[0].shm_path;
    slot.data()[format.data_offset + 100] ^= std::byte{0x40};
    ASSERT_TRUE(slow.write_line(fmt::format("hold read {}", format.data_offset + kChunk)));
    expect_event(slow, "holding", seconds(10));

    VersionDirectory directory;
    auto fast = publish_in_process(layout, kSeed, 2, kChunk, directory);
    ASSERT_TRUE(fast.ok()) << fast.status().to_string();

    ReaderOptions ro;
    ro.job = JobId(1);
    ro.ucx.transports = GetParam();
    ro.read_path = ReadPath::kActiveMessage;
    // One read per chunk, and a window with room for every chunk and the re-read of chunk 0
    // (held reads never leave the window).
    ro.am_piece_bytes = kChunk;
    ro.window_reads = 2 * static_cast<uint32_t>(format.chunk_counts[0]);
    ro.request_timeout_ms = milliseconds(20'000);
    ro.stall_timeout_ms = milliseconds(20'000);
    auto reader = Reader::create(ro, layout);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
    const Status first = (*reader)->fetch(*v1);
    ASSERT_EQ(first.code(), StatusCode::kDataLoss) << first.to_string();
    EXPECT_NE(first.message().find("chunk 0 "), std::string::npos) << first.message();
    // At least one read past chunk 0 reached the slow publisher and is held there.
    auto held = expect_event(slow, "held", seconds(10));
    EXPECT_GE(held.value("offset", uint64_t{0}), format.data_offset + kChunk) << held.dump();

    ASSERT_TRUE((*reader)->fetch(*directory.newest(JobId(1))).ok());
    ASSERT_TRUE((*reader)->swap());
    auto view = (*reader)->current();
    ASSERT_EQ(view->version(), 2u);

    ASSERT_TRUE(slow.write_line("release"));
    auto released = expect_event(slow, "released", seconds(10));
    const uint64_t n_held = released.value("held", uint64_t{0});
    EXPECT_GE(n_held, 1u) << released.dump();
    // Every held read is answered with a refusal (the lease is gone), within a few seconds.
    nlohmann::json stats;
    for (int i = 0; i < 100; ++i) {
        ASSERT_TRUE(slow.write_line("stats"));
        stats = expect_event(slow, "stats", seconds(10));
        if (stats.value("refused", uint64_t{0}) >= n_held) break;
        std::this_thread::sleep_for(milliseconds(50));
    }
    std::printf("held %llu read(s) of the failed fetch (%s): %s\n",
                static_cast<unsigned long long>(n_held), GetParam().c_str(), stats.dump().c_str());
    EXPECT_GE(stats.value("refused", uint64_t{0}), n_held) << stats.dump();
    EXPECT_EQ(stats.value("live_leases", 1), 0) << stats.dump();
    EXPECT_EQ(first_mismatch(view->bytes(), kSeed, 2), std::nullopt);
    slow.close_stdin();
    EXPECT_EQ(slow.wait(seconds(10)), 0);
}

// A reader holds a lease (a mapped version) and dies: the publisher, with a single slot, must
// reclaim it once the lease runs out, never waiting longer than one TTL.
TEST_P(WeightsProcesses, ReaderKilledWithALeaseIsReclaimedWithinOneTtl) {
    auto publisher = spawn(
        "publish", {"--seed", "12", "--bytes", "4000000", "--slots", "1", "--ttl-ms", "1500"});
    expect_event(publisher, "done", seconds(30));
    auto reader = spawn("read", {"--seed", "12", "--bytes", "4000000", "--mode", "map"});
    auto mapped = expect_event(reader, "mapped", seconds(30));
    ASSERT_TRUE(mapped.value("identical", false)) << mapped.dump();
    reader.kill(SIGKILL);
    ASSERT_TRUE(reader.wait(seconds(10)).has_value());
    const auto killed = std::chrono::steady_clock::now();
    ASSERT_TRUE(publisher.write_line("publish"));
    auto published = expect_event(publisher, "published", seconds(10));
    const double waited_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed)
            .count();
    EXPECT_EQ(published.value("version", 0), 2) << published.dump();
    std::printf("slot reclaimed %.0f ms after the reader died (TTL 1500 ms)\n", waited_ms);
    EXPECT_LT(waited_ms, 1500.0 + 1000.0);
    publisher.close_stdin();
    EXPECT_EQ(publisher.wait(seconds(10)), 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, WeightsProcesses, ::testing::Values("shm,self", "tcp,self"),
                         [](const auto& info) {
                             return info.param.find("shm") != std::string::npos ? "shm" : "tcp";
                         });

}  // namespace
}  // namespace tandem::weights::testing
