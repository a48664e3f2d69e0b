#include "coordinator/state_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fmt/format.h>

namespace tandem::coord {

Result<StateLock> StateLock::acquire(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return unavailable(fmt::format("cannot create {}: {}", dir, ec.message()));
    const std::string path = dir + "/coordinator.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return unavailable(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        char buf[32] = {};
        const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
        ::close(fd);
        std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
        while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
            holder.pop_back();
        if (err == EWOULDBLOCK) {
            return already_exists(fmt::format(
                "another coordinator (pid {}) holds {}: one coordinator per state directory",
                holder.empty() ? "unknown" : holder, path));
        }
        return unavailable(fmt::format("cannot lock {}: {}", path, std::strerror(err)));
    }
    const std::string pid = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
        const int err = errno;
        ::close(fd);
        return unavailable(fmt::format("cannot write {}: {}", path, std::strerror(err)));
    }
    return StateLock(path, fd);
}

StateLock::StateLock(StateLock&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

StateLock::~StateLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace tandem::coord
