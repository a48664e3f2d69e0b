#include "common/weights/piece_hasher.h"

#include "common/weights/xxh3_fast.h"

namespace tandem::weights {

PieceHasher::PieceHasher(bool threaded, std::chrono::microseconds spin) : spin_(spin) {
    if (threaded) thread_ = std::thread([this] { run(); });
}

PieceHasher::~PieceHasher() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    work_.notify_all();
    if (thread_.joinable()) thread_.join();
}

PieceHasher::State PieceHasher::new_state() {
    State s(XXH3_createState(), &XXH3_freeState);
    XXH3_64bits_reset(s.get());
    return s;
}

void PieceHasher::hash(const Job& job, std::vector<Digest>& out) {
    xxh3_64_update(job.state.get(), job.data, job.length);
    if (job.last) out.push_back({job.tag, XXH3_64bits_digest(job.state.get())});
}

void PieceHasher::submit(const State& state, uint64_t tag, const std::byte* data, size_t length,
                         bool last) {
    ++pending_;
    Job job{state, tag, data, length, last};
    if (!thread_.joinable()) {
        std::lock_guard<std::mutex> lock(mu_);
        hash(job, digests_);
        ++hashed_;
        return;
    }
    bool wake = false;
    {
        std::lock_guard<std::mutex> lock(mu_);
        jobs_.push_back(std::move(job));
        wake = sleeping_;
    }
    submitted_.fetch_add(1, std::memory_order_relaxed);  // see submitted_
    if (wake) work_.notify_one();
}

std::vector<PieceHasher::Digest> PieceHasher::drain() {
    std::vector<Digest> out;
    std::lock_guard<std::mutex> lock(mu_);
    out.swap(digests_);
    pending_ -= hashed_;
    hashed_ = 0;
    return out;
}

std::vector<PieceHasher::Digest> PieceHasher::finish() {
    {
        std::unique_lock<std::mutex> lock(mu_);
        hashed_some_.wait(lock, [&] { return hashed_ >= pending_; });
    }
    return drain();
}

void PieceHasher::run() {
    std::vector<Digest> local;
    uint64_t taken = 0;
    for (;;) {
        Job job;
        {
            std::unique_lock<std::mutex> lock(mu_);
            if (jobs_.empty() && !stopping_ && spin_.count() > 0) {
                lock.unlock();
                const auto until = std::chrono::steady_clock::now() + spin_;
                while (submitted_.load(std::memory_order_relaxed) == taken &&
                       std::chrono::steady_clock::now() < until) {
#if defined(__x86_64__) || defined(__i386__)
                    __builtin_ia32_pause();
#endif
                }
                lock.lock();
            }
            if (jobs_.empty() && !stopping_) {
                sleeping_ = true;
                work_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
                sleeping_ = false;
            }
            if (jobs_.empty()) return;
            ++taken;
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        local.clear();
        hash(job, local);
        {
            std::lock_guard<std::mutex> lock(mu_);
            digests_.insert(digests_.end(), local.begin(), local.end());
            ++hashed_;
        }
        hashed_some_.notify_all();
    }
}

}  // namespace tandem::weights
