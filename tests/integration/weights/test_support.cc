#include "tests/integration/weights/test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

extern char** environ;

namespace tandem::weights::testing {

namespace {

uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t word_at(uint64_t seed, Version version, uint64_t index) {
    return splitmix(seed * 0x100000001b3ull ^ (version << 40) ^ index);
}

std::string file_name(JobId job, Version version, uint32_t shard) {
    return fmt::format("{}-v{:012}-s{:03}.json", job.str(), version, shard);
}

}  // namespace

Layout random_layout(uint64_t seed, uint64_t target_bytes) {
    std::mt19937_64 rng(seed);
    const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3,
                            DType::kI8,  DType::kI32,  DType::kI64};
    std::vector<TensorSpec> specs;
    uint64_t total = 0;
    for (int i = 0; total < target_bytes || i < 4; ++i) {
        const DType d = dtypes[rng() % 7];
        std::vector<int64_t> shape;
        const uint64_t budget = std::max<uint64_t>(target_bytes / 6, 64);
        const uint64_t elems = 1 + rng() % std::max<uint64_t>(budget / dtype_size(d), 1);
        if (i % 3 != 2) {
            const int64_t cols = static_cast<int64_t>(1 + rng() % 512);
            const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(elems) / cols);
            shape = {rows, cols};
        } else {
            shape = {static_cast<int64_t>(elems)};
        }
        const std::string name = fmt::format("model.layers.{}.w{}", i / 3, i % 3);
        specs.push_back({name, d, shape});
        uint64_t bytes = dtype_size(d);
        for (int64_t s : shape) bytes *= static_cast<uint64_t>(s);
        total += bytes;
    }
    return *Layout::create(std::move(specs));
}

void fill_version(std::span<std::byte> out, uint64_t seed, Version version) {
    const size_t words = out.size() / 8;
    auto* w = reinterpret_cast<uint64_t*>(out.data());
    for (size_t i = 0; i < words; ++i) w[i] = word_at(seed, version, i);
    for (size_t i = words * 8; i < out.size(); ++i) {
        out[i] = std::byte(word_at(seed, version, i / 8) >> (8 * (i % 8)));
    }
}

std::optional<size_t> first_mismatch(std::span<const std::byte> bytes, uint64_t seed,
                                     Version version, uint64_t offset) {
    for (size_t i = 0; i < bytes.size(); ++i) {
        const uint64_t g = offset + i;
        const auto expected = std::byte(word_at(seed, version, g / 8) >> (8 * (g % 8)));
        if (bytes[i] != expected) return i;
    }
    return std::nullopt;
}

Status write_file_atomically(const std::string& dir, const std::string& name,
                             const std::string& text) {
    const std::string tmp = fmt::format("{}/.{}.tmp{}", dir, name, static_cast<long>(getpid()));
    {
        std::ofstream out(tmp);
        out << text;
        if (!out) return unavailable("writing " + tmp);
    }
    if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) {
        return unavailable(fmt::format("renaming {}: {}", tmp, std::strerror(errno)));
    }
    return Status();
}

Status FileAnnouncer::announce(const VersionDescriptor& shard_version) {
    const auto& shard = shard_version.shards.at(0);
    return write_file_atomically(dir_,
                                 file_name(shard_version.job, shard_version.version, shard.index),
                                 to_json(shard_version).dump());
}

void FileAnnouncer::retire(JobId job, Version version, uint32_t shard) {
    std::filesystem::remove(dir_ + "/" + file_name(job, version, shard));
}

std::optional<VersionDescriptor> load_version(const std::string& dir, JobId job, Version version) {
    std::optional<VersionDescriptor> merged;
    for (uint32_t s = 0;; ++s) {
        std::ifstream in(dir + "/" + file_name(job, version, s));
        if (!in) break;
        nlohmann::json j;
        try {
            in >> j;
        } catch (...) {
            return std::nullopt;
        }
        auto d = descriptor_from_json(j);
        if (!d.ok()) return std::nullopt;
        if (!merged) {
            merged = *d;
        } else {
            merged->shards.push_back(d->shards.at(0));
        }
        if (merged->shards.size() == merged->shard_count) break;
    }
    if (!merged || !merged->complete()) return std::nullopt;
    return merged;
}

std::optional<VersionDescriptor> newest_version(const std::string& dir, JobId job) {
    std::vector<Version> versions;
    const std::string prefix = job.str() + "-v";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        if (name.rfind(prefix, 0) != 0) continue;
        versions.push_back(std::stoull(name.substr(prefix.size(), 12)));
    }
    std::sort(versions.rbegin(), versions.rend());
    for (Version v : versions) {
        if (auto d = load_version(dir, job, v)) return d;
    }
    return std::nullopt;
}

bool wait_for_directory(const std::string& dir, std::chrono::milliseconds timeout,
                        const std::function<bool()>& predicate) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd >= 0) inotify_add_watch(fd, dir.c_str(), IN_MOVED_TO | IN_CREATE | IN_DELETE);
    bool ok = false;
    for (;;) {
        if (predicate()) {
            ok = true;
            break;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd, POLLIN, 0};
        // Woken by directory changes; the cap re-checks the predicate if inotify is missing.
        ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
        char buf[4096];
        while (fd >= 0 && ::read(fd, buf, sizeof(buf)) > 0) {
        }
    }
    if (fd >= 0) ::close(fd);
    return ok;
}

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv) {
    int out[2];
    int in[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(in, O_CLOEXEC) != 0) {
        return unavailable(fmt::format("pipe: {}", std::strerror(errno)));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(in[0]);
    if (rc != 0) {
        ::close(out[0]);
        ::close(in[1]);
        return unavailable(fmt::format("spawning {}: {}", argv[0], std::strerror(rc)));
    }
    ChildProcess p;
    p.pid_ = pid;
    p.out_fd_ = out[0];
    p.in_fd_ = in[1];
    p.pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    return p;
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      pidfd_(std::exchange(o.pidfd_, -1)),
      out_fd_(std::exchange(o.out_fd_, -1)),
      in_fd_(std::exchange(o.in_fd_, -1)),
      buffer_(std::move(o.buffer_)),
      exited_(o.exited_) {}

ChildProcess::~ChildProcess() {
    if (pid_ > 0 && !exited_) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    if (pidfd_ >= 0) ::close(pidfd_);
    if (out_fd_ >= 0) ::close(out_fd_);
    if (in_fd_ >= 0) ::close(in_fd_);
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto nl = buffer_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return line;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        pollfd p{out_fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char buf[4096];
        const ssize_t n = ::read(out_fd_, buf, sizeof(buf));
        if (n <= 0) return std::nullopt;
        buffer_.append(buf, static_cast<size_t>(n));
    }
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
    if (exited_) return 0;
    pollfd p{pidfd_, POLLIN, 0};
    if (pidfd_ >= 0 && ::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return std::nullopt;
    exited_ = true;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

void ChildProcess::kill(int signal) {
    if (pid_ > 0 && !exited_) ::kill(pid_, signal);
}

bool ChildProcess::write_line(const std::string& line) {
    if (in_fd_ < 0) return false;
    ::signal(SIGPIPE, SIG_IGN);  // a dead child must fail the write, not kill the test
    const std::string text = line + "\n";
    return ::write(in_fd_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

void ChildProcess::close_stdin() {
    if (in_fd_ >= 0) ::close(in_fd_);
    in_fd_ = -1;
}

TempDir::TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-weights-XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
}

TempDir::~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

}  // namespace tandem::weights::testing
