#pragma once

// A DeviceStaging over host memory for CPU tests of the device pipelines (device_pipeline.h).
// "Device" memory is heap memory. Enqueued copies run only when wait() reaches them, as on a busy
// stream, so a pipeline that reuses or reads a buffer before waiting for its copy sees stale
// bytes. Every enqueue, completion and wait is recorded in order. Faults: the Nth copy (1-based)
// fails at enqueue or at completion. IPC handles encode the "device" address. Thread-safe
// (the uploader enqueues on one thread while a producer runs on another).

#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/weights/device_staging.h"

namespace tandem::weights::testing {

class FakeDeviceStaging final : public DeviceStaging {
public:
    enum class Op { kEnqueueToDevice, kEnqueueToHost, kComplete, kWait };
    struct Event {
        Op op;
        CopyTicket ticket = 0;
        const void* dst = nullptr;
        const void* src = nullptr;
        size_t bytes = 0;
    };

    explicit FakeDeviceStaging(int device = 0) : device_(device) {}

    int device() const override { return device_; }
    // kCuda by default, like a real device (UCX without CUDA cannot register it); kHost lets a
    // UCX without CUDA register and read the fake's memory, to run the ucx_device path on CPU.
    DeviceMemoryKind memory_kind() const override { return memory_kind_; }
    void set_memory_kind(DeviceMemoryKind kind) { memory_kind_ = kind; }

    Result<DeviceBuffer> allocate(size_t bytes) override {
        auto* p = new std::byte[bytes == 0 ? 1 : bytes]();
        std::lock_guard<std::mutex> lock(mu_);
        ++allocations_;
        return DeviceBuffer(p, bytes, device_,
                            [](void* d) { delete[] static_cast<std::byte*>(d); });
    }

    Status pin(void* host, size_t bytes) override {
        std::lock_guard<std::mutex> lock(mu_);
        pinned_[host] = bytes;
        return Status();
    }

    Result<CopyTicket> enqueue_to_device(void* dst, const void* src, size_t bytes) override {
        return enqueue(Op::kEnqueueToDevice, dst, src, bytes);
    }
    Result<CopyTicket> enqueue_to_host(void* dst, const void* src, size_t bytes) override {
        return enqueue(Op::kEnqueueToHost, dst, src, bytes);
    }

    Status wait(CopyTicket ticket) override {
        std::lock_guard<std::mutex> lock(mu_);
        events_.push_back({Op::kWait, ticket});
        Status first;
        while (!queue_.empty() && queue_.front().ticket <= ticket) {
            const Event e = queue_.front();
            queue_.pop_front();
            if (e.ticket == fail_complete_at_) {
                if (first.ok()) {
                    first = unavailable(
                        fmt::format("fake copy {} of {} bytes failed", e.ticket, e.bytes));
                }
                continue;
            }
            std::memcpy(const_cast<void*>(e.dst), e.src, e.bytes);
            events_.push_back({Op::kComplete, e.ticket, e.dst, e.src, e.bytes});
        }
        return first;
    }

    Status copy_on_device(void* dst, const void* src, size_t bytes) override {
        std::memcpy(dst, src, bytes);
        return Status();
    }

    Result<std::vector<std::byte>> export_handle(const void* base) override {
        std::vector<std::byte> h(kIpcHandleBytes);
        const auto a = reinterpret_cast<uintptr_t>(base);
        std::memcpy(h.data(), &a, sizeof(a));
        return h;
    }

    Result<DeviceBuffer> open_handle(std::span<const std::byte> handle, size_t bytes) override {
        if (handle.size() != kIpcHandleBytes) return invalid_argument("fake: bad handle size");
        uintptr_t a = 0;
        std::memcpy(&a, handle.data(), sizeof(a));
        std::lock_guard<std::mutex> lock(mu_);
        ++opened_;
        return DeviceBuffer(reinterpret_cast<void*>(a), bytes, device_, [this](void*) {
            std::lock_guard<std::mutex> l(mu_);
            ++closed_;
        });
    }

    // Copy number n (1-based, counting both directions) fails when enqueued / when completed.
    void fail_enqueue_at(CopyTicket n) { fail_enqueue_at_ = n; }
    void fail_complete_at(CopyTicket n) { fail_complete_at_ = n; }

    std::vector<Event> events() const {
        std::lock_guard<std::mutex> lock(mu_);
        return events_;
    }
    // Copies enqueued so far (the last ticket handed out, failed enqueues included).
    CopyTicket enqueued() const {
        std::lock_guard<std::mutex> lock(mu_);
        return next_ - 1;
    }
    size_t in_flight() const {
        std::lock_guard<std::mutex> lock(mu_);
        return queue_.size();
    }
    bool pinned(const void* host) const {
        std::lock_guard<std::mutex> lock(mu_);
        return pinned_.count(const_cast<void*>(host)) != 0;
    }
    int opened() const {
        std::lock_guard<std::mutex> lock(mu_);
        return opened_;
    }
    int closed() const {
        std::lock_guard<std::mutex> lock(mu_);
        return closed_;
    }

private:
    Result<CopyTicket> enqueue(Op op, void* dst, const void* src, size_t bytes) {
        std::lock_guard<std::mutex> lock(mu_);
        const CopyTicket t = next_++;
        if (t == fail_enqueue_at_) {
            return unavailable(fmt::format("fake enqueue of copy {} ({} bytes) failed", t, bytes));
        }
        const Event e{op, t, dst, src, bytes};
        queue_.push_back(e);
        events_.push_back(e);
        return t;
    }

    const int device_;
    DeviceMemoryKind memory_kind_ = DeviceMemoryKind::kCuda;  // set before use
    mutable std::mutex mu_;
    std::deque<Event> queue_;
    std::vector<Event> events_;
    std::map<void*, size_t> pinned_;
    CopyTicket next_ = 1;
    CopyTicket fail_enqueue_at_ = 0;
    CopyTicket fail_complete_at_ = 0;
    int allocations_ = 0;
    int opened_ = 0;
    int closed_ = 0;
};

}  // namespace tandem::weights::testing
