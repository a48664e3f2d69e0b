#include "common/model/kv_compressor.h"

namespace tandem::model {

Result<std::shared_ptr<const KvSealedBlock>> seal_block(const kernels::KvPageFormat& format,
                                                        int layers, int32_t rows,
                                                        const std::function<const float*(int)>& k,
                                                        const std::function<const float*(int)>& v) {
    auto b = std::make_shared<KvSealedBlock>();
    b->format = format;
    b->rows = rows;
    b->page_bytes = kernels::kv_page_bytes(format);
    b->bytes.resize(static_cast<size_t>(b->page_bytes * layers));
    for (int l = 0; l < layers; ++l) {
        TANDEM_RETURN_IF_ERROR(kernels::kv_quantize_page(format, k(l), v(l), rows,
                                                         b->bytes.data() + l * b->page_bytes));
    }
    return std::shared_ptr<const KvSealedBlock>(std::move(b));
}

Result<std::shared_ptr<const KvSealedBlock>> requantize_block(const KvSealedBlock& from,
                                                              const kernels::KvPageFormat& format,
                                                              int layers) {
    const int64_t n = from.rows * from.format.row_elems();
    std::vector<float> k(static_cast<size_t>(n * layers)), v(k.size());
    for (int l = 0; l < layers; ++l) {
        TANDEM_RETURN_IF_ERROR(kernels::kv_dequantize_page(from.format, from.page(l), 0, from.rows,
                                                           k.data() + l * n, v.data() + l * n));
    }
    return seal_block(
        format, layers, from.rows, [&](int l) { return k.data() + l * n; },
        [&](int l) { return v.data() + l * n; });
}

KvCompressor::KvCompressor(kernels::KvPageFormat target, int layers)
    : target_(target), layers_(layers), worker_([this] { run(); }) {}

KvCompressor::~KvCompressor() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    worker_.join();
}

void KvCompressor::set_before_publish(std::function<void()> hook) {
    std::lock_guard lock(mu_);
    before_publish_ = std::move(hook);
}

void KvCompressor::submit(KvBlockSlot* slot, std::shared_ptr<const KvSealedBlock> seen) {
    {
        std::lock_guard lock(mu_);
        jobs_.push_back(Job{slot, std::move(seen)});
    }
    wake_.notify_one();
}

void KvCompressor::drain() {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [&] { return jobs_.empty() && !busy_; });
}

void KvCompressor::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (stop_) return;
        Job job = std::move(jobs_.front());
        jobs_.pop_front();
        busy_ = true;
        const std::function<void()> hook = before_publish_;
        lock.unlock();
        auto next = requantize_block(*job.seen, target_, layers_);
        if (!next.ok()) {
            failed_.fetch_add(1, std::memory_order_relaxed);  // statistic only
        } else {
            if (hook) hook();
            // acq_rel on success: release publishes the new block's bytes (written above) to
            // readers that load the slot with acquire; acquire pairs with the owner's release
            // store of whatever the slot held. On failure (the slot changed: the block was freed
            // or reused) the result is dropped and `seen` is not touched.
            std::shared_ptr<const KvSealedBlock> expected = job.seen;
            if (job.slot->compare_exchange_strong(expected, std::move(next).value(),
                                                  std::memory_order_acq_rel,
                                                  std::memory_order_acquire)) {
                swapped_.fetch_add(1, std::memory_order_relaxed);  // statistic only
            } else {
                discarded_.fetch_add(1, std::memory_order_relaxed);  // statistic only
            }
        }
        job.seen.reset();
        lock.lock();
        busy_ = false;
        if (jobs_.empty()) idle_.notify_all();
    }
}

}  // namespace tandem::model
