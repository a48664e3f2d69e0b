#pragma once

// The KV cache of device generation in device memory: the pool in the plan's stored format
// (bf16 rows, or pages of the CPU engine's format: kernels/cuda/paged_kv.h), the compressed
// pool with its per-block flags, and the split-K workspace of decode attention. Keys and values
// are written by slot, attention reads the rows' pages through their block tables, and before
// a decode step the blocks background compression has due (common/gpu/kv_pages.h) are
// requantized on the actor's stream. Launchers only enqueue; the host bookkeeping is
// synchronous. Never run on a GPU yet (docs/gpu.md).

#include <cstdint>
#include <memory>
#include <span>

#include "common/gpu/kv_pages.h"
#include "common/gpu/paged_plan.h"
#include "common/model/config.h"
#include "common/status.h"
#include "kernels/cuda/paged_kv.h"
#include "kernels/cuda/runtime.h"

namespace tandem::gpu {

// What the pool holds and did, for DeviceGenerateStats.
struct DeviceKvStats {
    // The format blocks are written in (f32 requested: bf16 rows; KIVI: "bf16", its window) and
    // the second pool's (KIVI: the dtype asked for; compression: its target; "" without).
    const char* dtype = "bf16";
    const char* compressed_dtype = "";
    int block_tokens = 16;
    int64_t block_bytes = 0;  // one block, every layer, stored format
    int64_t compressed_block_bytes = 0;
    int64_t pool_bytes = 0;      // allocated: the pool, the compressed pool and their flags
    int64_t compressions = 0;    // blocks requantized so far
    int64_t compressed_now = 0;  // blocks whose pages are in the compressed pool
    int last_splits = 1;         // key splits of the last decode attention
};

// Owned by one generator (one actor stream); not thread-safe. Buffers come from the
// generator's allocator, which must outlive the pool.
class DeviceKvPool {
public:
    // The split-K choice reads the SM count of the allocator's device; forced_splits > 0: that
    // many key splits for every decode attention (tests; the workspace may lower it). Fails
    // naming the field when compression's pages do not fit the requantize kernel's tile.
    static Result<std::unique_ptr<DeviceKvPool>> create(const model::ModelConfig& config,
                                                        DeviceKvPlan plan,
                                                        kernels::cuda::DeviceAllocator& alloc,
                                                        int forced_splits);
    DeviceKvPool(const DeviceKvPool&) = delete;
    DeviceKvPool& operator=(const DeviceKvPool&) = delete;

    const DeviceKvPlan& plan() const { return plan_; }
    const kernels::cuda::PagedKvShape& shape() const { return shape_; }
    int64_t blocks() const { return shape_.num_blocks; }
    // Device memory one block takes, every layer's keys and values: its stored pages (or bf16
    // rows), plus its pages and flag in the second pool when there is one (both are allocated
    // for every block). The KV budget's unit.
    int64_t block_bytes() const;
    DeviceKvStats stats() const;

    // At least `blocks` blocks and a split workspace for decode steps of `max_rows` rows.
    // Returns true when buffers were replaced (captured graphs read them); a pool that grows
    // starts empty (every block uncompressed).
    Result<bool> reserve(int64_t blocks, int64_t max_rows);

    // Layer `layer`'s keys and values of n rows (k, v [n, hkv, d] bf16) to `slots` (device).
    Status write(const kernels::cuda::Stream& s, int layer, int64_t n, const int32_t* slots,
                 const kernels::cuda::Bf16* k, const kernels::cuda::Bf16* v);
    // Decode attention of layer `layer`: one query per row, q [n, hq, d] bf16 -> o fp32, over
    // the rows' block tables [n, width] and context lengths [n] (device).
    Status attend(const kernels::cuda::Stream& s, int layer, int64_t n, const int32_t* tables,
                  int width, const int32_t* context_lens, const kernels::cuda::Bf16* q, float* o);
    // Copies block pairs (device, count pairs) in every layer.
    Status copy_blocks(const kernels::cuda::Stream& s, int64_t count, const int32_t* pairs);

    // Host bookkeeping of what the host asked to be written or copied (blocks handed out anew
    // hold uncompressed rows); call flush() before attention reads the pool.
    void written(std::span<const int32_t> slots) { schedule_.written(slots); }
    void copied(std::span<const int32_t> pairs) { schedule_.copied(pairs); }
    // Uploads the compressed flags if they changed (enqueue).
    Status flush(const kernels::cuda::Stream& s);
    // Before a decode step of `live` rows packed in `step` (pack_step's layout): records the
    // step's writes, requantizes the blocks due into the compressed pool and flushes (enqueue).
    Status before_decode(const kernels::cuda::Stream& s, const StepLayout& layout, int64_t live,
                         std::span<const int32_t> step);

private:
    DeviceKvPool(DeviceKvPlan plan, kernels::cuda::DeviceAllocator& alloc, int layers, int hq,
                 int sm_count, int forced_splits);

    DeviceKvPlan plan_;
    kernels::cuda::DeviceAllocator& alloc_;
    int layers_, hq_, sm_count_, forced_splits_;
    kernels::cuda::PagedKvShape shape_;     // the stored pool (num_blocks 0: none yet)
    kernels::cuda::PagedKvPages cformat_;   // the compressed pool's format
    kernels::cuda::DeviceBuffer pool_;      // every layer, stored format
    kernels::cuda::DeviceBuffer cpool_;     // every layer, compressed format (compression on)
    kernels::cuda::DeviceBuffer flags_;     // int32 [num_blocks] (compression on)
    kernels::cuda::DeviceBuffer partials_;  // split-K partials
    kernels::cuda::DeviceBuffer lse_;       // split-K merged lse
    int64_t workspace_rowheads_ = 0;        // (row, head) pairs partials_ holds per split slot
    KvCompressionSchedule schedule_;
    int last_splits_ = 1;
};

}  // namespace tandem::gpu
