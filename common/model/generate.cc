#include "common/model/generate.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/model/context_parallel.h"
#include "common/model/kv_admission.h"

namespace tandem::model {

GeneratorOptions GeneratorOptions::from_job(const config::JobSpec& job) {
    GeneratorOptions o;
    o.context_parallel = job.rollout.context_parallel;
    o.max_tokens_per_device = job.rollout.max_tokens_per_device;
    o.job = job.name;
    o.kv = KvCacheOptions::from_spec(job.rollout.kv_cache, o.block_tokens);
    o.kv_budget_bytes = job.rollout.kv_cache.budget_bytes;
    o.prefix.auto_tokens = job.rollout.kv_cache.prefix_tokens;
    o.prefix.dtype = to_kernel_dtype(job.rollout.kv_cache.prefix_dtype);
    o.prefix.rotate = job.rollout.kv_cache.prefix_shift == config::PrefixShift::kRotate;
    return o;
}

GroupGenerator::GroupGenerator(InferenceEngine engine, PagedKvCache cache, GeneratorOptions options,
                               std::unique_ptr<ContextParallelGenerator> sharded)
    : engine_(std::move(engine)),
      cache_(std::move(cache)),
      options_(std::move(options)),
      sharded_(std::move(sharded)) {
    stop_ids_ = options_.stop_tokens;
    stop_ids_.push_back(options_.eos_token);
    std::erase_if(stop_ids_, [](int32_t id) { return id < 0; });
    std::sort(stop_ids_.begin(), stop_ids_.end());
    stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
    if (options_.prefix.enabled()) prefix_ = std::make_unique<SystemPromptCache>(options_.prefix);
}

void GroupGenerator::set_system_prompt(std::vector<int32_t> tokens) {
    system_prompt_ = std::move(tokens);
    if (!prefix_ && !system_prompt_.empty()) {
        prefix_ = std::make_unique<SystemPromptCache>(options_.prefix);
    }
}
GroupGenerator::GroupGenerator(GroupGenerator&&) noexcept = default;
GroupGenerator& GroupGenerator::operator=(GroupGenerator&&) noexcept = default;
GroupGenerator::~GroupGenerator() = default;

Result<GroupGenerator> GroupGenerator::create(const ModelConfig& config, GeneratorOptions options) {
    if (options.context_parallel < 1) {
        return invalid_argument(fmt::format("job {}: rollout.context_parallel must be >= 1, got {}",
                                            options.job, options.context_parallel));
    }
    if (options.max_tokens_per_device < 0) {
        return invalid_argument(
            fmt::format("job {}: rollout.max_tokens_per_device must be >= 1, got {}", options.job,
                        options.max_tokens_per_device));
    }
    TANDEM_ASSIGN_OR_RETURN(auto engine, InferenceEngine::create(config));
    std::unique_ptr<ContextParallelGenerator> sharded;
    if (options.context_parallel > 1) {
        ContextParallelOptions cp;
        cp.ranks = options.context_parallel;
        // The shards store KV like the single-device cache (rollout.kv_cache).
        if (options.kv.dtype != kernels::KvDType::kF32) {
            cp.kv = kv_sequence_config(config, options.kv);
        }
        TANDEM_ASSIGN_OR_RETURN(sharded, ContextParallelGenerator::create(config, cp));
    }
    KvCacheOptions kv = options.kv;
    if (kv.dtype == kernels::KvDType::kF32) kv.block_tokens = options.block_tokens;
    TANDEM_ASSIGN_OR_RETURN(auto cache, PagedKvCache::create(config, kv));
    return GroupGenerator(std::move(engine), std::move(cache), std::move(options),
                          std::move(sharded));
}

Result<std::vector<Completion>> GroupGenerator::generate(
    WeightView params, std::span<const std::vector<int32_t>> prompts, int group_size,
    const SamplingOptions& o, GenerateStats* stats) {
    GenerateStats total;
    std::vector<Completion> out;
    const auto hits = [&] {
        return prefix_ ? prefix_->stats().hits + prefix_->stats().shifted_hits : 0;
    };
    const int64_t hits0 = hits();
    // The system-prompt prefix is prefilled (or found valid) once for the whole call, before
    // admission: its pinned blocks take part of the budget, and the prompts that fork it do not
    // hold its tokens again.
    const int64_t evictions0 = prefix_ ? prefix_->stats().evictions : 0;
    int64_t pinned = 0;
    std::vector<int64_t> shared(prompts.size(), 0);
    if (prefix_ && options_.share_prefix && params.is_f32()) {
        TANDEM_RETURN_IF_ERROR(prefix_->prepare(engine_, params.f32(), cache_, prompts,
                                                system_prompt_, weights_version_));
        pinned = prefix_->stats().bytes;
        for (size_t p = 0; p < prompts.size(); ++p) {
            if (prefix_->find(prompts[p]) == 0) shared[p] = std::ssize(prefix_->tokens());
        }
    }
    const auto waves =
        admission_waves(cache_, prompts, group_size, o.max_new_tokens, options_.kv_budget_bytes,
                        options_.job, options_.share_prefix, pinned, shared);
    if (!waves.ok()) return waves.status();
    for (const auto& [first, count] : waves.value()) {
        GenerateStats ws;
        TANDEM_ASSIGN_OR_RETURN(auto part, generate_wave(params, prompts.subspan(first, count),
                                                         first, group_size, o, ws));
        for (auto& cp : part) {
            cp.prompt += static_cast<int32_t>(first);
            out.push_back(std::move(cp));
        }
        accumulate_stats(total, ws);
    }
    total.kv_waves = static_cast<int64_t>(waves.value().size());
    total.kv_admission_waits = static_cast<int64_t>(prompts.size()) - waves.value()[0].second;
    total.kv_prefix_hits = hits() - hits0;
    total.kv_prefix_bytes = prefix_ ? prefix_->stats().bytes : 0;
    total.kv_evictions = prefix_ ? prefix_->stats().evictions - evictions0 : 0;
    if (stats) *stats = total;
    return out;
}

Result<std::vector<Completion>> GroupGenerator::generate_wave(
    WeightView params, std::span<const std::vector<int32_t>> prompts, int64_t prompt0,
    int group_size, const SamplingOptions& o, GenerateStats& stats) {
    const ModelConfig& c = engine_.config();
    const int V = c.vocab_size;
    const int64_t P = static_cast<int64_t>(prompts.size());
    if (group_size < 1) return invalid_argument("generate: group_size must be >= 1");
    if (o.max_new_tokens < 1) return invalid_argument("generate: max_new_tokens must be >= 1");
    for (int64_t p = 0; p < P; ++p) {
        if (prompts[p].empty())
            return invalid_argument(fmt::format("generate: prompt {} is empty", p));
        const int64_t need = static_cast<int64_t>(prompts[p].size()) + o.max_new_tokens;
        if (need > c.max_seq_len) {
            return invalid_argument(fmt::format(
                "generate: prompt {} has {} tokens; with max_new_tokens {} that exceeds "
                "max_seq_len {}",
                p, prompts[p].size(), o.max_new_tokens, c.max_seq_len));
        }
    }
    // Prompts whose context does not fit one device go to the context-parallel path.
    const int64_t M = options_.max_tokens_per_device;
    std::vector<char> sharded(static_cast<size_t>(P), 0);
    for (int64_t p = 0; p < P; ++p) {
        const int64_t need = static_cast<int64_t>(prompts[p].size()) + o.max_new_tokens;
        if (M <= 0 || need <= M) continue;
        if (need > M * options_.context_parallel) {
            return invalid_argument(fmt::format(
                "job {}: prompt {} has {} tokens; with max_new_tokens {} its context ({}) exceeds "
                "rollout.context_parallel ({}) x rollout.max_tokens_per_device ({}) = {}",
                options_.job, p, prompts[p].size(), o.max_new_tokens, need,
                options_.context_parallel, M, M * options_.context_parallel));
        }
        sharded[p] = 1;
    }
    const bool any_sharded = std::find(sharded.begin(), sharded.end(), 1) != sharded.end();
    if (!params.is_f32() && (prefix_ || any_sharded)) {
        return invalid_argument(fmt::format(
            "job {}: weights held as {} run without the system-prompt cache and context "
            "parallelism; widen them to F32 (load_hf_directory) for those",
            options_.job, weights::dtype_name(params.dtype)));
    }
    const auto is_stop = [&](int32_t token) {
        return std::binary_search(stop_ids_.begin(), stop_ids_.end(), token);
    };
    GenerateStats local;
    const int64_t B = P * group_size;
    std::vector<Completion> out(static_cast<size_t>(B));
    rngs_.resize(static_cast<size_t>(B));
    for (int64_t p = 0; p < P; ++p) {
        for (int g = 0; g < group_size; ++g) {
            Completion& cp = out[p * group_size + g];
            cp.prompt = static_cast<int32_t>(p);
            cp.sample = g;
            cp.tokens.reserve(static_cast<size_t>(o.max_new_tokens));
            cp.logprobs.reserve(static_cast<size_t>(o.max_new_tokens));
            rngs_[p * group_size + g].reseed(
                mix_seed(o.seed, static_cast<uint64_t>(prompt0 + p), static_cast<uint64_t>(g)));
        }
    }
    cache_.release_all();
    const int64_t compressed0 = cache_.stats().compressed;
    seqs_.resize(static_cast<size_t>(B));
    items_.clear();
    // Prefill: once per prompt (shared) or once per sample.
    // logit_row[b]: the prefill logits row sample b starts from (-1: sharded).
    std::vector<int64_t> logit_row(static_cast<size_t>(B), -1);
    if (options_.share_prefix) {
        std::vector<PagedKvCache::SeqId> parents(static_cast<size_t>(P));
        for (int64_t p = 0; p < P; ++p) {
            if (sharded[p]) continue;
            // A prompt holding the cached system prompt starts from it (kv_prefix_cache.h).
            const auto off = prefix_ ? prefix_->find(prompts[p]) : std::nullopt;
            int64_t skip = 0;
            if (off) {
                TANDEM_ASSIGN_OR_RETURN(
                    parents[p], prefix_->start(engine_, params.f32(), cache_, prompts[p], *off));
                skip = *off + static_cast<int64_t>(prefix_->tokens().size());
                local.prompt_tokens += *off;
            } else {
                parents[p] = cache_.create();
            }
            for (int g = 0; g < group_size; ++g) logit_row[p * group_size + g] = items_.size();
            items_.push_back(
                {parents[p], std::span(prompts[p]).subspan(static_cast<size_t>(skip))});
            local.prompt_tokens += static_cast<int64_t>(prompts[p].size()) - skip;
        }
        logits_.resize(items_.size() * V);
        if (!items_.empty()) {
            TANDEM_RETURN_IF_ERROR(engine_.forward(params, cache_, items_, logits_.data()));
        }
        for (int64_t p = 0; p < P; ++p) {
            if (sharded[p]) continue;
            for (int g = 0; g < group_size; ++g) {
                TANDEM_ASSIGN_OR_RETURN(seqs_[p * group_size + g], cache_.fork(parents[p]));
            }
            cache_.release(parents[p]);
        }
    } else {
        for (int64_t b = 0; b < B; ++b) {
            if (sharded[b / group_size]) continue;
            seqs_[b] = cache_.create();
            logit_row[b] = items_.size();
            items_.push_back({seqs_[b], prompts[b / group_size]});
            local.prompt_tokens += static_cast<int64_t>(prompts[b / group_size].size());
        }
        logits_.resize(items_.size() * V);
        if (!items_.empty()) {
            TANDEM_RETURN_IF_ERROR(engine_.forward(params, cache_, items_, logits_.data()));
        }
    }
    // First token of every sample from its prompt's last logits.
    active_.clear();
    last_tok_.resize(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
        if (logit_row[b] < 0) continue;
        const float* lg = logits_.data() + logit_row[b] * V;
        const SampledToken t = sampler_.sample(lg, V, o, rngs_[b]);
        out[b].tokens.push_back(t.token);
        out[b].logprobs.push_back(t.logprob);
        last_tok_[b] = t.token;
        if (is_stop(t.token)) {
            out[b].finished = true;
        } else if (o.max_new_tokens > 1) {
            active_.push_back(static_cast<int32_t>(b));
        }
    }
    local.peak_blocks = cache_.blocks_in_use();
    note_kv_peak(local, cache_);
    // Decode every live sample one token at a time; finished samples drop out (order is kept, so
    // the samples of a group stay adjacent and share their prompt blocks' attention calls).
    while (!active_.empty()) {
        items_.clear();
        for (const int32_t b : active_) {
            items_.push_back({seqs_[b], std::span<const int32_t>(&last_tok_[b], 1)});
        }
        logits_.resize(active_.size() * static_cast<size_t>(V));
        TANDEM_RETURN_IF_ERROR(engine_.forward(params, cache_, items_, logits_.data()));
        ++local.decode_steps;
        size_t keep = 0;
        for (size_t i = 0; i < active_.size(); ++i) {
            const int32_t b = active_[i];
            const SampledToken t = sampler_.sample(logits_.data() + i * V, V, o, rngs_[b]);
            out[b].tokens.push_back(t.token);
            out[b].logprobs.push_back(t.logprob);
            last_tok_[b] = t.token;
            if (is_stop(t.token)) {
                out[b].finished = true;
            } else if (static_cast<int>(out[b].tokens.size()) < o.max_new_tokens) {
                active_[keep++] = b;
            }
        }
        active_.resize(keep);
        local.peak_blocks = std::max(local.peak_blocks, cache_.blocks_in_use());
        note_kv_peak(local, cache_);
    }
    local.kv_compressed = cache_.stats().compressed - compressed0;
    cache_.release_all();
    // The sharded prompts: prefilled once per group (or per sample), decoded over the ring.
    std::vector<ContextParallelGroup> groups;
    for (int64_t p = 0; p < P; ++p) {
        if (!sharded[p]) continue;
        if (options_.share_prefix) groups.push_back({static_cast<int32_t>(p), {}});
        for (int g = 0; g < group_size; ++g) {
            if (!options_.share_prefix) groups.push_back({static_cast<int32_t>(p), {}});
            groups.back().members.push_back(static_cast<int32_t>(p * group_size + g));
        }
    }
    if (!groups.empty()) {
        ContextParallelStats cs;
        TANDEM_RETURN_IF_ERROR(
            sharded_->generate(params.f32(), prompts, groups, o, stop_ids_, rngs_, out, &cs));
        local.prompt_tokens += cs.prompt_tokens;
        local.decode_steps += cs.decode_steps;
        local.sharded_sequences = cs.sequences;
        local.peak_tokens_per_rank = cs.peak_tokens_per_rank;
        if (cs.peak_kv_bytes > local.kv_peak_bytes && cs.peak_kv_tokens > 0) {
            local.kv_peak_bytes = cs.peak_kv_bytes;
            local.kv_bytes_per_token =
                static_cast<double>(cs.peak_kv_bytes) / static_cast<double>(cs.peak_kv_tokens);
            local.kv_compression =
                local.kv_bytes_per_token / (2.0 * c.num_layers * c.kv_dim() * sizeof(float));
        }
    }
    for (const auto& cp : out) local.generated_tokens += static_cast<int64_t>(cp.tokens.size());
    stats = local;
    return out;
}

}  // namespace tandem::model
