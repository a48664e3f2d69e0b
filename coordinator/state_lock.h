#pragma once

// StateLock: one coordinator per state directory. Holds an exclusive flock(2) on
// DIR/coordinator.lock (which also records the holder's pid) for its lifetime; the kernel drops it
// when the process dies, so a crashed coordinator never leaves a stale lock. Not copyable; movable.

#include <string>

#include "common/status.h"

namespace tandem::coord {

class StateLock {
public:
    // Takes the lock, or fails with already_exists naming the holder's pid ("held by pid 1234").
    static Result<StateLock> acquire(const std::string& dir);

    StateLock(StateLock&& other) noexcept;
    StateLock& operator=(StateLock&&) = delete;
    StateLock(const StateLock&) = delete;
    ~StateLock();

    const std::string& path() const { return path_; }

private:
    StateLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
    std::string path_;
    int fd_ = -1;
};

}  // namespace tandem::coord
