#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/status.h"
#include "common/weights/ucx.h"

namespace tandem::weights {

// One thread that owns a UCX worker: it runs tasks posted from other threads, progresses the
// worker, polls the pollers registered by its owner's state machines, and sleeps on the worker's
// wakeup fd when nothing is in flight (and briefly when what is in flight does not move).
// Everything that touches the worker runs on this thread. post() and call() are thread-safe; the
// rest is for the loop thread only.
class UcxLoop {
public:
    struct Options {
        std::string name = "weights";
        // Longest sleep when idle; pollers with timers are checked at least this often.
        std::chrono::milliseconds idle_wait_ms{10};
        // With operations in flight the loop spins while the worker makes progress; after
        // spin_us without any it sleeps on the wakeup fds (network events and post() wake it)
        // for at most busy_wait_us, so a process waiting on the network leaves the core to
        // others. On a box of 7 hosts on 2 cores (tandem-bench-cluster, docs/hosts.md) the relay
        // chain to 6 hosts took 1.90 s per version spinning all along, 0.77 s with 50 us of spin
        // and 1.18 s with 1 ms.
        std::chrono::microseconds spin_us{50};
        std::chrono::microseconds busy_wait_us{200};
    };

    static Result<std::unique_ptr<UcxLoop>> start(std::shared_ptr<ucx::Context> context,
                                                  Options options);
    UcxLoop(const UcxLoop&) = delete;
    UcxLoop& operator=(const UcxLoop&) = delete;
    // Stops and joins the thread. Owners release their UCX objects (with call()) before this.
    ~UcxLoop();

    // Runs `task` on the loop thread, in posting order.
    void post(std::function<void()> task);
    // Runs `fn` on the loop thread and returns its result; runs inline on the loop thread.
    template <typename F>
    auto call(F&& fn) -> std::invoke_result_t<F> {
        using R = std::invoke_result_t<F>;
        if (on_loop_thread()) return fn();
        std::packaged_task<R()> task(std::forward<F>(fn));
        auto future = task.get_future();
        post([&task] { task(); });
        return future.get();
    }

    bool on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }
    ucx::Worker& worker() { return *worker_; }
    const std::shared_ptr<ucx::Worker>& shared_worker() const { return worker_; }
    // The worker's address; immutable, readable from any thread.
    const std::vector<std::byte>& address() const { return worker_->address(); }

    // A poller returns true while it has operations in flight, which keeps the loop spinning
    // instead of sleeping. Loop thread only.
    using Poller = std::function<bool()>;
    uint64_t add_poller(Poller poller);
    void remove_poller(uint64_t id);

private:
    UcxLoop(std::shared_ptr<ucx::Worker> worker, Options options, int event_fd)
        : worker_(std::move(worker)), options_(std::move(options)), event_fd_(event_fd) {}
    void run();
    void wake();

    std::shared_ptr<ucx::Worker> worker_;
    const Options options_;
    const int event_fd_;
    std::mutex mu_;
    std::vector<std::function<void()>> tasks_;  // guarded by mu_
    std::atomic<bool> stopping_{false};
    std::map<uint64_t, Poller> pollers_;  // loop thread only
    uint64_t next_poller_ = 1;            // loop thread only
    std::thread thread_;
};

}  // namespace tandem::weights
