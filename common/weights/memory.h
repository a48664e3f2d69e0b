#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

namespace tandem::weights {

// Page-aligned anonymous memory, unmapped on destruction. Movable; not thread-safe.
class HostBuffer {
public:
    HostBuffer() = default;
    // `populate` faults every page in now so first use does not pay for it.
    static Result<HostBuffer> allocate(size_t bytes, bool populate = false);
    HostBuffer(HostBuffer&& other) noexcept;
    HostBuffer& operator=(HostBuffer&& other) noexcept;
    HostBuffer(const HostBuffer&) = delete;
    HostBuffer& operator=(const HostBuffer&) = delete;
    ~HostBuffer();

    std::byte* data() { return data_; }
    const std::byte* data() const { return data_; }
    size_t size() const { return size_; }
    std::span<std::byte> span() { return {data_, size_}; }
    std::span<const std::byte> span() const { return {data_, size_}; }

private:
    std::byte* data_ = nullptr;
    size_t size_ = 0;  // requested size
    size_t mapped_ = 0;
};

// A read-only (PROT_READ) shared mapping of another process's region. Movable; not thread-safe.
class ReadOnlyMapping {
public:
    ReadOnlyMapping() = default;
    // `path` is a file ("/proc/<pid>/fd/<n>", mapped with PROT_READ) or "sysv:<shmid>" (a System
    // V segment, attached with SHM_RDONLY).
    static Result<ReadOnlyMapping> open(const std::string& path);
    ReadOnlyMapping(ReadOnlyMapping&& other) noexcept;
    ReadOnlyMapping& operator=(ReadOnlyMapping&& other) noexcept;
    ReadOnlyMapping(const ReadOnlyMapping&) = delete;
    ReadOnlyMapping& operator=(const ReadOnlyMapping&) = delete;
    ~ReadOnlyMapping();

    const std::byte* data() const { return data_; }
    size_t size() const { return size_; }

private:
    void release();
    const std::byte* data_ = nullptr;
    size_t size_ = 0;
    bool sysv_ = false;
};

// Identifies this host for same-host decisions: the kernel boot id plus the hostname.
const std::string& host_identity();

}  // namespace tandem::weights
