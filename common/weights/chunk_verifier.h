#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem::weights {

// Checksums fetched chunks on helper threads so the loop thread can keep transfers going while
// they are verified (a shared-memory get is a CPU copy; hashing on the same core halves the rate).
// submit() and drain() are called from one thread (the reader's loop); the helpers only hash.
class ChunkVerifier {
public:
    struct Job {
        uint64_t tag = 0;  // the caller's key for the chunk
        const std::byte* data = nullptr;
        size_t length = 0;
        uint64_t expected = 0;
    };
    struct Outcome {
        uint64_t tag = 0;
        bool ok = false;
        uint64_t actual = 0;
    };

    // threads == 0 verifies inline in submit().
    explicit ChunkVerifier(uint32_t threads);
    ChunkVerifier(const ChunkVerifier&) = delete;
    ChunkVerifier& operator=(const ChunkVerifier&) = delete;
    // Joins the helpers after they finish the jobs they hold.
    ~ChunkVerifier();

    void submit(const Job& job);
    // Outcomes finished since the last call.
    std::vector<Outcome> drain();
    // Jobs submitted and not drained yet.
    size_t outstanding() const { return outstanding_; }
    // Drops outcomes of `tag`s the caller no longer cares about when they arrive.
    void forget_all() { forget_before_ = next_epoch_++; }

private:
    void run();

    std::mutex mu_;
    std::condition_variable work_;
    std::deque<std::pair<uint64_t, Job>> jobs_;       // guarded by mu_; (epoch, job)
    std::vector<std::pair<uint64_t, Outcome>> done_;  // guarded by mu_
    bool stopping_ = false;                           // guarded by mu_
    std::vector<std::thread> threads_;
    size_t outstanding_ = 0;  // caller thread only
    uint64_t next_epoch_ = 1;
    uint64_t forget_before_ = 0;
};

}  // namespace tandem::weights
