#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common/status.h"
#include "common/weights/ucx.h"

namespace tandem::weights {

// Registered memory behind a slot (a publisher's slot, a reader's buffer), shareable read-only
// with same-host processes through share_path(). Preferably allocated by UCX, which on
// shared-memory transports puts it in a segment that peers attach, so that their one-sided gets
// are plain copies; when UCX hands back private memory (TCP-only contexts), a memfd registered
// with UCX is used instead and gets are emulated by UCX (readers then pick active messages).
// Not copyable or movable; destroy it on the thread that owns the UCX context's worker, or after
// the worker is gone.
class SlotMemory {
public:
    enum class Backing { kUcxPosix, kUcxSysv, kMemfd };

    static Result<std::unique_ptr<SlotMemory>> create(std::shared_ptr<ucx::Context> context,
                                                      size_t bytes, const std::string& name);
    SlotMemory(const SlotMemory&) = delete;
    SlotMemory& operator=(const SlotMemory&) = delete;
    ~SlotMemory();

    std::byte* data() const { return data_; }
    size_t size() const { return size_; }
    const ucx::MemoryRegion& registration() const { return *registration_; }
    Backing backing() const { return backing_; }
    // What ReadOnlyMapping::open() takes in another process: "/proc/<pid>/fd/<n>" or
    // "sysv:<shmid>".
    const std::string& share_path() const { return share_path_; }

private:
    SlotMemory() = default;

    std::unique_ptr<ucx::MemoryRegion> registration_;
    int memfd_ = -1;  // kMemfd only
    std::byte* data_ = nullptr;
    size_t size_ = 0;
    Backing backing_ = Backing::kMemfd;
    std::string share_path_;
};

std::string_view backing_name(SlotMemory::Backing backing);

}  // namespace tandem::weights
