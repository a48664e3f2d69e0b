#include "common/model/kv_admission.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::model {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

KvBlockBytes KvBlockBytes::of(const PagedKvCache& cache) {
    KvBlockBytes b;
    b.block_tokens = cache.block_tokens();
    b.live_bytes = cache.f32_block_bytes();
    const KvCacheOptions& o = cache.options();
    // Compression only shrinks sealed blocks: the live format's size bounds them.
    b.sealed_bytes = o.dtype == kernels::KvDType::kF32 ? b.live_bytes : cache.sealed_block_bytes();
    const bool kivi =
        o.dtype == kernels::KvDType::kInt2 || (o.dtype == kernels::KvDType::kInt4 && o.kivi);
    b.hot_tokens = kivi ? o.residual_tokens : 0;
    return b;
}

int64_t worst_case_kv_bytes(const KvBlockBytes& s, int64_t prompt_tokens, int group,
                            int64_t new_tokens, bool share_prefix) {
    const int64_t T = s.block_tokens;
    const int64_t prompt_blocks = ceil_div(prompt_tokens, T) * (share_prefix ? 1 : group);
    const int64_t own_blocks = ceil_div(new_tokens, T);
    const int64_t blocks = prompt_blocks + group * own_blocks;
    const int64_t surplus = std::max<int64_t>(0, s.live_bytes - s.sealed_bytes);
    const int64_t hot = std::min(own_blocks, ceil_div(s.hot_tokens, T) + 2);
    return blocks * s.sealed_bytes + (prompt_blocks + group * hot) * surplus;
}

int64_t worst_case_kv_bytes(const PagedKvCache& cache, int64_t prompt_tokens, int group,
                            int64_t new_tokens, bool share_prefix) {
    return worst_case_kv_bytes(KvBlockBytes::of(cache), prompt_tokens, group, new_tokens,
                               share_prefix);
}

Result<std::vector<std::pair<int64_t, int64_t>>> admission_waves(
    const PagedKvCache& cache, std::span<const std::vector<int32_t>> prompts, int group,
    int64_t new_tokens, int64_t budget_bytes, const std::string& job, bool share_prefix,
    int64_t pinned_bytes, std::span<const int64_t> shared_tokens) {
    return admission_waves(KvBlockBytes::of(cache), prompts, group, new_tokens, budget_bytes, job,
                           share_prefix, pinned_bytes, shared_tokens);
}

Result<std::vector<std::pair<int64_t, int64_t>>> admission_waves(
    const KvBlockBytes& sizes, std::span<const std::vector<int32_t>> prompts, int group,
    int64_t new_tokens, int64_t budget_bytes, const std::string& job, bool share_prefix,
    int64_t pinned_bytes, std::span<const int64_t> shared_tokens) {
    std::vector<std::pair<int64_t, int64_t>> waves;
    const int64_t P = static_cast<int64_t>(prompts.size());
    if (budget_bytes <= 0 || P == 0) {
        waves.emplace_back(0, P);
        return waves;
    }
    const int64_t room = budget_bytes - pinned_bytes;  // what the waves' sequences may hold
    int64_t first = 0, used = 0;
    for (int64_t p = 0; p < P; ++p) {
        const int64_t shared = shared_tokens.empty() ? 0 : shared_tokens[p];
        const int64_t own = static_cast<int64_t>(prompts[p].size()) - shared;
        const int64_t need = worst_case_kv_bytes(sizes, own, group, new_tokens, share_prefix);
        if (need > room) {
            return invalid_argument(fmt::format(
                "job {}: prompt {} ({} tokens{}, {} samples of up to {} new tokens) needs up to {} "
                "KV bytes{}, more than rollout.kv_cache.budget_bytes ({})",
                job, p, prompts[p].size(),
                shared > 0 ? fmt::format(", {} of them in the shared prefix", shared) : "", group,
                new_tokens, need,
                pinned_bytes > 0
                    ? fmt::format(" plus {} of the pinned system-prompt prefix", pinned_bytes)
                    : "",
                budget_bytes));
        }
        if (used + need > room) {
            waves.emplace_back(first, p - first);
            first = p;
            used = 0;
        }
        used += need;
    }
    waves.emplace_back(first, P - first);
    return waves;
}

void note_kv_peak(GenerateStats& stats, const PagedKvCache& cache) {
    const KvCacheStats st = cache.stats();
    if (st.bytes <= stats.kv_peak_bytes) return;
    stats.kv_peak_bytes = st.bytes;
    stats.kv_bytes_per_token = st.bytes_per_token();
    const double f32_per_token =
        static_cast<double>(cache.f32_block_bytes()) / cache.block_tokens();
    stats.kv_compression = st.bytes_per_token() / f32_per_token;
    stats.kv_f32_blocks = st.f32_blocks;
    std::copy(std::begin(st.sealed_blocks), std::end(st.sealed_blocks), stats.kv_sealed_blocks);
}

void accumulate_stats(GenerateStats& total, const GenerateStats& w) {
    total.prompt_tokens += w.prompt_tokens;
    total.generated_tokens += w.generated_tokens;
    total.decode_steps += w.decode_steps;
    total.peak_blocks = std::max(total.peak_blocks, w.peak_blocks);
    total.sharded_sequences += w.sharded_sequences;
    total.peak_tokens_per_rank = std::max(total.peak_tokens_per_rank, w.peak_tokens_per_rank);
    if (w.kv_peak_bytes > total.kv_peak_bytes) {
        total.kv_peak_bytes = w.kv_peak_bytes;
        total.kv_bytes_per_token = w.kv_bytes_per_token;
        total.kv_compression = w.kv_compression;
        total.kv_f32_blocks = w.kv_f32_blocks;
        std::copy(std::begin(w.kv_sealed_blocks), std::end(w.kv_sealed_blocks),
                  total.kv_sealed_blocks);
    }
    total.kv_compressed += w.kv_compressed;
    total.kv_evictions += w.kv_evictions;
}

}  // namespace tandem::model
