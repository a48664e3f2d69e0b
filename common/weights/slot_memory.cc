#include "common/weights/slot_memory.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>

namespace tandem::weights {

namespace {

// The mapping of /proc/self/maps that contains `address`: its inode and path.
struct MappingInfo {
    unsigned long inode = 0;
    std::string path;
};

std::optional<MappingInfo> find_mapping(const void* address) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    const auto a = reinterpret_cast<uintptr_t>(address);
    while (std::getline(maps, line)) {
        std::istringstream in(line);
        std::string range, perms, offset, dev;
        MappingInfo info;
        in >> range >> perms >> offset >> dev >> info.inode;
        std::getline(in, info.path);
        const auto dash = range.find('-');
        const uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
        const uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
        if (a < lo || a >= hi) continue;
        info.path.erase(0, info.path.find_first_not_of(' '));
        return info;
    }
    return std::nullopt;
}

// An open file descriptor of this process whose file has `inode` (UCX's posix segments keep one).
std::optional<int> find_fd_with_inode(unsigned long inode) {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return std::nullopt;
    std::optional<int> found;
    while (dirent* e = readdir(dir)) {
        if (e->d_name[0] == '.') continue;
        const int fd = std::atoi(e->d_name);
        struct stat st {};
        if (fstat(fd, &st) == 0 && st.st_ino == inode && S_ISREG(st.st_mode)) {
            found = fd;
            break;
        }
    }
    closedir(dir);
    return found;
}

void touch_pages(std::byte* data, size_t size) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    for (size_t off = 0; off < size; off += page) data[off] = std::byte{0};
}

}  // namespace

std::string_view backing_name(SlotMemory::Backing backing) {
    switch (backing) {
        case SlotMemory::Backing::kUcxPosix:
            return "ucx-posix";
        case SlotMemory::Backing::kUcxSysv:
            return "ucx-sysv";
        case SlotMemory::Backing::kMemfd:
            return "memfd";
    }
    return "memfd";
}

Result<std::unique_ptr<SlotMemory>> SlotMemory::create(std::shared_ptr<ucx::Context> context,
                                                       size_t bytes, const std::string& name) {
    std::unique_ptr<SlotMemory> m(new SlotMemory());
    auto allocated = ucx::MemoryRegion::allocate(context, bytes);
    if (allocated.ok()) {
        const auto info = find_mapping((*allocated)->data());
        if (info && info->path.rfind("/SYSV", 0) == 0) {
            m->backing_ = Backing::kUcxSysv;
            m->share_path_ = fmt::format("sysv:{}", info->inode);
        } else if (info && !info->path.empty() && info->path[0] == '/') {
            if (auto fd = find_fd_with_inode(info->inode)) {
                m->backing_ = Backing::kUcxPosix;
                m->share_path_ = fmt::format("/proc/{}/fd/{}", static_cast<long>(getpid()), *fd);
            }
        }
        if (!m->share_path_.empty()) {
            m->registration_ = std::move(*allocated);
            m->data_ = m->registration_->data();
            m->size_ = bytes;
            touch_pages(m->data_, m->size_);
            return m;
        }
        // Private memory (no shared-memory transport in this context): use a memfd instead.
    }
    const int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd < 0) return unavailable(fmt::format("memfd_create {}: {}", name, std::strerror(errno)));
    m->memfd_ = fd;
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        return unavailable(
            fmt::format("sizing {} to {} bytes: {}", name, bytes, std::strerror(errno)));
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
        return unavailable(fmt::format("mapping {}: {}", name, std::strerror(errno)));
    }
    m->data_ = static_cast<std::byte*>(p);
    m->size_ = bytes;
    m->backing_ = Backing::kMemfd;
    m->share_path_ = fmt::format("/proc/{}/fd/{}", static_cast<long>(getpid()), fd);
    TANDEM_ASSIGN_OR_RETURN(m->registration_,
                            ucx::MemoryRegion::register_memory(std::move(context), p, bytes));
    return m;
}

SlotMemory::~SlotMemory() {
    registration_.reset();  // unregisters (or frees UCX's allocation) first
    if (memfd_ >= 0) {
        if (data_ != nullptr) munmap(data_, size_);
        close(memfd_);
    }
}

}  // namespace tandem::weights
