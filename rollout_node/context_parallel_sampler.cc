#include "rollout_node/context_parallel_sampler.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "common/model/rng.h"
#include "rollout_node/context_parallel_plan.h"

namespace tandem::rollout {

Status run_on_ranks(int ranks, const std::function<Status(int)>& fn) {
    std::vector<Status> status(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(ranks));
    for (int r = 0; r < ranks; ++r) {
        threads.emplace_back([&, r] { status[static_cast<size_t>(r)] = fn(r); });
    }
    for (auto& t : threads) t.join();
    // Every failing rank is named: one rank's error often leaves the others waiting on it until
    // their timeout, and the first by rank need not be the cause.
    Status first;
    std::string all;
    for (int r = 0; r < ranks; ++r) {
        const Status& s = status[static_cast<size_t>(r)];
        if (s.ok()) continue;
        if (first.ok()) first = s;
        all += fmt::format("{}rank {}: {}", all.empty() ? "" : "; ", r, s.message());
    }
    if (first.ok()) return first;
    return Status(first.code(), all);
}

namespace {

// Owned by the rollout's generation thread; each call runs the ranks' work on threads of its own.
class ContextParallelSampler final : public CompletionSampler, public DeviceWeightSink {
public:
    ContextParallelSampler(std::unique_ptr<CompletionSampler> single,
                           std::unique_ptr<ContextParallelRanks> ranks,
                           ContextParallelSamplerOptions options)
        : single_(std::move(single)), ranks_(std::move(ranks)), o_(std::move(options)) {
        stop_ids_ = o_.stop_tokens;
        stop_ids_.push_back(o_.eos_token);
        std::erase_if(stop_ids_, [](int32_t id) { return id < 0; });
        std::sort(stop_ids_.begin(), stop_ids_.end());
        stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
    }

    const char* device() const override { return "cuda"; }
    DeviceWeightSink* device_weights() override { return this; }

    Status load_device(Version version, std::span<const DevicePiece> pieces) override {
        loaded_ = -1;
        TANDEM_RETURN_IF_ERROR(usable());
        TANDEM_RETURN_IF_ERROR(check_device_pieces(version, pieces, o_.total_bytes));
        TANDEM_RETURN_IF_ERROR(single_->device_weights()->load_device(version, pieces));
        const int P = ranks_->size();
        Status s = run_on_ranks(1, [&](int) -> Status {
            TANDEM_RETURN_IF_ERROR(ranks_->enter(0));
            return ranks_->load_first(pieces);
        });
        if (s.ok() && P > 1) {
            s = run_on_ranks(P, [&](int r) -> Status {
                if (r == 0) return Status();  // the source
                TANDEM_RETURN_IF_ERROR(ranks_->enter(r));
                return ranks_->copy_from_first(r);
            });
        }
        if (!s.ok()) {
            return s.with_context(fmt::format(
                "the rollout's context-parallel ranks loading weights version {}", version));
        }
        loaded_ = static_cast<int64_t>(version);
        return Status();
    }

    Result<std::vector<model::Completion>> generate(const float*, int64_t version,
                                                    std::span<const std::vector<int32_t>> prompts,
                                                    int group_size,
                                                    const model::SamplingOptions& options,
                                                    model::GenerateStats* stats) override {
        TANDEM_RETURN_IF_ERROR(usable());
        if (version != loaded_) {
            return internal_error(
                fmt::format("the rollout on cuda: asked to generate with weights version {}, the "
                            "context-parallel ranks hold {}",
                            version, loaded_ < 0 ? std::string("none") : std::to_string(loaded_)));
        }
        if (group_size < 1) return invalid_argument("generate: group_size must be >= 1");
        const int P = ranks_->size();
        TANDEM_ASSIGN_OR_RETURN(ContextParallelSplit split,
                                split_context_parallel(prompts, options.max_new_tokens,
                                                       o_.max_tokens_per_device, P, o_.job));
        const int64_t G = group_size;
        const size_t B = prompts.size() * static_cast<size_t>(G);
        std::vector<model::Completion> out(B);
        model::GenerateStats total;
        if (!split.single.empty()) {
            std::vector<std::vector<int32_t>> sub;
            for (const int p : split.single) sub.push_back(prompts[static_cast<size_t>(p)]);
            model::GenerateStats gs;
            TANDEM_ASSIGN_OR_RETURN(
                auto part, single_->generate(nullptr, version, sub, group_size, options, &gs));
            if (part.size() != sub.size() * static_cast<size_t>(G)) {
                return internal_error(fmt::format(
                    "the rollout on cuda: the single-device generator returned {} completions "
                    "for {} prompts x {} samples",
                    part.size(), sub.size(), G));
            }
            for (model::Completion& c : part) {
                const int p = split.single[static_cast<size_t>(c.prompt)];
                c.prompt = p;
                out[static_cast<size_t>(p * G + c.sample)] = std::move(c);
            }
            total = gs;
        }
        if (!split.sharded.empty()) {
            TANDEM_RETURN_IF_ERROR(
                sharded(prompts, split.sharded, group_size, options, out, total));
        }
        total.generated_tokens = 0;
        for (const model::Completion& c : out) {
            total.generated_tokens += static_cast<int64_t>(c.tokens.size());
        }
        if (stats) *stats = total;
        return out;
    }

private:
    Status usable() const {
        if (broken_.ok()) return broken_;
        return unavailable(fmt::format(
            "the rollout's context-parallel ring failed earlier and cannot be used again: {}",
            broken_.message()));
    }

    // The sharded prompts on every rank; rank 0's completions into `out`.
    Status sharded(std::span<const std::vector<int32_t>> prompts, const std::vector<int>& which,
                   int group_size, const model::SamplingOptions& o,
                   std::vector<model::Completion>& out, model::GenerateStats& total) {
        const int P = ranks_->size();
        const size_t B = out.size();
        std::vector<model::ContextParallelGroup> groups;
        std::vector<model::Rng> rngs(B);
        for (const int p : which) {
            model::ContextParallelGroup g;
            g.prompt = p;
            for (int s = 0; s < group_size; ++s) {
                const int32_t b = p * group_size + s;
                g.members.push_back(b);
                rngs[static_cast<size_t>(b)].reseed(
                    model::mix_seed(o.seed, static_cast<uint64_t>(p), static_cast<uint64_t>(s)));
                model::Completion& c = out[static_cast<size_t>(b)];
                c = model::Completion{};
                c.prompt = p;
                c.sample = s;
            }
            groups.push_back(std::move(g));
        }
        std::vector<std::vector<model::Completion>> got(static_cast<size_t>(P));
        std::vector<model::ContextParallelStats> cs(static_cast<size_t>(P));
        Status s = run_on_ranks(P, [&](int r) -> Status {
            TANDEM_RETURN_IF_ERROR(ranks_->enter(r));
            // Only rank 0 draws from the streams; the others get copies of their own.
            std::vector<model::Rng> mine = rngs;
            got[static_cast<size_t>(r)] = out;
            return ranks_->rank(r).generate(prompts, groups, o, stop_ids_, mine,
                                            got[static_cast<size_t>(r)],
                                            &cs[static_cast<size_t>(r)]);
        });
        if (!s.ok()) {
            broken_ = s;
            return s.with_context("the rollout's context-parallel generation");
        }
        for (int r = 1; r < P; ++r) {
            for (const model::ContextParallelGroup& g : groups) {
                for (const int32_t b : g.members) {
                    const model::Completion& a = got[0][static_cast<size_t>(b)];
                    const model::Completion& c =
                        got[static_cast<size_t>(r)][static_cast<size_t>(b)];
                    if (a.tokens != c.tokens || a.logprobs.size() != c.logprobs.size() ||
                        std::memcmp(a.logprobs.data(), c.logprobs.data(),
                                    a.logprobs.size() * sizeof(float)) != 0) {
                        broken_ = internal_error(fmt::format(
                            "context-parallel rank {} returned other completions than rank 0 "
                            "(prompt {}, sample {})",
                            r, a.prompt, a.sample));
                        return broken_;
                    }
                }
            }
        }
        for (const model::ContextParallelGroup& g : groups) {
            for (const int32_t b : g.members) {
                out[static_cast<size_t>(b)] = std::move(got[0][static_cast<size_t>(b)]);
            }
        }
        const model::ContextParallelStats& c0 = cs[0];
        total.prompt_tokens += c0.prompt_tokens;
        total.decode_steps += c0.decode_steps;
        total.sharded_sequences = c0.sequences;
        total.peak_tokens_per_rank = c0.peak_tokens_per_rank;
        if (c0.peak_kv_bytes > total.kv_peak_bytes && c0.peak_kv_tokens > 0) {
            total.kv_peak_bytes = c0.peak_kv_bytes;
            total.kv_bytes_per_token =
                static_cast<double>(c0.peak_kv_bytes) / static_cast<double>(c0.peak_kv_tokens);
            if (o_.kv_f32_bytes_per_token > 0) {
                total.kv_compression =
                    total.kv_bytes_per_token / static_cast<double>(o_.kv_f32_bytes_per_token);
            }
        }
        return Status();
    }

    std::unique_ptr<CompletionSampler> single_;
    std::unique_ptr<ContextParallelRanks> ranks_;
    ContextParallelSamplerOptions o_;
    std::vector<int32_t> stop_ids_;  // eos_token and stop_tokens, sorted, unique, >= 0
    int64_t loaded_ = -1;
    Status broken_;  // a failed collective: the ring cannot be trusted again
};

}  // namespace

Result<std::unique_ptr<CompletionSampler>> make_context_parallel_sampler(
    std::unique_ptr<CompletionSampler> single, std::unique_ptr<ContextParallelRanks> ranks,
    ContextParallelSamplerOptions options) {
    if (!single || single->device_weights() == nullptr) {
        return invalid_argument(fmt::format(
            "job {}: context-parallel rollout: the single-device sampler takes no device weights",
            options.job));
    }
    if (!ranks || ranks->size() < 1) {
        return invalid_argument(
            fmt::format("job {}: context-parallel rollout: no ranks", options.job));
    }
    return std::unique_ptr<CompletionSampler>(std::make_unique<ContextParallelSampler>(
        std::move(single), std::move(ranks), std::move(options)));
}

}  // namespace tandem::rollout
