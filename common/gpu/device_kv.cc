#include "common/gpu/device_kv.h"

#include <algorithm>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "kernels/attention.h"
#include "kernels/cuda/kv_attention.h"
#include "kernels/cuda/ops.h"

namespace tandem::gpu {

namespace ops = kernels::cuda;

DeviceKvPool::DeviceKvPool(DeviceKvPlan plan, ops::DeviceAllocator& alloc, int layers, int hq,
                           int sm_count, int forced_splits)
    : plan_(std::move(plan)),
      alloc_(alloc),
      layers_(layers),
      hq_(hq),
      sm_count_(sm_count),
      forced_splits_(forced_splits),
      schedule_(plan_.block_tokens, plan_.compresses() ? plan_.compress_after_tokens : -1) {}

Result<std::unique_ptr<DeviceKvPool>> DeviceKvPool::create(const model::ModelConfig& config,
                                                           DeviceKvPlan plan,
                                                           ops::DeviceAllocator& alloc,
                                                           int forced_splits) {
    if (plan.compresses() && int64_t{plan.block_tokens} * config.head_dim() > 12288) {
        return invalid_argument(fmt::format(
            "device KV cache: sealing or compression requantizes pages of rollout.kv_cache.group "
            "x head_dim <= 12288 values a head; {} x {} is more",
            plan.block_tokens, config.head_dim()));
    }
    int sm_count = 0;
    if (const cudaError_t err =
            cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, alloc.device());
        err != cudaSuccess) {
        return ops::cuda_status(err, "device KV cache: cudaDeviceGetAttribute(SM count)");
    }
    std::unique_ptr<DeviceKvPool> p(new DeviceKvPool(std::move(plan), alloc, config.num_layers,
                                                     config.num_heads, sm_count, forced_splits));
    p->shape_.block_tokens = p->plan_.block_tokens;
    p->shape_.hkv = config.num_kv_heads;
    p->shape_.d = config.head_dim();
    if (p->plan_.paged()) {
        TANDEM_ASSIGN_OR_RETURN(p->shape_.pages, ops::paged_kv_pages(p->plan_.stored));
    }
    if (p->plan_.compresses()) {
        TANDEM_ASSIGN_OR_RETURN(p->cformat_, ops::paged_kv_pages(p->plan_.compressed));
    }
    return p;
}

int64_t DeviceKvPool::block_bytes() const {
    int64_t bytes = device_kv_block_bytes(plan_.stored, layers_);
    if (plan_.compresses()) bytes += device_kv_block_bytes(plan_.compressed, layers_) + 4;
    return bytes;
}

DeviceKvStats DeviceKvPool::stats() const {
    DeviceKvStats st;
    st.dtype = plan_.paged() ? kernels::kv_dtype_name(plan_.stored.dtype) : "bf16";
    st.block_tokens = plan_.block_tokens;
    st.block_bytes = device_kv_block_bytes(plan_.stored, layers_);
    if (plan_.compresses()) {
        st.compressed_dtype = kernels::kv_dtype_name(plan_.compressed.dtype);
        st.compressed_block_bytes = device_kv_block_bytes(plan_.compressed, layers_);
    }
    st.pool_bytes = static_cast<int64_t>(pool_.bytes() + cpool_.bytes() + flags_.bytes());
    st.compressions = schedule_.compressions();
    st.compressed_now = std::ranges::count(schedule_.flags(), 1);
    st.last_splits = last_splits_;
    return st;
}

Result<bool> DeviceKvPool::reserve(int64_t blocks, int64_t max_rows) {
    bool replaced = false;
    if (blocks > shape_.num_blocks) {
        replaced = true;
        pool_ = ops::DeviceBuffer();
        cpool_ = ops::DeviceBuffer();
        flags_ = ops::DeviceBuffer();
        ops::PagedKvShape shape = shape_;
        shape_.num_blocks = 0;  // until the new pools are there
        shape.num_blocks = blocks;
        TANDEM_ASSIGN_OR_RETURN(
            pool_, alloc_.allocate(static_cast<size_t>(shape.layer_bytes() * layers_),
                                   fmt::format("device KV cache ({} blocks of {} tokens, {})",
                                               blocks, shape.block_tokens,
                                               plan_.paged() ? kernels::describe(plan_.stored)
                                                             : std::string("bf16"))));
        if (plan_.compresses()) {
            TANDEM_ASSIGN_OR_RETURN(
                cpool_,
                alloc_.allocate(static_cast<size_t>(blocks * cformat_.stride * layers_),
                                fmt::format("device KV cache, compressed pages ({} blocks, {})",
                                            blocks, kernels::describe(plan_.compressed))));
            TANDEM_ASSIGN_OR_RETURN(flags_, alloc_.allocate(static_cast<size_t>(blocks) * 4,
                                                            "device KV cache, compressed flags"));
        }
        schedule_.resize(blocks, true);
        shape_ = shape;
    }
    const int64_t rowheads = std::max<int64_t>(
        4 * int64_t{std::max(sm_count_, 1)},
        max_rows * hq_ * (forced_splits_ > 0 ? std::min(forced_splits_, kMaxDecodeSplits) : 2));
    if (rowheads > workspace_rowheads_) {
        replaced = true;
        partials_ = ops::DeviceBuffer();
        lse_ = ops::DeviceBuffer();
        workspace_rowheads_ = 0;
        TANDEM_ASSIGN_OR_RETURN(partials_,
                                alloc_.allocate(static_cast<size_t>(rowheads * (shape_.d + 1)) * 4,
                                                "decode attention split partials"));
        TANDEM_ASSIGN_OR_RETURN(
            lse_, alloc_.allocate(static_cast<size_t>(rowheads) * 4, "decode attention split lse"));
        workspace_rowheads_ = rowheads;
    }
    return replaced;
}

Status DeviceKvPool::write(const ops::Stream& s, int layer, int64_t n, const int32_t* slots,
                           const ops::Bf16* k, const ops::Bf16* v) {
    if (shape_.pages.paged()) {
        return ops::paged_kv_write_pages(s, shape_, n, slots, k, v,
                                         pool_.as<uint8_t>() + layer * shape_.layer_bytes());
    }
    ops::Bf16* kpool = pool_.as<ops::Bf16>() + layer * shape_.layer_elems();
    ops::Bf16* vpool = kpool + shape_.block_elems() * shape_.num_blocks;
    return ops::paged_kv_write(s, shape_, n, slots, k, v, kpool, vpool);
}

Status DeviceKvPool::attend(const ops::Stream& s, int layer, int64_t n, const int32_t* tables,
                            int width, const int32_t* context_lens, const ops::Bf16* q, float* o) {
    ops::PagedDecode pd;
    pd.shape = shape_;
    pd.n = n;
    pd.hq = hq_;
    pd.scale = kernels::default_softmax_scale(shape_.d);
    pd.block_table = tables;
    pd.table_width = width;
    pd.context_lens = context_lens;
    if (shape_.pages.paged()) {
        pd.pages = pool_.as<const uint8_t>() + layer * shape_.layer_bytes();
        if (plan_.compresses()) {
            pd.cpages = cpool_.as<const uint8_t>() + layer * shape_.num_blocks * cformat_.stride;
            pd.cformat = cformat_;
            pd.compressed = flags_.as<const int32_t>();
        }
    } else {
        pd.k_pool = pool_.as<const ops::Bf16>() + layer * shape_.layer_elems();
        pd.v_pool = pd.k_pool + shape_.block_elems() * shape_.num_blocks;
    }
    // Splits from the rows and the tables' capacity (so a captured step keeps its count), no
    // more than the workspace holds.
    int splits =
        decode_splits(n, hq_, int64_t{width} * shape_.block_tokens, sm_count_, forced_splits_);
    const int64_t rowheads = std::max<int64_t>(1, n * hq_);
    if (splits > 1 && rowheads * splits > workspace_rowheads_) {
        splits = static_cast<int>(std::max<int64_t>(1, workspace_rowheads_ / rowheads));
    }
    pd.splits = splits;
    if (splits > 1) {
        pd.partials = partials_.as<float>();
        pd.lse = lse_.as<float>();
    }
    last_splits_ = splits;
    return ops::paged_decode_attention(s, pd, q, o);
}

Status DeviceKvPool::copy_blocks(const ops::Stream& s, int64_t count, const int32_t* pairs) {
    TANDEM_RETURN_IF_ERROR(ops::paged_copy_blocks(s, shape_, layers_, count, pairs, pool_.as()));
    return Status();
}

Status DeviceKvPool::flush(const ops::Stream& s) {
    if (!plan_.compresses() || !schedule_.take_changed()) return Status();
    const std::span<const int32_t> f = schedule_.flags();
    return ops::copy_to_device(s, flags_.as(), f.data(), f.size() * 4);
}

Status DeviceKvPool::before_decode(const ops::Stream& s, const StepLayout& layout, int64_t live,
                                   std::span<const int32_t> step) {
    if (!plan_.compresses()) return Status();
    schedule_.written(step.subspan(static_cast<size_t>(layout.slots()), static_cast<size_t>(live)));
    const std::vector<int32_t> due = schedule_.due(layout, live, step);
    if (!due.empty()) {
        TANDEM_ASSIGN_OR_RETURN(ops::DeviceBuffer d,
                                alloc_.allocate(due.size() * 4, "blocks to compress"));
        TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, d.as(), due.data(), due.size() * 4));
        // The buffer goes back to the allocator when this returns; it is reused only by work
        // enqueued after this launch on the same stream.
        TANDEM_RETURN_IF_ERROR(ops::paged_requantize(s, shape_, layers_, std::ssize(due),
                                                     d.as<const int32_t>(), pool_.as<uint8_t>(),
                                                     cformat_, cpool_.as<uint8_t>()));
    }
    return flush(s);
}

}  // namespace tandem::gpu
