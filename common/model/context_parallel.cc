#include "common/model/context_parallel.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "common/model/decoder_layer.h"
#include "common/model/generate.h"
#include "common/model/layers.h"
#include "common/model/params.h"
#include "kernels/ring/in_process_transport.h"
#include "kernels/ring/ring_attention.h"
#include "kernels/ring/sharded_decode.h"

namespace tandem::model {

namespace {

float* sized_nonempty(std::vector<float>& v, int64_t n) {
    // Never empty, so a rank with no rows still passes valid pointers to the collectives.
    const int64_t want = std::max<int64_t>(n, 1);
    if (static_cast<int64_t>(v.size()) < want) v.resize(static_cast<size_t>(want));
    return v.data();
}

// Runs one function on every rank: rank 0 on the calling thread, the others on threads owned
// here, and returns when all are done. Owned by the driver thread.
class RankThreads {
public:
    explicit RankThreads(int ranks) : status_(static_cast<size_t>(ranks)) {
        for (int r = 1; r < ranks; ++r) threads_.emplace_back([this, r] { loop(r); });
    }
    ~RankThreads() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        start_.notify_all();
        for (auto& t : threads_) t.join();
    }
    RankThreads(const RankThreads&) = delete;
    RankThreads& operator=(const RankThreads&) = delete;

    // Every rank's error is kept; the first failing rank's is returned, prefixed by its rank.
    Status run(const std::function<Status(int)>& fn) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            fn_ = &fn;
            pending_ = static_cast<int>(threads_.size());
            ++generation_;
        }
        start_.notify_all();
        status_[0] = fn(0);
        {
            std::unique_lock<std::mutex> lock(mu_);
            done_.wait(lock, [&] { return pending_ == 0; });
            fn_ = nullptr;
        }
        for (size_t r = 0; r < status_.size(); ++r) {
            if (!status_[r].ok()) {
                return Status(status_[r].code(),
                              fmt::format("context parallel rank {}: {}", r, status_[r].message()));
            }
        }
        return Status();
    }

private:
    void loop(int rank) {
        uint64_t seen = 0;
        while (true) {
            const std::function<Status(int)>* fn = nullptr;
            {
                std::unique_lock<std::mutex> lock(mu_);
                start_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                fn = fn_;
            }
            status_[static_cast<size_t>(rank)] = (*fn)(rank);  // published by the lock below
            std::lock_guard<std::mutex> lock(mu_);
            if (--pending_ == 0) done_.notify_one();
        }
    }

    std::mutex mu_;
    std::condition_variable start_, done_;
    const std::function<Status(int)>* fn_ = nullptr;  // guarded by mu_
    uint64_t generation_ = 0;                         // guarded by mu_
    int pending_ = 0;                                 // guarded by mu_
    bool stop_ = false;                               // guarded by mu_
    std::vector<Status> status_;  // slot r written by rank r only, read after pending_ == 0
    std::vector<std::thread> threads_;
};

// K/V rows of one layer of one shard piece, in the order they were stored: f32 rows, or
// quantized pages with their residual window (`paged`, rollout.kv_cache.dtype other than f32).
struct KvRows {
    std::vector<float> k, v;
    std::optional<kernels::KvPagedSequence> paged;
    int64_t rows = 0;

    // n rows at positions pos[0..n) (increasing; runs of consecutive positions share pages).
    Status push(const int32_t* pos, const float* kr, const float* vr, int64_t n, int64_t kvd) {
        rows += n;
        if (!paged) {
            k.insert(k.end(), kr, kr + n * kvd);
            v.insert(v.end(), vr, vr + n * kvd);
            return Status();
        }
        for (int64_t i = 0, j = 0; i < n; i = j) {
            for (j = i + 1; j < n && pos[j] == pos[j - 1] + 1; ++j) {
            }
            TANDEM_RETURN_IF_ERROR(paged->append(pos[i], j - i, kr + i * kvd, vr + i * kvd));
        }
        return Status();
    }
    // Attention of p.tq queries over these rows (p.tk is set here), accumulated as p says.
    Status attend(kernels::AttentionParams p, const float* q, float* o, float* lse) const {
        if (!paged) {
            p.tk = rows;
            return attention_forward<float>(p, q, k.data(), v.data(), o, lse);
        }
        const std::vector<kernels::KvPageRef> pages = paged->pages();
        return kernels::kv_paged_attention_cpu(p, pages, q, o, lse);
    }
    int64_t bytes(int64_t kvd) const {
        return paged ? paged->bytes() : 2 * rows * kvd * static_cast<int64_t>(sizeof(float));
    }
};

// `layers` empty pieces in the shards' format.
Result<std::vector<KvRows>> new_pieces(const std::optional<kernels::KvSequenceConfig>& kv,
                                       int layers) {
    std::vector<KvRows> out(static_cast<size_t>(layers));
    if (!kv) return out;
    for (auto& piece : out) {
        TANDEM_ASSIGN_OR_RETURN(piece.paged, kernels::KvPagedSequence::create(*kv));
    }
    return out;
}

}  // namespace

int ContextShardPlan::owner(int64_t pos) const {
    for (int r = 0; r < ranks; ++r) {
        if (pos < append_end[r]) return r;
    }
    return ranks - 1;
}

int64_t ContextShardPlan::max_rows() const {
    int64_t m = 0;
    for (int r = 0; r < ranks; ++r) {
        m = std::max(m, prefill_rows[r] + append_end[r] - append_begin[r]);
    }
    return m;
}

ContextShardPlan plan_context_shards(kernels::RingLayout layout, int64_t prompt_len,
                                     int64_t context_len, int ranks) {
    ContextShardPlan p;
    p.ranks = ranks;
    p.prefill_len = std::max<int64_t>(prompt_len - 1, 0);
    p.context_len = std::max(context_len, prompt_len);
    p.quota = (p.context_len + ranks - 1) / ranks;
    int64_t next = p.prefill_len;
    for (int r = 0; r < ranks; ++r) {
        const int64_t rows =
            p.prefill_len > 0 ? kernels::ring_shard(layout, p.prefill_len, ranks, r).rows : 0;
        p.prefill_rows.push_back(rows);
        const int64_t room = std::max<int64_t>(p.quota - rows, 0);
        p.append_begin.push_back(next);
        next = std::min(next + room, p.context_len);
        p.append_end.push_back(next);
    }
    return p;
}

Result<ContextParallelRun> ContextParallelRun::create(const ModelConfig& config,
                                                      kernels::RingLayout layout, int ranks,
                                                      std::span<const std::vector<int32_t>> prompts,
                                                      std::span<const ContextParallelGroup> groups,
                                                      const SamplingOptions& o, size_t slots) {
    ContextParallelRun run;
    run.prompts_ = prompts;
    run.groups_ = groups;
    run.max_new_tokens_ = o.max_new_tokens;
    run.group_of_.assign(slots, -1);
    run.tail_of_.assign(slots, -1);
    const int V = config.vocab_size;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        const int32_t pi = groups[gi].prompt;
        if (pi < 0 || static_cast<size_t>(pi) >= prompts.size()) {
            return invalid_argument(fmt::format("context parallel: group {} names prompt {} of {}",
                                                gi, pi, prompts.size()));
        }
        const auto& prompt = prompts[static_cast<size_t>(pi)];
        if (prompt.empty()) return invalid_argument("context parallel: empty prompt");
        // Checked before any rank starts: a rank that failed alone would leave the others
        // waiting on the ring until their timeout.
        const int64_t need = static_cast<int64_t>(prompt.size()) + o.max_new_tokens;
        if (o.max_new_tokens < 1 || need > config.max_seq_len) {
            return invalid_argument(fmt::format(
                "context parallel: prompt {} has {} tokens; with max_new_tokens {} that exceeds "
                "max_seq_len {}",
                pi, prompt.size(), o.max_new_tokens, config.max_seq_len));
        }
        for (const int32_t tok : prompt) {
            if (tok < 0 || tok >= V) {
                return invalid_argument(fmt::format(
                    "context parallel: prompt {} has token {}, outside the vocabulary ({})", pi,
                    tok, V));
            }
        }
        run.plans_.push_back(
            plan_context_shards(layout, static_cast<int64_t>(prompt.size()), need, ranks));
        run.prompt_tokens_ += static_cast<int64_t>(prompt.size());
        for (const int32_t b : groups[gi].members) {
            if (b < 0 || static_cast<size_t>(b) >= slots || run.group_of_[b] >= 0) {
                return invalid_argument(
                    fmt::format("context parallel: bad or repeated completion slot {}", b));
            }
            run.group_of_[b] = static_cast<int32_t>(gi);
        }
    }
    // Tails in group order.
    for (const auto& gr : groups) {
        for (const int32_t b : gr.members) run.tail_of_[b] = run.members_++;
    }
    // The last prompt token of every group: the first decode step, into the shared rows; every
    // member draws from its group's logits row.
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        const auto& prompt = prompts[static_cast<size_t>(groups[gi].prompt)];
        run.items_.push_back(
            {prompt.back(), static_cast<int32_t>(prompt.size() - 1), static_cast<int32_t>(gi), -1});
        for (const int32_t b : groups[gi].members) {
            run.draws_.push_back({b, static_cast<int32_t>(gi)});
        }
    }
    return run;
}

void ContextParallelRun::record(std::span<const SampledToken> picks,
                                std::span<const int32_t> stop_ids, std::span<Completion> out) {
    // `active_` stays in group order, so a group's samples are adjacent in the next step.
    active_.clear();
    for (size_t i = 0; i < draws_.size() && i < picks.size(); ++i) {
        const int32_t b = draws_[i].slot;
        const SampledToken& t = picks[i];
        out[b].tokens.push_back(t.token);
        out[b].logprobs.push_back(t.logprob);
        if (std::binary_search(stop_ids.begin(), stop_ids.end(), t.token)) {
            out[b].finished = true;
        } else if (static_cast<int>(out[b].tokens.size()) < max_new_tokens_) {
            active_.push_back(b);
        }
    }
    items_.clear();
    draws_.clear();
    for (const int32_t b : active_) {
        const int32_t gi = group_of_[b];
        const int64_t pos = static_cast<int64_t>(prompts_[groups_[gi].prompt].size()) +
                            static_cast<int64_t>(out[b].tokens.size()) - 1;
        draws_.push_back({b, static_cast<int32_t>(items_.size())});
        items_.push_back({out[b].tokens.back(), static_cast<int32_t>(pos), gi, tail_of_[b]});
    }
}

struct ContextParallelGenerator::Impl {
    // One rank: its transport, its shards of every sequence, its workspace. Touched only by the
    // thread running that rank inside RankThreads::run.
    struct Rank {
        std::unique_ptr<kernels::RingTransport> transport;
        std::vector<std::vector<KvRows>> shared;  // [group][layer]: prompt positions
        std::vector<std::vector<KvRows>> tails;   // [member][layer]: sampled positions
        std::vector<int32_t> pos;
        std::vector<float> x, a, rstd, q, k, v, o, lse, g, u, table, xs;
        QkNormActs<float> qk;
    };

    ModelConfig config;
    ContextParallelOptions options;
    weights::Layout layout;
    ParamIndex index;
    RopeTable<float> rope;
    std::vector<Rank> ranks;
    RankThreads threads;

    Impl(const ModelConfig& c, const ContextParallelOptions& o)
        : config(c), options(o), ranks(static_cast<size_t>(o.ranks)), threads(o.ranks) {}

    Status prefill(int r, const float* params, const std::vector<int32_t>& prompt,
                   const ContextShardPlan& plan, std::vector<KvRows>& shared);
    // Runs the step's tokens through the model on rank r; rank 0 writes logits [items, vocab].
    Status step(int r, const float* params, std::span<const ContextParallelItem> items,
                std::span<const ContextShardPlan> plans, float* logits);
};

Status ContextParallelGenerator::Impl::prefill(int r, const float* params,
                                               const std::vector<int32_t>& prompt,
                                               const ContextShardPlan& plan,
                                               std::vector<KvRows>& shared) {
    const ModelConfig& c = config;
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    TANDEM_ASSIGN_OR_RETURN(shared, new_pieces(options.kv, c.num_layers));
    for (auto& kv : shared) {
        if (kv.paged) continue;
        kv.k.reserve(static_cast<size_t>(plan.quota * kvd));
        kv.v.reserve(static_cast<size_t>(plan.quota * kvd));
    }
    if (plan.prefill_len == 0) return Status();
    Rank& R = ranks[static_cast<size_t>(r)];
    kernels::RingAttentionConfig rc;
    rc.seq_len = plan.prefill_len;
    rc.hq = c.num_heads;
    rc.hkv = c.num_kv_heads;
    rc.d = c.head_dim();
    rc.scale = kernels::default_softmax_scale(rc.d);
    rc.causal = true;
    rc.layout = options.layout;
    rc.timeout = options.timeout;
    TANDEM_ASSIGN_OR_RETURN(auto ring, kernels::RingAttention::create(rc, *R.transport));
    const kernels::RingShard& shard = ring->shard();
    const int64_t n = shard.rows;
    R.pos.clear();
    for (const auto& seg : shard.segments) {
        for (int64_t i = 0; i < seg.rows; ++i) R.pos.push_back(static_cast<int32_t>(seg.pos0 + i));
    }
    const ParamPtrs<const float> w(index, params);
    float* x = sized_nonempty(R.x, n * h);
    for (int64_t i = 0; i < n; ++i) {
        std::memcpy(x + i * h, w.embed + static_cast<int64_t>(prompt[R.pos[i]]) * h,
                    sizeof(float) * h);
    }
    float* a = sized_nonempty(R.a, n * h);
    float* rstd = sized_nonempty(R.rstd, n);
    float* q = sized_nonempty(R.q, n * qd);
    float* k = sized_nonempty(R.k, n * kvd);
    float* v = sized_nonempty(R.v, n * kvd);
    float* o = sized_nonempty(R.o, n * qd);
    float* lse = sized_nonempty(R.lse, n * c.num_heads);
    float* g = sized_nonempty(R.g, n * inter);
    float* u = sized_nonempty(R.u, n * inter);
    for (int l = 0; l < c.num_layers; ++l) {
        const auto& L = w.layers[l];
        if (n > 0) {
            rmsnorm_forward<float>(n, h, x, L.input_norm, c.rms_norm_eps, a, rstd);
            qkv_forward<float>(c, L, rope, n, R.pos.data(), a, q, k, v, R.qk);
            TANDEM_RETURN_IF_ERROR(shared[l].push(R.pos.data(), k, v, n, kvd));
        }
        // Collective: every rank takes part, even one that holds no rows.
        TANDEM_RETURN_IF_ERROR(ring->forward(q, k, v, o, lse));
        if (n > 0) {
            out_proj_forward<float>(c, L, n, o, x);
            rmsnorm_forward<float>(n, h, x, L.post_norm, c.rms_norm_eps, a, rstd);
            mlp_forward<float>(c, L, n, a, g, u, g, x);
        }
    }
    return Status();
}

Status ContextParallelGenerator::Impl::step(int r, const float* params,
                                            std::span<const ContextParallelItem> items,
                                            std::span<const ContextShardPlan> plans,
                                            float* logits) {
    const ModelConfig& c = config;
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    const int hq = c.num_heads;
    const int64_t m = static_cast<int64_t>(items.size());
    Rank& R = ranks[static_cast<size_t>(r)];
    const ParamPtrs<const float> w(index, params);
    R.pos.resize(static_cast<size_t>(m));
    float* x = sized_nonempty(R.x, m * h);
    for (int64_t i = 0; i < m; ++i) {
        R.pos[i] = items[i].pos;
        std::memcpy(x + i * h, w.embed + static_cast<int64_t>(items[i].token) * h,
                    sizeof(float) * h);
    }
    float* a = sized_nonempty(R.a, m * h);
    float* rstd = sized_nonempty(R.rstd, m);
    float* q = sized_nonempty(R.q, m * qd);
    float* k = sized_nonempty(R.k, m * kvd);
    float* v = sized_nonempty(R.v, m * kvd);
    float* o = sized_nonempty(R.o, m * qd);
    float* lse = sized_nonempty(R.lse, m * hq);
    float* g = sized_nonempty(R.g, m * inter);
    float* u = sized_nonempty(R.u, m * inter);
    const int64_t part = kernels::partial_elems(m, hq, c.head_dim());
    float* table = sized_nonempty(R.table, part * options.ranks);
    float* mine_o = table + static_cast<int64_t>(r) * part;
    float* mine_lse = mine_o + m * qd;
    kernels::AttentionParams base;
    base.hq = hq;
    base.hkv = c.num_kv_heads;
    base.d = c.head_dim();
    base.scale = kernels::default_softmax_scale(base.d);
    base.causal = false;  // every stored key precedes or is the query's own position
    base.accumulate = true;
    base.lse_stride = m;
    for (int l = 0; l < c.num_layers; ++l) {
        const auto& L = w.layers[l];
        rmsnorm_forward<float>(m, h, x, L.input_norm, c.rms_norm_eps, a, rstd);
        qkv_forward<float>(c, L, rope, m, R.pos.data(), a, q, k, v, R.qk);
        for (int64_t i = 0; i < m; ++i) {
            const ContextParallelItem& it = items[i];
            if (plans[it.group].owner(it.pos) != r) continue;
            KvRows& dst = it.tail < 0 ? R.shared[it.group][l] : R.tails[it.tail][l];
            TANDEM_RETURN_IF_ERROR(dst.push(&it.pos, k + i * kvd, v + i * kvd, 1, kvd));
        }
        // This rank's partial: o = 0, lse = -inf is the identity of the merge.
        std::fill(mine_o, mine_o + m * qd, 0.0f);
        std::fill(mine_lse, mine_lse + m * hq, -std::numeric_limits<float>::infinity());
        int64_t i = 0;
        while (i < m) {
            int64_t j = i + 1;
            while (j < m && items[j].group == items[i].group) ++j;
            // The group's shared rows see all of its queries in one call.
            const KvRows& sh = R.shared[items[i].group][l];
            if (sh.rows > 0) {
                kernels::AttentionParams p = base;
                p.tq = j - i;
                TANDEM_RETURN_IF_ERROR(sh.attend(p, q + i * qd, mine_o + i * qd, mine_lse + i));
            }
            for (int64_t t = i; t < j; ++t) {
                if (items[t].tail < 0) continue;
                const KvRows& tl = R.tails[items[t].tail][l];
                if (tl.rows == 0) continue;
                kernels::AttentionParams p = base;
                p.tq = 1;
                TANDEM_RETURN_IF_ERROR(tl.attend(p, q + t * qd, mine_o + t * qd, mine_lse + t));
            }
            i = j;
        }
        TANDEM_RETURN_IF_ERROR(kernels::allgather_merge_partials(
            *R.transport, std::span<float>(table, static_cast<size_t>(part * options.ranks)), m, hq,
            c.head_dim(), o, lse, options.timeout));
        out_proj_forward<float>(c, L, m, o, x);
        rmsnorm_forward<float>(m, h, x, L.post_norm, c.rms_norm_eps, a, rstd);
        mlp_forward<float>(c, L, m, a, g, u, g, x);
    }
    if (r == 0) {
        float* xs = sized_nonempty(R.xs, m * h);
        rmsnorm_forward<float>(m, h, x, w.final_norm, c.rms_norm_eps, xs, rstd);
        linear_forward<float>(m, h, c.vocab_size, xs, w.lm_head, logits);
    }
    return Status();
}

ContextParallelGenerator::ContextParallelGenerator(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
ContextParallelGenerator::~ContextParallelGenerator() = default;

int ContextParallelGenerator::ranks() const { return impl_->options.ranks; }

Result<std::unique_ptr<ContextParallelGenerator>> ContextParallelGenerator::create(
    const ModelConfig& config, const ContextParallelOptions& options) {
    if (options.ranks < 1 || options.ranks > 256) {
        return invalid_argument(fmt::format(
            "context parallel generation needs 1 to 256 ranks (rollout.context_parallel), got {}",
            options.ranks));
    }
    TANDEM_RETURN_IF_ERROR(config.validate());
    if (options.kv) {
        const kernels::KvPageFormat& f = options.kv->sealed;
        if (f.hkv != config.num_kv_heads || f.d != config.head_dim()) {
            return invalid_argument(fmt::format(
                "context parallel: KV format {} does not match the model's {} kv heads of {}",
                kernels::describe(f), config.num_kv_heads, config.head_dim()));
        }
        if (auto s = kernels::KvPagedSequence::create(*options.kv); !s.ok()) {
            return invalid_argument(fmt::format("rollout.kv_cache: {}", s.status().message()));
        }
    }
    auto impl = std::make_unique<Impl>(config, options);
    TANDEM_ASSIGN_OR_RETURN(impl->layout, make_param_layout(config));
    TANDEM_ASSIGN_OR_RETURN(impl->index, ParamIndex::create(config, impl->layout));
    impl->rope = make_rope_table<float>(config);
    auto transports = kernels::make_in_process_ring(options.ranks);
    for (int r = 0; r < options.ranks; ++r) impl->ranks[r].transport = std::move(transports[r]);
    return std::unique_ptr<ContextParallelGenerator>(new ContextParallelGenerator(std::move(impl)));
}

Status ContextParallelGenerator::generate(const float* params,
                                          std::span<const std::vector<int32_t>> prompts,
                                          std::span<const ContextParallelGroup> groups,
                                          const SamplingOptions& o,
                                          std::span<const int32_t> stop_ids, std::span<Rng> rngs,
                                          std::span<Completion> out, ContextParallelStats* stats) {
    Impl& I = *impl_;
    const int V = I.config.vocab_size;
    ContextParallelStats local;
    if (groups.empty()) {
        if (stats) *stats = local;
        return Status();
    }
    const int64_t ngroups = static_cast<int64_t>(groups.size());
    TANDEM_ASSIGN_OR_RETURN(ContextParallelRun run,
                            ContextParallelRun::create(I.config, I.options.layout, I.options.ranks,
                                                       prompts, groups, o, out.size()));
    const std::vector<ContextShardPlan>& plans = run.plans();
    local.prompt_tokens = run.prompt_tokens();
    for (auto& R : I.ranks) {
        R.shared.assign(static_cast<size_t>(ngroups), {});
        R.tails.clear();
        for (int32_t t = 0; t < run.members(); ++t) {
            TANDEM_ASSIGN_OR_RETURN(auto tail, new_pieces(I.options.kv, I.config.num_layers));
            R.tails.push_back(std::move(tail));
        }
    }
    // KV bytes of every rank's shards (read between steps, when no rank runs).
    const int64_t kvd = I.config.kv_dim();
    auto note_kv = [&] {
        int64_t bytes = 0, tokens = 0;
        for (const auto& R : I.ranks) {
            for (const auto* pieces : {&R.shared, &R.tails}) {
                for (const auto& layers : *pieces) {
                    for (const auto& piece : layers) bytes += piece.bytes(kvd);
                    if (!layers.empty()) tokens += layers[0].rows;
                }
            }
        }
        if (bytes > local.peak_kv_bytes) {
            local.peak_kv_bytes = bytes;
            local.peak_kv_tokens = tokens;
        }
    };
    // Ring prefill of every prompt but its last token, group by group (the same order on every
    // rank, so the collectives pair up).
    TANDEM_RETURN_IF_ERROR(I.threads.run([&](int r) -> Status {
        for (int64_t gi = 0; gi < ngroups; ++gi) {
            TANDEM_RETURN_IF_ERROR(
                I.prefill(r, params, prompts[groups[gi].prompt], plans[gi], I.ranks[r].shared[gi]));
        }
        return Status();
    }));
    // Decode: the first step is every group's last prompt token, then every live sample's.
    std::vector<float> logits;
    Sampler sampler;
    std::vector<SampledToken> picks;
    for (bool first = true; !run.done(); first = false) {
        const std::vector<ContextParallelItem>& items = run.items();
        logits.resize(items.size() * static_cast<size_t>(V));
        TANDEM_RETURN_IF_ERROR(
            I.threads.run([&](int r) { return I.step(r, params, items, plans, logits.data()); }));
        note_kv();
        if (!first) ++local.decode_steps;
        picks.clear();
        for (const ContextParallelRun::Draw& d : run.draws()) {
            picks.push_back(sampler.sample(logits.data() + static_cast<int64_t>(d.row) * V, V, o,
                                           rngs[d.slot]));
        }
        run.record(picks, stop_ids, out);
    }
    for (int64_t gi = 0; gi < ngroups; ++gi) {
        for (const int32_t b : groups[gi].members) {
            local.generated_tokens += static_cast<int64_t>(out[b].tokens.size());
            ++local.sequences;
            for (const auto& R : I.ranks) {
                local.peak_tokens_per_rank =
                    std::max(local.peak_tokens_per_rank,
                             R.shared[gi][0].rows + R.tails[run.tail_of(b)][0].rows);
            }
        }
    }
    for (auto& R : I.ranks) {
        R.shared.clear();
        R.tails.clear();
    }
    if (stats) *stats = local;
    return Status();
}

}  // namespace tandem::model
