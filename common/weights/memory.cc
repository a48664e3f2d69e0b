#include "common/weights/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>

#include <fmt/format.h>

namespace tandem::weights {

namespace {

size_t page_round(size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return (bytes + page - 1) / page * page;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

Result<HostBuffer> HostBuffer::allocate(size_t bytes, bool populate) {
    HostBuffer buffer;
    if (bytes == 0) return buffer;
    const size_t mapped = page_round(bytes);
    void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
    if (p == MAP_FAILED) {
        return unavailable(fmt::format("allocating {} bytes: {}", bytes, errno_text()));
    }
    buffer.data_ = static_cast<std::byte*>(p);
    buffer.size_ = bytes;
    buffer.mapped_ = mapped;
    return buffer;
}

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
    if (this != &other) {
        if (data_ != nullptr) munmap(data_, mapped_);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        mapped_ = std::exchange(other.mapped_, 0);
    }
    return *this;
}

HostBuffer::~HostBuffer() {
    if (data_ != nullptr) munmap(data_, mapped_);
}

Result<ReadOnlyMapping> ReadOnlyMapping::open(const std::string& path) {
    if (path.rfind("sysv:", 0) == 0) {
        // A System V segment (UCX's sysv allocator): attach it read-only.
        const int id = std::atoi(path.c_str() + 5);
        struct shmid_ds ds {};
        if (shmctl(id, IPC_STAT, &ds) != 0) {
            return unavailable(fmt::format("shared segment {}: {}", path, errno_text()));
        }
        void* p = shmat(id, nullptr, SHM_RDONLY);
        if (p == reinterpret_cast<void*>(-1)) {
            return unavailable(fmt::format("attaching {} read-only: {}", path, errno_text()));
        }
        ReadOnlyMapping m;
        m.data_ = static_cast<const std::byte*>(p);
        m.size_ = ds.shm_segsz;
        m.sysv_ = true;
        return m;
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return unavailable(fmt::format("opening shared region {}: {}", path, errno_text()));
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        Status s = unavailable(fmt::format("shared region {} has no size", path));
        ::close(fd);
        return s;
    }
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);  // the mapping keeps the region alive
    if (p == MAP_FAILED) {
        return unavailable(fmt::format("mapping {} read-only: {}", path, errno_text()));
    }
    ReadOnlyMapping m;
    m.data_ = static_cast<const std::byte*>(p);
    m.size_ = static_cast<size_t>(st.st_size);
    return m;
}

ReadOnlyMapping::ReadOnlyMapping(ReadOnlyMapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      sysv_(other.sysv_) {}

ReadOnlyMapping& ReadOnlyMapping::operator=(ReadOnlyMapping&& other) noexcept {
    if (this != &other) {
        release();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        sysv_ = other.sysv_;
    }
    return *this;
}

ReadOnlyMapping::~ReadOnlyMapping() { release(); }

void ReadOnlyMapping::release() {
    if (data_ == nullptr) return;
    if (sysv_) {
        shmdt(data_);
    } else {
        munmap(const_cast<std::byte*>(data_), size_);
    }
    data_ = nullptr;
}

const std::string& host_identity() {
    static const std::string identity = [] {
        std::string boot_id;
        std::ifstream in("/proc/sys/kernel/random/boot_id");
        std::getline(in, boot_id);
        char host[256] = {};
        gethostname(host, sizeof(host) - 1);
        return fmt::format("{}/{}", host, boot_id);
    }();
    return identity;
}

}  // namespace tandem::weights
