#pragma once

// Background compression of old KV context: a worker thread requantizes sealed blocks to a lower
// format (say int8 -> int2 KIVI) while decode goes on, and publishes each result by swapping the
// block's slot. A reader loads the slot once per attention call and keeps the block alive through
// its shared_ptr, so it sees the block entirely before or entirely after the swap: a published
// block is immutable, and a new one is fully written before the release that publishes it.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "kernels/kv_quant.h"

namespace tandem::model {

// A sealed block: `layers` pages of one format, back to back (page l at l * page_bytes).
// Immutable once published.
struct KvSealedBlock {
    kernels::KvPageFormat format;
    int32_t rows = 0;  // rows held (the rest of each page is zero)
    int64_t page_bytes = 0;
    std::vector<uint8_t> bytes;

    const uint8_t* page(int layer) const { return bytes.data() + layer * page_bytes; }
};

// Quantizes rows [0, rows) of `layers` pairs of f32 [rows, hkv, d] key/value arrays into a block.
Result<std::shared_ptr<const KvSealedBlock>> seal_block(const kernels::KvPageFormat& format,
                                                        int layers, int32_t rows,
                                                        const std::function<const float*(int)>& k,
                                                        const std::function<const float*(int)>& v);
// The same rows requantized to `format` (dequantized first).
Result<std::shared_ptr<const KvSealedBlock>> requantize_block(const KvSealedBlock& from,
                                                              const kernels::KvPageFormat& format,
                                                              int layers);

using KvBlockSlot = std::atomic<std::shared_ptr<const KvSealedBlock>>;

// Threading: submit(), drain() and the counters from any one owner thread; the worker thread
// reads the submitted block (immutable) and writes only the slot it was given, by
// compare-exchange. The owner must keep every submitted slot alive until the compressor is
// destroyed (the destructor stops and joins the worker).
class KvCompressor {
public:
    KvCompressor(kernels::KvPageFormat target, int layers);
    ~KvCompressor();
    KvCompressor(const KvCompressor&) = delete;
    KvCompressor& operator=(const KvCompressor&) = delete;

    const kernels::KvPageFormat& target() const { return target_; }

    // Queues `slot` for requantization if it still holds `seen` when the result is ready.
    void submit(KvBlockSlot* slot, std::shared_ptr<const KvSealedBlock> seen);
    // Waits until every queued block has been handled.
    void drain();

    int64_t swapped() const { return swapped_.load(std::memory_order_relaxed); }
    // Results dropped because the slot changed meanwhile (block freed or reused).
    int64_t discarded() const { return discarded_.load(std::memory_order_relaxed); }
    int64_t failed() const { return failed_.load(std::memory_order_relaxed); }

    // Test hook: runs on the worker between building a result and publishing it.
    void set_before_publish(std::function<void()> hook);

private:
    struct Job {
        KvBlockSlot* slot;
        std::shared_ptr<const KvSealedBlock> seen;
    };
    void run();

    const kernels::KvPageFormat target_;
    const int layers_;
    std::mutex mu_;
    std::condition_variable wake_, idle_;
    std::deque<Job> jobs_;                  // guarded by mu_
    bool busy_ = false;                     // guarded by mu_
    bool stop_ = false;                     // guarded by mu_
    std::function<void()> before_publish_;  // set before submit(); read by the worker
    // Statistics only: relaxed (no data is published through them).
    std::atomic<int64_t> swapped_{0}, discarded_{0}, failed_{0};
    std::thread worker_;  // started last in the constructor, joined in the destructor
};

}  // namespace tandem::model
