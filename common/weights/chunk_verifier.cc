#include "common/weights/chunk_verifier.h"

#include "common/weights/manifest.h"

namespace tandem::weights {

ChunkVerifier::ChunkVerifier(uint32_t threads) {
    for (uint32_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

ChunkVerifier::~ChunkVerifier() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
}

void ChunkVerifier::submit(const Job& job) {
    ++outstanding_;
    if (threads_.empty()) {
        const uint64_t actual = chunk_checksum({job.data, job.length});
        done_.push_back({next_epoch_, {job.tag, actual == job.expected, actual}});
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        jobs_.emplace_back(next_epoch_, job);
    }
    work_.notify_one();
}

std::vector<ChunkVerifier::Outcome> ChunkVerifier::drain() {
    std::vector<std::pair<uint64_t, Outcome>> finished;
    {
        std::lock_guard<std::mutex> lock(mu_);
        finished.swap(done_);
    }
    std::vector<Outcome> out;
    out.reserve(finished.size());
    for (auto& [epoch, outcome] : finished) {
        --outstanding_;
        if (epoch > forget_before_) out.push_back(outcome);
    }
    return out;
}

void ChunkVerifier::run() {
    for (;;) {
        std::pair<uint64_t, Job> item;
        {
            std::unique_lock<std::mutex> lock(mu_);
            work_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
            if (jobs_.empty()) return;
            item = jobs_.front();
            jobs_.pop_front();
        }
        const Job& job = item.second;
        const uint64_t actual = chunk_checksum({job.data, job.length});
        std::lock_guard<std::mutex> lock(mu_);
        done_.push_back({item.first, {job.tag, actual == job.expected, actual}});
    }
}

}  // namespace tandem::weights
