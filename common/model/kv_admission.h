#pragma once

// Admission of prompts under the KV budget (rollout.kv_cache.budget_bytes) and the KV figures of
// GenerateStats. Prompts are admitted in order, in waves whose worst-case KV bytes fit the
// budget; a wave runs to completion before the next starts, so nothing is ever evicted from the
// live cache. The random stream of a sample depends on its prompt's index in the whole batch,
// so completions do not depend on the budget: the same tokens, and log-probs equal up to fp32
// rounding (a wave's batch size changes the blocking of the sgemm calls).

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/model/generate.h"
#include "common/model/kv_cache.h"

namespace tandem::model {

// What a cache's blocks cost, for admission: the engine's PagedKvCache (KvBlockBytes::of) or the
// device's paged pool (common/gpu/generate_loop.h: its blocks never change format, so live and
// sealed are the same).
struct KvBlockBytes {
    int64_t block_tokens = 16;
    int64_t live_bytes = 0;    // a block while it is written (f32 on the engine), all layers
    int64_t sealed_bytes = 0;  // a full block in its stored format (= live_bytes: never sealed)
    int64_t hot_tokens = 0;    // tokens kept live after the newest one (KIVI's residual window)

    static KvBlockBytes of(const PagedKvCache& cache);
};

// Worst-case bytes a cache of `sizes` holds for one prompt (as below, by block sizes).
int64_t worst_case_kv_bytes(const KvBlockBytes& sizes, int64_t prompt_tokens, int group,
                            int64_t new_tokens, bool share_prefix = true);

// Worst-case bytes `cache` holds for one prompt of `prompt_tokens` tokens and `group` samples of
// up to `new_tokens` tokens each (prompt blocks shared when `share_prefix`): every block at its
// sealed size, plus the f32 surplus of the blocks that can be f32 at once (the prompt's blocks
// between prefill and the first decode step, and per sample the residual window plus two blocks).
int64_t worst_case_kv_bytes(const PagedKvCache& cache, int64_t prompt_tokens, int group,
                            int64_t new_tokens, bool share_prefix = true);

// [first, count) ranges of prompts, in order. budget_bytes 0: one wave of everything.
// pinned_bytes are held through every wave (the system-prompt prefix, kv_prefix_cache.h), so each
// wave gets budget_bytes - pinned_bytes; shared_tokens[p] (empty: all 0) are the first tokens of
// prompt p that it forks from the pinned prefix instead of holding itself. A prompt that does
// not fit alone is invalid_argument naming the job, the prompt and the sizes (the prefix's too).
Result<std::vector<std::pair<int64_t, int64_t>>> admission_waves(
    const PagedKvCache& cache, std::span<const std::vector<int32_t>> prompts, int group,
    int64_t new_tokens, int64_t budget_bytes, const std::string& job, bool share_prefix = true,
    int64_t pinned_bytes = 0, std::span<const int64_t> shared_tokens = {});

// The same plan by block sizes (the PagedKvCache overload passes KvBlockBytes::of(cache)).
Result<std::vector<std::pair<int64_t, int64_t>>> admission_waves(
    const KvBlockBytes& sizes, std::span<const std::vector<int32_t>> prompts, int group,
    int64_t new_tokens, int64_t budget_bytes, const std::string& job, bool share_prefix = true,
    int64_t pinned_bytes = 0, std::span<const int64_t> shared_tokens = {});

// Records the cache's current memory in `stats` when it is the most seen so far.
void note_kv_peak(GenerateStats& stats, const PagedKvCache& cache);
// Sums counts and keeps maxima of a wave's stats into `total`.
void accumulate_stats(GenerateStats& total, const GenerateStats& wave);

}  // namespace tandem::model
