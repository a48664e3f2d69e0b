#pragma once

#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem::weights {

// Checksums chunks piece by piece, in submission order, on one helper thread, so that the loop
// thread can copy the next piece (a shared-memory get is a CPU copy) while the last one is hashed
// on the other core. With `threaded` false it hashes inline in submit().
// submit() and drain() are called from one thread (the reader's loop); the helper only hashes.
// The helper spins for `spin` before it sleeps: during a fetch pieces arrive every few
// microseconds, and waking a sleeping thread for each one costs the loop a futex call and the
// pipeline tens of microseconds in a VM (measured: 256 wake-ups per 64 MiB were a fifth of a
// shared-memory pull). submit() only signals a helper that is asleep.
class PieceHasher {
public:
    struct Digest {
        uint64_t tag = 0;
        uint64_t value = 0;
    };
    using State = std::shared_ptr<XXH3_state_t>;

    explicit PieceHasher(bool threaded,
                         std::chrono::microseconds spin = std::chrono::microseconds(200));
    PieceHasher(const PieceHasher&) = delete;
    PieceHasher& operator=(const PieceHasher&) = delete;
    // Finishes the submitted work, then joins the helper.
    ~PieceHasher();

    static State new_state();
    // Adds [data, data + length) to `state`; with `last`, the chunk's digest comes out of drain()
    // under `tag`. The bytes must stay valid until then.
    void submit(const State& state, uint64_t tag, const std::byte* data, size_t length, bool last);
    std::vector<Digest> drain();
    // Blocks until every submitted piece is hashed, then drains.
    std::vector<Digest> finish();
    // Submitted pieces not hashed yet (for the caller's "busy" and lifetime decisions).
    size_t pending() const { return pending_; }

private:
    struct Job {
        State state;
        uint64_t tag = 0;
        const std::byte* data = nullptr;
        size_t length = 0;
        bool last = false;
    };
    void run();
    static void hash(const Job& job, std::vector<Digest>& out);

    std::mutex mu_;
    std::condition_variable work_;
    std::condition_variable hashed_some_;
    std::deque<Job> jobs_;         // guarded by mu_
    std::vector<Digest> digests_;  // guarded by mu_
    size_t hashed_ = 0;            // guarded by mu_: pieces hashed since the last drain
    bool stopping_ = false;        // guarded by mu_
    bool sleeping_ = false;        // guarded by mu_: the helper waits on work_
    // Pieces submitted so far. The helper reads it while spinning as a hint only (relaxed: it
    // takes the job under mu_, which orders the job's fields).
    std::atomic<uint64_t> submitted_{0};
    const std::chrono::microseconds spin_;
    size_t pending_ = 0;  // caller thread only
    std::thread thread_;
};

}  // namespace tandem::weights
