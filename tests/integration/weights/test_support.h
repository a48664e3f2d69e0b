#pragma once

// Shared by the weight-plane integration tests and their helper program: deterministic layouts
// and contents, a file-backed version directory (the stand-in for the coordinator across
// processes), and child processes with deadlines.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "common/weights/descriptor.h"
#include "common/weights/layout.h"

namespace tandem::weights::testing {

// A layout of mixed-dtype tensors (some 2-D) of about `target_bytes`, the same for equal seeds.
Layout random_layout(uint64_t seed, uint64_t target_bytes);
// The bytes of `version`: a pseudo-random stream keyed by (seed, version).
void fill_version(std::span<std::byte> out, uint64_t seed, Version version);
// The index of the first byte that differs from fill_version(seed, version), or nullopt.
std::optional<size_t> first_mismatch(std::span<const std::byte> bytes, uint64_t seed,
                                     Version version, uint64_t offset = 0);

// Announces by writing one JSON file per shard into a directory (atomically, via rename), and
// retires by removing it. Thread-safe.
class FileAnnouncer final : public Announcer {
public:
    explicit FileAnnouncer(std::string dir) : dir_(std::move(dir)) {}
    Status announce(const VersionDescriptor& shard_version) override;
    void retire(JobId job, Version version, uint32_t shard) override;

private:
    std::string dir_;
};

// The complete version `version` of `job` found in `dir`, if all its shards are there.
std::optional<VersionDescriptor> load_version(const std::string& dir, JobId job, Version version);
// The newest complete version in `dir`.
std::optional<VersionDescriptor> newest_version(const std::string& dir, JobId job);
// Blocks (on inotify, with a deadline) until `predicate` holds for the directory.
bool wait_for_directory(const std::string& dir, std::chrono::milliseconds timeout,
                        const std::function<bool()>& predicate);
// Writes `text` to dir/name atomically.
Status write_file_atomically(const std::string& dir, const std::string& name,
                             const std::string& text);

// A child process with its stdout piped back; killed (SIGKILL) if still running at destruction.
class ChildProcess {
public:
    static Result<ChildProcess> spawn(const std::vector<std::string>& argv);
    ChildProcess(ChildProcess&& other) noexcept;
    ChildProcess& operator=(ChildProcess&&) = delete;
    ChildProcess(const ChildProcess&) = delete;
    ~ChildProcess();

    pid_t pid() const { return pid_; }
    // The next line of stdout, waiting at most `timeout`; nullopt on timeout or EOF.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout);
    // Waits for the process to exit (pidfd + poll); its exit status, or nullopt on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout);
    void kill(int signal);
    // Writes a line to the child's stdin.
    bool write_line(const std::string& line);
    // Closes the child's stdin (helpers that serve until EOF then exit).
    void close_stdin();

private:
    ChildProcess() = default;
    pid_t pid_ = -1;
    int pidfd_ = -1;
    int out_fd_ = -1;
    int in_fd_ = -1;
    std::string buffer_;
    bool exited_ = false;
};

// A fresh directory under the test temp dir, removed with its content at destruction.
class TempDir {
public:
    TempDir();
    ~TempDir();
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace tandem::weights::testing
