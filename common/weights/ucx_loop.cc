#include "common/weights/ucx_loop.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>

#include <fmt/format.h>

namespace tandem::weights {

Result<std::unique_ptr<UcxLoop>> UcxLoop::start(std::shared_ptr<ucx::Context> context,
                                                Options options) {
    TANDEM_ASSIGN_OR_RETURN(auto worker, ucx::Worker::create(std::move(context), options.name));
    const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return unavailable(fmt::format("eventfd: {}", std::strerror(errno)));
    std::unique_ptr<UcxLoop> loop(new UcxLoop(std::move(worker), std::move(options), efd));
    loop->thread_ = std::thread([l = loop.get()] { l->run(); });
    return loop;
}

UcxLoop::~UcxLoop() {
    // Relaxed would do for the flag itself; release keeps tasks posted before it visible.
    stopping_.store(true, std::memory_order_release);
    wake();
    if (thread_.joinable()) thread_.join();
    // Pollers and tasks may hold UCX objects: drop them while the worker still exists.
    pollers_.clear();
    tasks_.clear();
    close(event_fd_);
}

void UcxLoop::post(std::function<void()> task) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        tasks_.push_back(std::move(task));
    }
    wake();
}

void UcxLoop::wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof(one));
}

uint64_t UcxLoop::add_poller(Poller poller) {
    const uint64_t id = next_poller_++;
    pollers_.emplace(id, std::move(poller));
    return id;
}

void UcxLoop::remove_poller(uint64_t id) { pollers_.erase(id); }

void UcxLoop::run() {
    std::vector<std::function<void()>> batch;
    std::optional<std::chrono::steady_clock::time_point> stalled_since;  // busy, no progress
    // Acquire: pairs with the release store in the destructor.
    while (!stopping_.load(std::memory_order_acquire)) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            batch.swap(tasks_);
        }
        for (auto& task : batch) task();
        const bool had_tasks = !batch.empty();
        batch.clear();

        unsigned progressed = 0;
        for (int i = 0; i < 64; ++i) {
            const unsigned n = worker_->progress();
            progressed += n;
            if (n == 0) break;
        }
        bool busy = false;
        // A poller may remove itself (or others) while running: iterate over a snapshot of ids.
        std::vector<uint64_t> ids;
        ids.reserve(pollers_.size());
        for (const auto& [id, p] : pollers_) ids.push_back(id);
        for (uint64_t id : ids) {
            auto it = pollers_.find(id);
            if (it != pollers_.end() && it->second()) busy = true;
        }
        if (progressed > 0 || had_tasks) {
            stalled_since.reset();
            continue;
        }
        if (busy) {
            // In flight but nothing moved: spin a little (a reply may be microseconds away),
            // then sleep on the wakeup fds like an idle loop, but briefly, since a poller may
            // wait for something that does not signal them (a checksum thread).
            const auto now = std::chrono::steady_clock::now();
            if (!stalled_since) stalled_since = now;
            if (now - *stalled_since < options_.spin_us) continue;
        }
        if (!worker_->arm()) continue;  // events arrived while we were looking
        pollfd fds[2] = {{worker_->event_fd(), POLLIN, 0}, {event_fd_, POLLIN, 0}};
        const auto wait =
            busy ? std::chrono::duration_cast<std::chrono::nanoseconds>(options_.busy_wait_us)
                 : std::chrono::duration_cast<std::chrono::nanoseconds>(options_.idle_wait_ms);
        const timespec timeout = {static_cast<time_t>(wait.count() / 1'000'000'000),
                                  static_cast<long>(wait.count() % 1'000'000'000)};
        const int n = ::ppoll(fds, 2, &timeout, nullptr);
        stalled_since.reset();
        if (n > 0 && (fds[1].revents & POLLIN)) {
            uint64_t value = 0;
            [[maybe_unused]] ssize_t r = read(event_fd_, &value, sizeof(value));
        }
    }
    // Run what was posted before the stop so call() never waits forever.
    {
        std::lock_guard<std::mutex> lock(mu_);
        batch.swap(tasks_);
    }
    for (auto& task : batch) task();
}

}  // namespace tandem::weights
