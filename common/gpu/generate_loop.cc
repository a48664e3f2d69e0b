#include "common/gpu/generate_loop.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/gpu/sampling_reference.h"

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

Result<std::vector<model::Completion>> run_generation(
    GenerationBackend& backend, const model::ModelConfig& config,
    const GenerationLoopOptions& options, std::span<const std::vector<int32_t>> prompts,
    int group_size, const model::SamplingOptions& o, GenerationCounts* counts) {
    TANDEM_RETURN_IF_ERROR(check(config, options.job, prompts, group_size, o));
    const int64_t P = std::ssize(prompts), B = P * group_size;
    const int bt = options.block_tokens;
    GenerationCounts st;
    std::vector<model::Completion> out(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
        out[static_cast<size_t>(b)].prompt = static_cast<int32_t>(b / group_size);
        out[static_cast<size_t>(b)].sample = static_cast<int32_t>(b % group_size);
    }
    if (B == 0) {
        if (counts) *counts = st;
        return out;
    }
    // Shapes of this call: the pool, the widest block table (a power of two, so captured steps
    // are reused across calls whose prompts differ a little) and the decode rows.
    int64_t longest = 0;
    for (const auto& p : prompts) longest = std::max<int64_t>(longest, std::ssize(p));
    int width = 1;
    while (width < (longest + o.max_new_tokens + bt - 1) / bt) width <<= 1;
    const int64_t blocks = worst_case_blocks(prompts, group_size, o.max_new_tokens, bt);
    TANDEM_ASSIGN_OR_RETURN(const StepLayout layout, backend.reserve(blocks, B, width));
    PagedSequences seqs(bt, blocks);
    const auto is_stop = [&](int32_t t) {
        return std::binary_search(options.stop_ids.begin(), options.stop_ids.end(), t);
    };

    // Prefill, whole prompts at a time; then fork each prompt into its samples.
    std::vector<PagedSeq> parents(static_cast<size_t>(P)), samples(static_cast<size_t>(B));
    std::vector<int32_t> tok;
    std::vector<float> lp;
    for (int64_t p0 = 0; p0 < P;) {
        PrefillBatch batch;
        batch.group = group_size;
        int64_t p1 = p0;
        while (p1 < P && (p1 == p0 ||
                          std::ssize(batch.tokens) + std::ssize(prompts[static_cast<size_t>(p1)]) <=
                              options.max_prefill_tokens)) {
            const auto& prompt = prompts[static_cast<size_t>(p1)];
            batch.lens.push_back(std::ssize(prompt));
            batch.tokens.insert(batch.tokens.end(), prompt.begin(), prompt.end());
            for (size_t i = 0; i < prompt.size(); ++i) {
                batch.positions.push_back(static_cast<int32_t>(i));
            }
            TANDEM_ASSIGN_OR_RETURN(parents[static_cast<size_t>(p1)],
                                    seqs.create(std::ssize(prompt), batch.slots));
            for (int g = 0; g < group_size; ++g) {
                batch.streams.push_back(sample_stream(o.seed, p1, g));
            }
            ++p1;
        }
        TANDEM_RETURN_IF_ERROR(backend.prefill(batch, tok, lp));
        for (int64_t b = 0; b < (p1 - p0) * group_size; ++b) {
            model::Completion& cp = out[static_cast<size_t>(p0 * group_size + b)];
            cp.tokens.push_back(tok[static_cast<size_t>(b)]);
            cp.logprobs.push_back(lp[static_cast<size_t>(b)]);
        }
        st.prompt_tokens += std::ssize(batch.tokens);
        p0 = p1;
    }
    std::vector<int32_t> copies;
    for (int64_t b = 0; b < B; ++b) {
        TANDEM_ASSIGN_OR_RETURN(samples[static_cast<size_t>(b)],
                                seqs.fork(parents[static_cast<size_t>(b / group_size)], copies));
    }
    for (auto& p : parents) seqs.release(p);
    if (!copies.empty()) TANDEM_RETURN_IF_ERROR(backend.copy_blocks(copies));
    std::vector<int64_t> active;
    for (int64_t b = 0; b < B; ++b) {
        model::Completion& cp = out[static_cast<size_t>(b)];
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
            const model::Completion& cp = out[static_cast<size_t>(b)];
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
            model::Completion& cp = out[static_cast<size_t>(b)];
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
    st.peak_blocks = seqs.pool().peak();
    for (auto& q : samples) seqs.release(q);
    for (const auto& cp : out) st.generated_tokens += std::ssize(cp.tokens);
    if (counts) *counts = std::move(st);
    return out;
}

}  // namespace tandem::gpu
