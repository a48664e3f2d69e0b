#include "common/gpu/kv_pages.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::gpu {

std::string device_kv_unsupported(const config::KvCacheSpec& spec) {
    if (spec.dtype == config::KvCacheDType::kF32 || spec.compress_after_tokens == 0) return "";
    if (spec.compress_dtype == config::KvCacheDType::kF32) {
        return "rollout.kv_cache.compress_dtype f32 (compression to a wider format)";
    }
    const bool kivi = spec.dtype == config::KvCacheDType::kInt2 ||
                      (spec.dtype == config::KvCacheDType::kInt4 && spec.kivi);
    if (kivi && spec.compress_dtype != spec.dtype) {  // the same format: the CPU skips it too
        return fmt::format(
            "rollout.kv_cache.compress_dtype {} with dtype {}{} (KIVI pages are already the "
            "device cache's second pool; compressing them again is not implemented)",
            config::enum_name(spec.compress_dtype), config::enum_name(spec.dtype),
            spec.kivi ? " with kivi" : "");
    }
    return "";
}

Result<DeviceKvPlan> device_kv_plan(const model::ModelConfig& config,
                                    const model::KvCacheOptions& options, std::string_view job) {
    DeviceKvPlan plan;
    plan.block_tokens = options.block_tokens;
    const kernels::KvSequenceConfig seq = model::kv_sequence_config(config, options);
    plan.stored = seq.sealed;
    if (options.dtype == kernels::KvDType::kF32) return plan;  // compression needs pages
    if (Status s = kernels::validate(plan.stored); !s.ok()) {
        return invalid_argument(
            fmt::format("job {}: device generation: rollout.kv_cache: {}", job, s.message()));
    }
    if (plan.stored.kivi()) {
        // bf16 pages until residual_tokens follow a full block, then its KIVI page.
        if (options.compress_after_tokens > 0 && options.compress_dtype != options.dtype) {
            return invalid_argument(fmt::format(
                "job {}: device generation: rollout.kv_cache.compress_dtype {} with dtype {}: "
                "KIVI pages are compressed no further on the device",
                job, kernels::kv_dtype_name(options.compress_dtype),
                kernels::kv_dtype_name(options.dtype)));
        }
        if (options.residual_tokens < 0) {
            return invalid_argument(fmt::format(
                "job {}: device generation: rollout.kv_cache.residual_tokens must be >= 0", job));
        }
        plan.compressed = plan.stored;
        plan.stored.dtype = kernels::KvDType::kBF16;
        plan.stored.scheme = kernels::KvScheme::kPerToken;
        plan.compress = true;
        plan.compress_after_tokens = options.residual_tokens;
        plan.kivi_window = true;
        return plan;
    }
    if (options.compress_after_tokens > 0) {
        if (options.compress_dtype == kernels::KvDType::kF32) {
            return invalid_argument(fmt::format(
                "job {}: device generation: rollout.kv_cache.compress_dtype f32 is wider than "
                "the cache's {}",
                job, kernels::kv_dtype_name(options.dtype)));
        }
        model::KvCacheOptions target = options;
        target.dtype = options.compress_dtype;
        target.kivi = true;  // as the CPU cache's compressor: int4 and int2 KIVI
        plan.compressed = model::kv_sequence_config(config, target).sealed;
        if (Status s = kernels::validate(plan.compressed); !s.ok()) {
            return invalid_argument(
                fmt::format("job {}: device generation: rollout.kv_cache.compress_dtype: {}", job,
                            s.message()));
        }
        // The same format again: the CPU compressor skips such blocks, so does the device.
        plan.compress = !(plan.compressed == plan.stored);
        plan.compress_after_tokens = options.compress_after_tokens;
    }
    return plan;
}

int64_t device_kv_page_stride(const kernels::KvPageFormat& format) {
    return (kernels::kv_page_bytes(format) + 15) / 16 * 16;
}

int64_t device_kv_block_bytes(const kernels::KvPageFormat& format, int layers) {
    if (format.dtype == kernels::KvDType::kF32) {
        return int64_t{2} * layers * format.page_tokens * format.row_elems() * 2;
    }
    return int64_t{layers} * device_kv_page_stride(format);
}

void KvCompressionSchedule::resize(int64_t blocks, bool reset) {
    if (reset) {
        if (std::ranges::any_of(flags_, [](int32_t f) { return f != 0; })) changed_ = true;
        flags_.assign(static_cast<size_t>(blocks), 0);
    } else if (blocks > std::ssize(flags_)) {
        flags_.resize(static_cast<size_t>(blocks), 0);
    }
    changed_ = true;  // a new device copy of the flags is due
}

void KvCompressionSchedule::written(std::span<const int32_t> slots) {
    for (const int32_t slot : slots) {
        if (slot < 0 || slot % bt_ != 0) continue;
        const auto b = static_cast<size_t>(slot / bt_);
        if (b < flags_.size() && flags_[b] != 0) {
            flags_[b] = 0;
            changed_ = true;
        }
    }
}

void KvCompressionSchedule::copied(std::span<const int32_t> pairs) {
    for (size_t i = 1; i < pairs.size(); i += 2) {
        const auto b = static_cast<size_t>(pairs[i]);
        if (b < flags_.size() && flags_[b] != 0) {
            flags_[b] = 0;
            changed_ = true;
        }
    }
}

std::vector<int32_t> KvCompressionSchedule::due(const StepLayout& L, int64_t live,
                                                std::span<const int32_t> step) {
    std::vector<int32_t> out;
    if (after_ < 0) return out;
    for (int64_t r = 0; r < live; ++r) {
        const int64_t written = step[static_cast<size_t>(L.context_lens() + r)] - 1;
        const int32_t* table = step.data() + L.table() + r * L.width;
        for (int64_t i = 0; i < L.width && (i + 1) * bt_ <= written - after_; ++i) {
            const auto b = static_cast<size_t>(table[i]);
            if (b == 0 || b >= flags_.size() || flags_[b] != 0) continue;
            flags_[b] = 1;
            out.push_back(table[i]);
        }
    }
    std::ranges::sort(out);
    compressions_ += std::ssize(out);
    if (!out.empty()) changed_ = true;
    return out;
}

bool KvCompressionSchedule::take_changed() {
    const bool c = changed_;
    changed_ = false;
    return c;
}

int decode_splits(int64_t rows, int hq, int64_t max_context, int sm_count, int forced) {
    if (forced > 0) return std::min(forced, kMaxDecodeSplits);
    const int64_t blocks = std::max<int64_t>(1, rows * hq);
    if (sm_count < 1 || blocks >= sm_count) return 1;
    const int64_t fill = (2 * int64_t{sm_count} + blocks - 1) / blocks;
    const int64_t by_context = std::max<int64_t>(1, max_context / kMinSplitTokens);
    return static_cast<int>(std::clamp<int64_t>(std::min(fill, by_context), 1, kMaxDecodeSplits));
}

}  // namespace tandem::gpu
