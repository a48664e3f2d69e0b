// tandem-bench-weights-gpu: publish + fetch of one weight version GPU -> GPU, against cudaMemcpy
// device -> host + host -> device of the same bytes through a pinned buffer (the floor any staged
// path pays), measured in the same run. One JSON object per line:
//   {"bench":"weights_gpu","path":"pinned_host",...}  publish from device, fetch into device
//   {"bench":"weights_gpu","path":"ucx_device",...}   publish with a device slot registered
//                                                      with UCX, one-sided gets straight into
//                                                      device memory ("path_used" says which path
//                                                      the reader took); skipped with the reason
//                                                      when this UCX cannot register CUDA memory
//   {"bench":"weights_gpu","path":"cuda_ipc",...}     publish with a device slot, a second
//                                                      process opens it (no copy)
// Without a CUDA device it prints {"bench":"weights_gpu","skipped":true,"reason":...}.
//
//   tandem-bench-weights-gpu [--bytes 1G] [--chunk-bytes 4M] [--iterations 3] [--no-ipc]
// Internal: --role ipc-reader --descriptor FILE (the child of the cuda_ipc case).

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/weights/publisher.h"
#include "common/weights/reader.h"

namespace tandem::weights {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}
// The fastest iteration: interference only slows a run down.
double best(const std::vector<double>& v) {
    return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
uint64_t parse_size(const std::string& text) {
    uint64_t n = std::stoull(text);
    switch (text.back()) {
        case 'K':
            return n << 10;
        case 'M':
            return n << 20;
        case 'G':
            return n << 30;
        default:
            return n;
    }
}

// A layout of bf16 matrices adding up to about `bytes`.
Layout bench_layout(uint64_t bytes) {
    std::vector<TensorSpec> specs;
    const int64_t cols = 4096;
    const uint64_t per = bytes / 8;
    for (int i = 0; i < 8; ++i) {
        specs.push_back({fmt::format("model.layers.{}.mlp.weight", i),
                         DType::kBF16,
                         {static_cast<int64_t>(per / (cols * 2)), cols}});
    }
    return *Layout::create(std::move(specs));
}

void fill(std::span<std::byte> out, uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    auto* w = reinterpret_cast<uint64_t*>(out.data());
    for (size_t i = 0; i < out.size() / 8; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
}

int fail(const std::string& path, const std::string& what) {
    std::cout << json{{"bench", "weights_gpu"}, {"path", path}, {"error", what}}.dump() << "\n";
    return 1;
}

// Child of the cuda_ipc case: maps the version from the descriptor through CUDA IPC, checks the
// bytes against the expected seed, prints one JSON line and exits (releasing the lease).
int ipc_reader(const std::map<std::string, std::string>& args) {
    std::ifstream in(args.at("--descriptor"));
    json j = json::parse(in);
    auto d = descriptor_from_json(j.at("descriptor"));
    auto layout = Layout::from_json(j.at("layout"));
    if (!d.ok() || !layout.ok()) return fail("cuda_ipc", "child: bad descriptor file");
    auto staging = DeviceStaging::create(0);
    if (!staging.ok()) return fail("cuda_ipc", staging.status().to_string());
    ReaderOptions ro;
    ro.job = d->job;
    ro.reader_id = "bench/rollout-ipc";
    ro.ucx.transports = "shm,self";
    auto reader = Reader::create(ro, *layout);
    if (!reader.ok()) return fail("cuda_ipc", reader.status().to_string());
    const auto t0 = Clock::now();
    auto mapped = (*reader)->map_device(*d, **staging);
    const double open_s = since(t0);
    if (!mapped.ok()) return fail("cuda_ipc", mapped.status().to_string());
    // Verify: copy the mapped device bytes back and compare with what was published.
    auto host = HostBuffer::allocate(layout->total_bytes());
    auto want = HostBuffer::allocate(layout->total_bytes());
    if (!host.ok() || !want.ok()) return fail("cuda_ipc", "child: host allocation");
    fill(want->span(), std::stoull(args.at("--seed")));
    Status back = (*staging)->to_host(host->data(), (*mapped)->data(), host->size());
    const bool ok = back.ok() && std::memcmp(host->data(), want->data(), host->size()) == 0;
    std::cout << json{{"open_seconds", open_s}, {"verified", ok}}.dump() << std::endl;
    return ok ? 0 : 1;
}

// The ucx_device case: a publisher whose device slots are registered with UCX (UCX's default
// transports, so its CUDA ones are there when it has them) and a reader getting them straight
// into `target`. Prints one line; 0 when verified or skipped.
int run_ucx_device(DeviceStaging& gpu, const Layout& layout, const void* src, uint64_t chunk,
                   int iterations, double memcpy_s, DeviceWeights& target) {
    const uint64_t bytes = layout.total_bytes();
    const double gb = static_cast<double>(bytes) / 1e9;
    PublisherOptions po;
    po.job = JobId(3);
    po.publisher_id = "bench/trainer-ucx-device";
    po.slots = 2;
    po.chunk_bytes = chunk;
    po.device_slots = true;
    auto context = ucx::Context::create(po.ucx);
    if (!context.ok()) return fail("ucx_device", context.status().to_string());
    if (!(*context)->supports_cuda_memory()) {
        std::cout << json{{"bench", "weights_gpu"},
                          {"path", "ucx_device"},
                          {"skipped", true},
                          {"ucx_cuda_memory", false},
                          {"reason",
                           "this UCX cannot register CUDA memory (ucp_context_query reports no "
                           "UCS_MEMORY_TYPE_CUDA): readers take pinned_host"}}
                         .dump()
                  << "\n";
        return 0;
    }
    VersionDirectory directory;
    auto publisher = Publisher::create(po, layout, directory);
    if (!publisher.ok()) return fail("ucx_device", publisher.status().to_string());
    ReaderOptions ro;
    ro.job = JobId(3);
    ro.reader_id = "bench/rollout-ucx-device";
    auto reader = Reader::create(ro, layout);
    if (!reader.ok()) return fail("ucx_device", reader.status().to_string());
    std::vector<double> pub, fetch;
    DeviceFetchStats last;
    for (int i = 0; i < iterations; ++i) {
        auto t0 = Clock::now();
        if (Status s = (*publisher)->publish_from_device(i + 1, src, gpu); !s.ok()) {
            return fail("ucx_device", s.to_string());
        }
        pub.push_back(since(t0));
        auto d = directory.newest(JobId(3));
        t0 = Clock::now();
        if (Status s = (*reader)->fetch_to_device(*d, gpu, target); !s.ok()) {
            return fail("ucx_device", s.to_string());
        }
        fetch.push_back(since(t0));
        last = (*reader)->last_device_fetch();
    }
    auto back = HostBuffer::allocate(bytes);
    auto want = HostBuffer::allocate(bytes);
    fill(want->span(), 1);
    const bool verified = gpu.to_host(back->data(), target.buffer.data(), bytes).ok() &&
                          std::memcmp(back->data(), want->data(), bytes) == 0;
    const double total = best(pub) + best(fetch);
    std::cout << json{{"bench", "weights_gpu"},
                      {"path", "ucx_device"},
                      {"path_used", device_weight_path_name(last.path)},
                      {"ucx_cuda_memory", true},
                      {"bytes", bytes},
                      {"chunk_bytes", chunk},
                      {"publish_seconds", best(pub)},  // includes the device slot copy
                      {"fetch_seconds", best(fetch)},
                      {"total_seconds", total},
                      {"gb_per_s", gb / total},
                      {"memcpy_d2h_h2d_seconds", memcpy_s},
                      {"ratio_to_memcpy", memcpy_s / total},
                      {"fetch_copies", last.copies},  // device -> host, to verify
                      {"verified", verified},
                      {"iterations", iterations}}
                     .dump()
              << "\n";
    return verified ? 0 : 1;
}

int run(const std::map<std::string, std::string>& args, const std::string& self) {
    auto get = [&](const std::string& k, const std::string& d) {
        auto it = args.find(k);
        return it == args.end() ? d : it->second;
    };
    const uint64_t want_bytes = parse_size(get("--bytes", "1G"));
    const uint64_t chunk = parse_size(get("--chunk-bytes", "4M"));
    const int iterations = std::stoi(get("--iterations", "3"));
    auto staging = DeviceStaging::create(0);
    if (!staging.ok()) {
        std::cout << json{{"bench", "weights_gpu"},
                          {"skipped", true},
                          {"reason", staging.status().message()}}
                         .dump()
                  << "\n";
        return 0;
    }
    DeviceStaging& gpu = **staging;
    const Layout layout = bench_layout(want_bytes);
    const uint64_t bytes = layout.total_bytes();
    const double gb = static_cast<double>(bytes) / 1e9;

    // Source version on the device, a pinned host buffer for the baseline.
    auto src = gpu.allocate(bytes);
    auto dst = gpu.allocate(bytes);
    auto host = HostBuffer::allocate(bytes, true);
    if (!src.ok() || !dst.ok() || !host.ok()) return fail("setup", "allocating buffers");
    fill(host->span(), 1);
    if (Status s = gpu.pin(host->data(), bytes); !s.ok()) return fail("setup", s.to_string());
    if (Status s = gpu.to_device(src->data(), host->data(), bytes); !s.ok()) {
        return fail("setup", s.to_string());
    }
    std::vector<double> d2h, h2d;
    for (int i = 0; i < iterations; ++i) {
        auto t0 = Clock::now();
        (void)gpu.to_host(host->data(), src->data(), bytes);
        d2h.push_back(since(t0));
        t0 = Clock::now();
        (void)gpu.to_device(dst->data(), host->data(), bytes);
        h2d.push_back(since(t0));
    }
    const double memcpy_s = best(d2h) + best(h2d);

    VersionDirectory directory;
    PublisherOptions po;
    po.job = JobId(1);
    po.publisher_id = "bench/trainer-0";
    po.slots = 2;
    po.chunk_bytes = chunk;
    po.ucx.transports = "shm,self";
    po.device_slots = false;  // the cuda_ipc case below has its own publisher
    auto publisher = Publisher::create(po, layout, directory);
    if (!publisher.ok()) return fail("pinned_host", publisher.status().to_string());
    ReaderOptions ro;
    ro.job = JobId(1);
    ro.reader_id = "bench/rollout-0";
    ro.ucx.transports = "shm,self";
    auto reader = Reader::create(ro, layout);
    if (!reader.ok()) return fail("pinned_host", reader.status().to_string());
    DeviceWeights target;
    target.buffer = std::move(*dst);

    std::vector<double> pub, fetch;
    DeviceFetchStats last;
    Version v = 0;
    bool verified = true;
    for (int i = 0; i < iterations; ++i) {
        ++v;
        auto t0 = Clock::now();
        if (Status s = (*publisher)->publish_from_device(v, src->data(), gpu); !s.ok()) {
            return fail("pinned_host", s.to_string());
        }
        pub.push_back(since(t0));
        auto d = directory.newest(JobId(1));
        t0 = Clock::now();
        if (Status s = (*reader)->fetch_to_device(*d, gpu, target); !s.ok()) {
            return fail("pinned_host", s.to_string());
        }
        fetch.push_back(since(t0));
        last = (*reader)->last_device_fetch();
    }
    {
        auto back = HostBuffer::allocate(bytes);
        auto want = HostBuffer::allocate(bytes);
        fill(want->span(), 1);
        verified = gpu.to_host(back->data(), target.buffer.data(), bytes).ok() &&
                   std::memcmp(back->data(), want->data(), bytes) == 0;
    }
    const double total = best(pub) + best(fetch);
    std::cout << json{{"bench", "weights_gpu"},
                      {"path", "pinned_host"},
                      {"path_used", device_weight_path_name(last.path)},
                      {"bytes", bytes},
                      {"chunk_bytes", chunk},
                      {"publish_seconds", best(pub)},
                      {"fetch_seconds", best(fetch)},
                      {"total_seconds", total},
                      {"gb_per_s", gb / total},
                      {"memcpy_d2h_h2d_seconds", memcpy_s},
                      {"memcpy_gb_per_s", gb / memcpy_s},
                      {"ratio_to_memcpy", memcpy_s / total},
                      {"fetch_copies", last.copies},
                      {"fetch_overlapped_fraction",
                       last.bytes ? static_cast<double>(last.overlapped_bytes) / last.bytes : 0.0},
                      {"verified", verified},
                      {"iterations", iterations}}
                     .dump()
              << "\n";

    reader->reset();
    publisher->reset();
    if (run_ucx_device(gpu, layout, src->data(), chunk, iterations, memcpy_s, target) != 0) {
        verified = false;
    }
    if (args.count("--no-ipc") != 0) return verified ? 0 : 1;
    // CUDA IPC: a publisher with device slots; a second process on this node opens the slot.
    po.device_slots = true;
    po.job = JobId(2);
    auto ipc_publisher = Publisher::create(po, layout, directory);
    if (!ipc_publisher.ok()) return fail("cuda_ipc", ipc_publisher.status().to_string());
    std::vector<double> ipc_pub;
    for (int i = 0; i < iterations; ++i) {
        const auto t0 = Clock::now();
        if (Status s = (*ipc_publisher)->publish_from_device(i + 1, src->data(), gpu); !s.ok()) {
            return fail("cuda_ipc", s.to_string());
        }
        ipc_pub.push_back(since(t0));
    }
    auto d = directory.newest(JobId(2));
    if (!d || d->shards[0].cuda_ipc_handle.empty()) {
        return fail("cuda_ipc", "the publisher announced no device slot (see its log)");
    }
    const std::string file = fmt::format("/tmp/tandem-bench-weights-gpu-{}.json", getpid());
    {
        std::ofstream out(file);
        out << json{{"descriptor", to_json(*d)}, {"layout", layout.to_json()}}.dump();
    }
    const auto t0 = Clock::now();
    const std::string cmd =
        fmt::format("'{}' --role ipc-reader --descriptor '{}' --seed 1", self, file);
    FILE* child = popen(cmd.c_str(), "r");
    if (child == nullptr) return fail("cuda_ipc", "cannot start the reader process");
    std::string line;  // the child's JSON line (logs go to stderr)
    char buf[4096];
    while (fgets(buf, sizeof buf, child) != nullptr) {
        if (buf[0] == '{') line = buf;
    }
    const int rc = pclose(child);
    const double child_s = since(t0);
    std::remove(file.c_str());
    json r = json::parse(line.substr(0, line.find('\n')), nullptr, false);
    if (rc != 0 || r.is_discarded() || !r.contains("open_seconds")) {
        return fail("cuda_ipc", fmt::format("reader process exited {}: {}", rc, line));
    }
    std::cout << json{{"bench", "weights_gpu"},
                      {"path", "cuda_ipc"},
                      {"bytes", bytes},
                      {"publish_seconds", best(ipc_pub)},  // includes the device slot copy
                      {"open_seconds", r["open_seconds"]},
                      {"switch_gb_per_s", gb / r["open_seconds"].get<double>()},
                      {"reader_process_seconds", child_s},
                      {"memcpy_d2h_h2d_seconds", memcpy_s},
                      {"verified", r["verified"]}}
                     .dump()
              << "\n";
    return r["verified"].get<bool>() ? 0 : 1;
}

}  // namespace
}  // namespace tandem::weights

int main(int argc, char** argv) {
    std::map<std::string, std::string> args;
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        if (k.rfind("--", 0) != 0) continue;
        args[k] = (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) ? argv[++i] : "";
    }
    try {
        if (args["--role"] == "ipc-reader") return tandem::weights::ipc_reader(args);
        args.erase("--role");
        return tandem::weights::run(args, std::filesystem::read_symlink("/proc/self/exe"));
    } catch (const std::exception& e) {
        std::cout << nlohmann::json{{"bench", "weights_gpu"}, {"error", e.what()}}.dump() << "\n";
        return 1;
    }
}
