#include "common/gpu/generate_loop.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/gpu/sampling_reference.h"
#include "common/model/kv_admission.h"

namespace tandem::gpu {

namespace {

Status check(const model::ModelConfig& c, const std::string& job,
             std::span<const std::vector<int32_t>> prompts, int group_size,
             const model::SamplingOptions& o) {
    if (group_size < 1) {
        return invalid_argument(
            fmt::format("job {}: device generation: group_size must be >= 1", job));
    }
    if (o.max_new_tokens < 1) {
        return invalid_argument(
            fmt::format("job {}: device generation: max_new_tokens must be >= 1", job));
    }
    if (!(o.temperature >= 0.0) || !(o.top_p > 0.0 && o.top_p <= 1.0) || o.top_k < 0) {
        return invalid_argument(fmt::format(
            "job {}: device generation: sampling needs temperature >= 0, top_p in (0, 1], "
            "top_k >= 0; got {}, {}, {}",
            job, o.temperature, o.top_p, o.top_k));
    }
    for (size_t p = 0; p < prompts.size(); ++p) {
        if (prompts[p].empty()) {
            return invalid_argument(
                fmt::format("job {}: device generation: prompt {} is empty", job, p));
        }
        const int64_t need = static_cast<int64_t>(prompts[p].size()) + o.max_new_tokens;
        if (need > c.max_seq_len) {
            return invalid_argument(fmt::format(
                "job {}: device generation: prompt {} has {} tokens; with max_new_tokens {} that "
                "exceeds max_seq_len {}",
                job, p, prompts[p].size(), o.max_new_tokens, c.max_seq_len));
        }
        for (size_t i = 0; i < prompts[p].size(); ++i) {
            const int32_t t = prompts[p][i];
            if (t < 0 || t >= c.vocab_size) {
                return invalid_argument(fmt::format(
                    "job {}: device generation: prompt {} token {} is {}, outside the vocabulary "
                    "({})",
                    job, p, i, t, c.vocab_size));
            }
        }
    }
    return Status();
}

}  // namespace

// What run() hands its waves.
struct GenerationLoop::Call {
    const model::ModelConfig& config;
    std::span<const std::vector<int32_t>> prompts;
    int group = 1;
    const model::SamplingOptions& o;
    std::vector<int64_t> shared;  // [prompts]: tokens of the cached prefix it forks (0: none)
    StepLayout layout;
    std::vector<model::Completion> out;
    GenerationCounts st;
};

void GenerationLoop::drop_prefix() {
    if (cached_) {
        if (seqs_) seqs_->release(prefix_);
        ++stats_.evictions;
        stats_.bytes = 0;
    }
    prefix_ = PagedSeq{};
    cached_ = false;
}

Result<std::vector<model::Completion>> GenerationLoop::run(
    GenerationBackend& backend, const model::ModelConfig& config,
    std::span<const std::vector<int32_t>> prompts, int group_size, const model::SamplingOptions& o,
    GenerationCounts* counts) {
    TANDEM_RETURN_IF_ERROR(check(config, options_.job, prompts, group_size, o));
    const int64_t P = std::ssize(prompts), B = P * group_size;
    const int bt = options_.block_tokens;
    Call call{config, prompts, group_size, o, {}, {}, {}, {}};
    call.out.resize(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
        call.out[static_cast<size_t>(b)].prompt = static_cast<int32_t>(b / group_size);
        call.out[static_cast<size_t>(b)].sample = static_cast<int32_t>(b % group_size);
    }
    if (B == 0) {
        if (counts) *counts = std::move(call.st);
        return std::move(call.out);
    }
    const int64_t evictions0 = stats_.evictions;
    if (!clean_) {
        // A failed call may have left sequences in the pool: start over with an empty one.
        drop_prefix();
        seqs_.reset();
        capacity_ = 0;
    }
    // The system prompt of this call (model::SystemPromptCache::prepare's rules); a cached
    // prefix of other tokens, another version, no version or replaced weights is dropped.
    std::vector<int32_t> tokens = system_prompt_;
    if (tokens.empty() && options_.prefix_tokens > 0) {
        for (const auto& p : prompts) {
            if (std::ssize(p) > options_.prefix_tokens) {
                tokens.assign(p.begin(), p.begin() + options_.prefix_tokens);
                break;
            }
        }
    }
    if (tokens != prefix_tokens_ || version_ != prefix_version_ || version_ < 0 || stale_) {
        drop_prefix();
    }
    stale_ = false;
    prefix_tokens_ = std::move(tokens);
    prefix_version_ = version_;
    const int64_t n = std::ssize(prefix_tokens_);
    call.shared.assign(static_cast<size_t>(P), 0);
    for (int64_t p = 0; p < P; ++p) {
        const auto& prompt = prompts[static_cast<size_t>(p)];
        if (n > 0 && std::ssize(prompt) > n &&
            std::equal(prefix_tokens_.begin(), prefix_tokens_.end(), prompt.begin())) {
            call.shared[static_cast<size_t>(p)] = n;
        }
    }
    // Admission (the CPU engine's plan over the pool's block bytes), then the pool: the
    // prefix's blocks and the largest wave's worst case.
    const int64_t prefix_blocks = (n + bt - 1) / bt;
    const int64_t pinned = prefix_blocks * options_.block_bytes;
    if (options_.budget_bytes > 0 && options_.block_bytes <= 0) {
        return internal_error(fmt::format(
            "job {}: device generation: a KV budget needs the pool's block bytes", options_.job));
    }
    const model::KvBlockBytes sizes{bt, options_.block_bytes, options_.block_bytes, 0};
    TANDEM_ASSIGN_OR_RETURN(
        const auto waves,
        model::admission_waves(sizes, prompts, group_size, o.max_new_tokens, options_.budget_bytes,
                               options_.job, true, pinned, call.shared));
    int64_t wave_blocks = 0, max_rows = 0;
    for (const auto& [first, count] : waves) {
        const auto sub = prompts.subspan(static_cast<size_t>(first), static_cast<size_t>(count));
        const auto shared =
            std::span(call.shared).subspan(static_cast<size_t>(first), static_cast<size_t>(count));
        wave_blocks =
            std::max(wave_blocks, worst_case_blocks(sub, group_size, o.max_new_tokens, bt, shared));
        max_rows = std::max(max_rows, count * group_size);
    }
    // Shapes of this call: the widest block table (a power of two, so captured steps are reused
    // across calls whose prompts differ a little) and the decode rows.
    int64_t longest = 0;
    for (const auto& p : prompts) longest = std::max<int64_t>(longest, std::ssize(p));
    int width = 1;
    while (width < (longest + o.max_new_tokens + bt - 1) / bt) width <<= 1;
    const int64_t blocks = wave_blocks + prefix_blocks;
    if (blocks > capacity_ || !seqs_) {
        drop_prefix();  // a larger pool starts empty
        capacity_ = std::max(blocks, capacity_);
        seqs_ = std::make_unique<PagedSequences>(bt, capacity_);
    }
    clean_ = false;  // until the call ends: the pool holds its sequences from here on
    TANDEM_ASSIGN_OR_RETURN(call.layout, backend.reserve(capacity_, max_rows, width));
    seqs_->reset_peak();
    // The prefix, when nothing valid is cached: one prefill of its own, nothing sampled.
    if (n > 0 && !cached_) {
        PrefillBatch batch;
        batch.lens.push_back(n);
        batch.tokens = prefix_tokens_;
        for (int64_t i = 0; i < n; ++i) batch.positions.push_back(static_cast<int32_t>(i));
        TANDEM_ASSIGN_OR_RETURN(prefix_, seqs_->create(n, batch.slots));
        cached_ = true;
        std::vector<int32_t> tok;
        std::vector<float> lp;
        TANDEM_RETURN_IF_ERROR(backend.prefill(batch, tok, lp));
        ++stats_.prefills;
        stats_.prefill_tokens += n;
        stats_.bytes = pinned;
    }
    for (const auto& [first, count] : waves) {
        TANDEM_RETURN_IF_ERROR(run_wave(backend, call, first, count));
        call.st.wave_prompts.push_back(count);
    }
    GenerationCounts& st = call.st;
    st.peak_blocks = seqs_->pool().peak();
    st.admission_waits = P - waves.front().second;
    for (const int64_t s : call.shared) st.prefix_hits += s > 0;
    st.prefix_bytes = stats_.bytes;
    stats_.hits += st.prefix_hits;
    st.evictions = stats_.evictions - evictions0;
    for (const auto& cp : call.out) st.generated_tokens += std::ssize(cp.tokens);
    clean_ = true;
    if (counts) *counts = std::move(st);
    return std::move(call.out);
}

Status GenerationLoop::run_wave(GenerationBackend& backend, Call& call, int64_t first,
                                int64_t count) {
    const auto& prompts = call.prompts;
    const model::SamplingOptions& o = call.o;
    const int group_size = call.group;
    const StepLayout& layout = call.layout;
    PagedSequences& seqs = *seqs_;
    GenerationCounts& st = call.st;
    const int64_t end = first + count, B = count * group_size, b0 = first * group_size;
    const auto is_stop = [&](int32_t t) {
        return std::binary_search(options_.stop_ids.begin(), options_.stop_ids.end(), t);
    };
    const auto completion = [&](int64_t b) -> model::Completion& {
        return call.out[static_cast<size_t>(b0 + b)];
    };

    // Prefill, whole prompts at a time (those forking the cached prefix apart from the others);
    // then fork each prompt into its samples.
    std::vector<PagedSeq> parents(static_cast<size_t>(count)), samples(static_cast<size_t>(B));
    std::vector<int32_t> tok, copies;
    std::vector<float> lp;
    for (int64_t p0 = first; p0 < end;) {
        PrefillBatch batch;
        batch.group = group_size;
        const bool paged = call.shared[static_cast<size_t>(p0)] > 0;
        if (paged) batch.width = layout.width;
        copies.clear();
        int64_t p1 = p0;
        while (p1 < end && (call.shared[static_cast<size_t>(p1)] > 0) == paged) {
            const auto& prompt = prompts[static_cast<size_t>(p1)];
            const int64_t skip = call.shared[static_cast<size_t>(p1)];
            const int64_t rows = std::ssize(prompt) - skip;
            if (p1 > p0 && std::ssize(batch.tokens) + rows > options_.max_prefill_tokens) break;
            PagedSeq& parent = parents[static_cast<size_t>(p1 - first)];
            batch.lens.push_back(rows);
            batch.tokens.insert(batch.tokens.end(), prompt.begin() + skip, prompt.end());
            for (int64_t i = skip; i < std::ssize(prompt); ++i) {
                batch.positions.push_back(static_cast<int32_t>(i));
            }
            if (paged) {
                // The prefix's full blocks shared, its partial last block copied, then the rest.
                TANDEM_ASSIGN_OR_RETURN(parent, seqs.fork(prefix_, copies));
                for (int64_t i = 0; i < rows; ++i) {
                    TANDEM_ASSIGN_OR_RETURN(const int32_t slot, seqs.append(parent));
                    batch.slots.push_back(slot);
                }
                const size_t at = batch.tables.size();
                batch.tables.resize(at + static_cast<size_t>(layout.width), 0);
                std::copy(parent.blocks.begin(), parent.blocks.end(), batch.tables.begin() + at);
            } else {
                TANDEM_ASSIGN_OR_RETURN(parent, seqs.create(rows, batch.slots));
            }
            for (int g = 0; g < group_size; ++g) {
                batch.streams.push_back(sample_stream(o.seed, p1, g));
            }
            ++p1;
        }
        if (!copies.empty()) TANDEM_RETURN_IF_ERROR(backend.copy_blocks(copies));
        TANDEM_RETURN_IF_ERROR(backend.prefill(batch, tok, lp));
        for (int64_t b = 0; b < (p1 - p0) * group_size; ++b) {
            model::Completion& cp = completion((p0 - first) * group_size + b);
            cp.tokens.push_back(tok[static_cast<size_t>(b)]);
            cp.logprobs.push_back(lp[static_cast<size_t>(b)]);
        }
        st.prompt_tokens += std::ssize(batch.tokens);
        p0 = p1;
    }
    copies.clear();
    for (int64_t b = 0; b < B; ++b) {
        TANDEM_ASSIGN_OR_RETURN(samples[static_cast<size_t>(b)],
                                seqs.fork(parents[static_cast<size_t>(b / group_size)], copies));
    }
    for (auto& p : parents) seqs.release(p);
    if (!copies.empty()) TANDEM_RETURN_IF_ERROR(backend.copy_blocks(copies));
    std::vector<int64_t> active;
    for (int64_t b = 0; b < B; ++b) {
        model::Completion& cp = completion(b);
        if (is_stop(cp.tokens.back())) {
            cp.finished = true;
        } else if (o.max_new_tokens > 1) {
            active.push_back(b);
        }
    }
    // Decode: every live sample one token a step, in the smallest bucket that holds them.
    std::vector<StepRow> live;
    std::vector<int32_t> step;
    while (!active.empty()) {
        live.clear();
        for (const int64_t b : active) {
            PagedSeq& seq = samples[static_cast<size_t>(b)];
            const model::Completion& cp = completion(b);
            StepRow row;
            row.token = cp.tokens.back();
            TANDEM_ASSIGN_OR_RETURN(row.slot, seqs.append(seq));
            row.seq = &seq;
            row.stream = sample_stream(o.seed, cp.prompt, cp.sample);
            row.step = static_cast<int32_t>(cp.tokens.size());
            live.push_back(row);
        }
        const int64_t rows = decode_bucket(std::ssize(live), layout.max_rows);
        TANDEM_RETURN_IF_ERROR(pack_step(layout, rows, live, step));
        TANDEM_RETURN_IF_ERROR(backend.decode(rows, step, std::ssize(live), tok, lp));
        ++st.decode_steps;
        if (std::ssize(st.bucket_steps) <= rows) st.bucket_steps.resize(rows + 1, 0);
        ++st.bucket_steps[static_cast<size_t>(rows)];
        size_t keep = 0;
        for (size_t i = 0; i < active.size(); ++i) {
            const int64_t b = active[i];
            model::Completion& cp = completion(b);
            cp.tokens.push_back(tok[i]);
            cp.logprobs.push_back(lp[i]);
            const bool stop = is_stop(tok[i]);
            if (stop) cp.finished = true;
            if (!stop && static_cast<int>(cp.tokens.size()) < o.max_new_tokens) {
                active[keep++] = b;
            } else {
                seqs.release(samples[static_cast<size_t>(b)]);  // its blocks are free at once
            }
        }
        active.resize(keep);
    }
    for (auto& q : samples) seqs.release(q);
    return Status();
}

Result<std::vector<model::Completion>> run_generation(
    GenerationBackend& backend, const model::ModelConfig& config,
    const GenerationLoopOptions& options, std::span<const std::vector<int32_t>> prompts,
    int group_size, const model::SamplingOptions& o, GenerationCounts* counts) {
    GenerationLoop loop(options);
    return loop.run(backend, config, prompts, group_size, o, counts);
}

}  // namespace tandem::gpu
