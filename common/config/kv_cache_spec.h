#pragma once

// rollout.kv_cache: how the rollout engine stores its KV cache (docs/kv-cache.md).

#include <array>
#include <cstdint>
#include <utility>

#include "common/config/schema.h"

namespace tandem::config {

enum class KvCacheDType { kF32, kBF16, kInt8, kInt4, kInt2 };
// How the system-prompt cache reuses a prefix found at another offset than where it was
// prefilled: re-rotate its keys with RoPE (approximate for content), or prefill it again.
enum class PrefixShift { kRotate, kRecompute };

template <>
struct EnumNames<KvCacheDType> {
    static constexpr std::array<std::pair<KvCacheDType, const char*>, 5> kNames{{
        {KvCacheDType::kF32, "f32"},
        {KvCacheDType::kBF16, "bf16"},
        {KvCacheDType::kInt8, "int8"},
        {KvCacheDType::kInt4, "int4"},
        {KvCacheDType::kInt2, "int2"},
    }};
};
template <>
struct EnumNames<PrefixShift> {
    static constexpr std::array<std::pair<PrefixShift, const char*>, 2> kNames{{
        {PrefixShift::kRotate, "rotate"},
        {PrefixShift::kRecompute, "recompute"},
    }};
};

struct KvCacheSpec {
    // Format of full pages: int8 and int4 per token and head; int2 (and int4 with kivi) KIVI:
    // keys per channel over a page of `group` tokens, values per token in groups of `group`
    // channels, the newest `residual_tokens` tokens kept in f32.
    KvCacheDType dtype = KvCacheDType::kF32;
    bool kivi = false;  // int4 only: KIVI instead of per token
    int residual_tokens = 128;
    int group = 32;  // tokens per page (the KIVI key group) and channels per value group
    // KV bytes the engine may hold; sequences are admitted in waves that fit. 0: no limit.
    int64_t budget_bytes = 0;
    // Background compression: pages whose last token is more than compress_after_tokens behind
    // their sequence's newest token are requantized to compress_dtype by a worker thread.
    // 0: off.
    int compress_after_tokens = 0;
    KvCacheDType compress_dtype = KvCacheDType::kInt2;
    // System-prompt cache: a prefix shared by prompts (its first `prefix_tokens` tokens when
    // they are equal) is prefilled once per weight version and reused. 0: off.
    int prefix_tokens = 0;
    KvCacheDType prefix_dtype = KvCacheDType::kInt8;
    PrefixShift prefix_shift = PrefixShift::kRotate;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("dtype", s.dtype);
        v.field("kivi", s.kivi);
        v.field("residual_tokens", s.residual_tokens, Range{0, 1 << 20});
        v.field("group", s.group, Range{1, 4096});
        v.field("budget_bytes", s.budget_bytes, Range<int64_t>{0, int64_t{1} << 50});
        v.field("compress_after_tokens", s.compress_after_tokens, Range{0, 1 << 24});
        v.field("compress_dtype", s.compress_dtype);
        v.field("prefix_tokens", s.prefix_tokens, Range{0, 1 << 24});
        v.field("prefix_dtype", s.prefix_dtype);
        v.field("prefix_shift", s.prefix_shift);
        v.check(!s.kivi || s.dtype == KvCacheDType::kInt4, "kivi",
                "applies to dtype int4 only (int2 is always KIVI)");
    }
};

}  // namespace tandem::config
