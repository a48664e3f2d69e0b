#include "common/gpu/context_parallel_device.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "kernels/merge.h"
#include "kernels/ring/ring_attention.h"

namespace tandem::gpu {

// K/V rows of one layer of one shard piece, in the order they were stored (as the CPU
// generator's KvRows), in the ring ops' memory with a fixed capacity.
struct DeviceContextParallelRank::Piece {
    std::shared_ptr<void> k, v;  // [capacity, hkv, d] of the ops' dtype
    int64_t rows = 0;
    int64_t capacity = 0;
};

namespace {

char* at(const std::shared_ptr<void>& p, size_t offset) {
    return static_cast<char*>(p.get()) + offset;
}
char* at(void* p, size_t offset) { return static_cast<char*>(p) + offset; }

}  // namespace

DeviceContextParallelRank::DeviceContextParallelRank(const model::ModelConfig& config,
                                                     const DeviceContextParallelOptions& options,
                                                     kernels::RingTransport& transport,
                                                     ContextParallelRankOps& ops)
    : config_(config), options_(options), transport_(transport), ops_(ops) {}

DeviceContextParallelRank::~DeviceContextParallelRank() = default;

Result<std::unique_ptr<DeviceContextParallelRank>> DeviceContextParallelRank::create(
    const model::ModelConfig& config, const DeviceContextParallelOptions& options,
    kernels::RingTransport& transport, ContextParallelRankOps& ops) {
    TANDEM_RETURN_IF_ERROR(config.validate());
    const kernels::RingCaps caps = transport.caps();
    if (caps.memory != kernels::RingMemory::kCuda) {
        return invalid_argument(fmt::format(
            "device context parallel: ring transport {} moves host memory; wrap it with "
            "make_host_staged_ring (kernels/ring/device_ring.h)",
            caps.name));
    }
    if (transport.size() < 1 || transport.rank() < 0 || transport.rank() >= transport.size()) {
        return invalid_argument(
            fmt::format("device context parallel: ring transport {} has rank {} of {}", caps.name,
                        transport.rank(), transport.size()));
    }
    auto rank = std::unique_ptr<DeviceContextParallelRank>(
        new DeviceContextParallelRank(config, options, transport, ops));
    rank->elem_ = kernels::dtype_bytes(ops.ring().dtype());
    return rank;
}

Result<float*> DeviceContextParallelRank::scratch(std::shared_ptr<void>& buf, size_t& have,
                                                  size_t bytes, const char* what) {
    // Never empty, so a rank with no rows still passes valid pointers to the collectives.
    bytes = std::max<size_t>(bytes, 16);
    if (!buf || have < bytes) {
        buf.reset();
        TANDEM_ASSIGN_OR_RETURN(
            buf, ops_.ring().allocate(bytes, fmt::format("device context parallel: {}", what)));
        have = bytes;
    }
    return static_cast<float*>(buf.get());
}

Result<std::vector<DeviceContextParallelRank::Piece>> DeviceContextParallelRank::new_pieces(
    int64_t capacity, const char* what) {
    capacity = std::max<int64_t>(capacity, 1);
    const size_t bytes = static_cast<size_t>(capacity * config_.kv_dim()) * elem_;
    std::vector<Piece> pieces(static_cast<size_t>(config_.num_layers));
    for (Piece& p : pieces) {
        p.capacity = capacity;
        TANDEM_ASSIGN_OR_RETURN(
            p.k,
            ops_.ring().allocate(bytes, fmt::format("device context parallel: {} K rows", what)));
        TANDEM_ASSIGN_OR_RETURN(
            p.v,
            ops_.ring().allocate(bytes, fmt::format("device context parallel: {} V rows", what)));
    }
    return pieces;
}

Status DeviceContextParallelRank::prefill(const std::vector<int32_t>& prompt,
                                          const model::ContextShardPlan& plan,
                                          std::vector<Piece>& shared) {
    const model::ModelConfig& c = config_;
    const int r = rank();
    const int64_t kvd = c.kv_dim();
    const size_t kv_row = static_cast<size_t>(kvd) * elem_;
    kernels::RingDeviceOps& dev = ops_.ring();
    TANDEM_ASSIGN_OR_RETURN(
        shared,
        new_pieces(plan.prefill_rows[r] + plan.append_end[r] - plan.append_begin[r], "shared"));
    if (plan.prefill_len == 0) return Status();
    kernels::RingAttentionConfig rc;
    rc.seq_len = plan.prefill_len;
    rc.hq = c.num_heads;
    rc.hkv = c.num_kv_heads;
    rc.d = c.head_dim();
    rc.scale = kernels::default_softmax_scale(rc.d);
    rc.causal = true;
    rc.layout = options_.layout;
    rc.timeout = options_.timeout;
    TANDEM_ASSIGN_OR_RETURN(auto ring, kernels::DeviceRingAttention::create(rc, transport_, dev));
    const kernels::RingShard& shard = ring->shard();
    const int64_t n = shard.rows;
    std::vector<int32_t> pos, tokens;
    for (const auto& seg : shard.segments) {
        for (int64_t i = 0; i < seg.rows; ++i) {
            pos.push_back(static_cast<int32_t>(seg.pos0 + i));
            tokens.push_back(prompt[static_cast<size_t>(seg.pos0 + i)]);
        }
    }
    const int64_t h = c.hidden_size, qd = c.q_dim();
    TANDEM_ASSIGN_OR_RETURN(float* x, scratch(x_, x_bytes_, n * h * 4, "residual rows"));
    TANDEM_ASSIGN_OR_RETURN(float* q, scratch(q_, q_bytes_, n * qd * elem_, "queries"));
    TANDEM_ASSIGN_OR_RETURN(float* k, scratch(k_, k_bytes_, n * kv_row, "keys"));
    TANDEM_ASSIGN_OR_RETURN(float* v, scratch(v_, v_bytes_, n * kv_row, "values"));
    TANDEM_ASSIGN_OR_RETURN(float* o, scratch(o_, o_bytes_, n * qd * 4, "attention output"));
    TANDEM_ASSIGN_OR_RETURN(float* lse, scratch(lse_, lse_bytes_, n * c.num_heads * 4, "lse"));
    if (n > 0) TANDEM_RETURN_IF_ERROR(ops_.embed(tokens, x));
    for (int l = 0; l < c.num_layers; ++l) {
        Piece& p = shared[static_cast<size_t>(l)];
        if (n > 0) {
            TANDEM_RETURN_IF_ERROR(ops_.qkv(l, pos, x, q, k, v));
            TANDEM_RETURN_IF_ERROR(dev.copy(at(p.k, 0), k, n * kv_row));
            TANDEM_RETURN_IF_ERROR(dev.copy(at(p.v, 0), v, n * kv_row));
            p.rows = n;
        }
        // Collective: every rank takes part, even one that holds no rows.
        TANDEM_RETURN_IF_ERROR(ring->forward(q, k, v, o, lse));
        if (n > 0) TANDEM_RETURN_IF_ERROR(ops_.finish_layer(l, n, o, x));
    }
    return Status();
}

Status DeviceContextParallelRank::step(std::span<const model::ContextParallelItem> items,
                                       std::span<const model::ContextShardPlan> plans,
                                       float* host_logits) {
    const model::ModelConfig& c = config_;
    const int r = rank();
    const int P = ranks();
    const int hq = c.num_heads, d = c.head_dim();
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
    const size_t kv_row = static_cast<size_t>(kvd) * elem_;
    const int64_t m = static_cast<int64_t>(items.size());
    kernels::RingDeviceOps& dev = ops_.ring();
    std::vector<int32_t> pos, tokens;
    for (const model::ContextParallelItem& it : items) {
        pos.push_back(it.pos);
        tokens.push_back(it.token);
    }
    const int64_t part = kernels::partial_elems(m, hq, d);
    TANDEM_ASSIGN_OR_RETURN(float* x, scratch(x_, x_bytes_, m * h * 4, "residual rows"));
    TANDEM_ASSIGN_OR_RETURN(float* q, scratch(q_, q_bytes_, m * qd * elem_, "queries"));
    TANDEM_ASSIGN_OR_RETURN(float* k, scratch(k_, k_bytes_, m * kv_row, "keys"));
    TANDEM_ASSIGN_OR_RETURN(float* v, scratch(v_, v_bytes_, m * kv_row, "values"));
    TANDEM_ASSIGN_OR_RETURN(float* o, scratch(o_, o_bytes_, m * qd * 4, "attention output"));
    TANDEM_ASSIGN_OR_RETURN(float* lse, scratch(lse_, lse_bytes_, m * hq * 4, "lse"));
    TANDEM_ASSIGN_OR_RETURN(float* table,
                            scratch(table_, table_bytes_, part * P * 4, "partial table"));
    float* mine_o = table + static_cast<int64_t>(r) * part;
    float* mine_lse = mine_o + m * qd;
    kernels::AttentionParams base;
    base.hq = hq;
    base.hkv = c.num_kv_heads;
    base.d = d;
    base.scale = kernels::default_softmax_scale(d);
    base.causal = false;  // every stored key precedes or is the query's own position
    base.accumulate = true;
    base.lse_stride = m;
    const size_t q_row = static_cast<size_t>(qd) * elem_;
    TANDEM_RETURN_IF_ERROR(ops_.embed(tokens, x));
    for (int l = 0; l < c.num_layers; ++l) {
        TANDEM_RETURN_IF_ERROR(ops_.qkv(l, pos, x, q, k, v));
        for (int64_t i = 0; i < m; ++i) {
            const model::ContextParallelItem& it = items[static_cast<size_t>(i)];
            if (plans[static_cast<size_t>(it.group)].owner(it.pos) != r) continue;
            Piece& dst = it.tail < 0 ? shared_[static_cast<size_t>(it.group)][l]
                                     : tails_[static_cast<size_t>(it.tail)][l];
            if (dst.rows >= dst.capacity) {
                return internal_error(fmt::format(
                    "device context parallel rank {}: position {} of group {} overflows its "
                    "shard piece of {} rows",
                    r, it.pos, it.group, dst.capacity));
            }
            const size_t off = static_cast<size_t>(dst.rows) * kv_row;
            TANDEM_RETURN_IF_ERROR(dev.copy(at(dst.k, off), at(k, i * kv_row), kv_row));
            TANDEM_RETURN_IF_ERROR(dev.copy(at(dst.v, off), at(v, i * kv_row), kv_row));
            ++dst.rows;
        }
        // This rank's partial: o = 0, lse = -inf is the identity of the merge.
        TANDEM_RETURN_IF_ERROR(dev.clear_partial(mine_o, m * qd, mine_lse, m * hq));
        int64_t i = 0;
        while (i < m) {
            int64_t j = i + 1;
            while (j < m && items[j].group == items[i].group) ++j;
            // The group's shared rows see all of its queries in one call.
            const Piece& sh = shared_[static_cast<size_t>(items[i].group)][l];
            if (sh.rows > 0) {
                kernels::AttentionParams p = base;
                p.tq = j - i;
                p.tk = sh.rows;
                TANDEM_RETURN_IF_ERROR(dev.attend(p, at(q, i * q_row), sh.k.get(), sh.v.get(),
                                                  mine_o + i * qd, mine_lse + i));
            }
            for (int64_t t = i; t < j; ++t) {
                if (items[t].tail < 0) continue;
                const Piece& tl = tails_[static_cast<size_t>(items[t].tail)][l];
                if (tl.rows == 0) continue;
                kernels::AttentionParams p = base;
                p.tq = 1;
                p.tk = tl.rows;
                TANDEM_RETURN_IF_ERROR(dev.attend(p, at(q, t * q_row), tl.k.get(), tl.v.get(),
                                                  mine_o + t * qd, mine_lse + t));
            }
            i = j;
        }
        TANDEM_RETURN_IF_ERROR(kernels::device_allgather_merge_partials(
            transport_, dev, table, m, hq, d, o, lse, options_.timeout));
        TANDEM_RETURN_IF_ERROR(ops_.finish_layer(l, m, o, x));
    }
    if (r == 0) TANDEM_RETURN_IF_ERROR(ops_.logits(m, x, host_logits));
    return Status();
}

Status DeviceContextParallelRank::broadcast(std::vector<model::SampledToken>& picks) {
    const int P = ranks();
    if (P == 1 || picks.empty()) return Status();
    kernels::RingDeviceOps& dev = ops_.ring();
    const size_t slot_bytes = picks.size() * 2 * sizeof(float);
    TANDEM_ASSIGN_OR_RETURN(float* table,
                            scratch(picks_, picks_bytes_, slot_bytes * P, "sampled tokens"));
    std::vector<float> host(picks.size() * 2);
    if (rank() == 0) {
        for (size_t i = 0; i < picks.size(); ++i) {
            std::memcpy(&host[2 * i], &picks[i].token, sizeof(float));
            host[2 * i + 1] = picks[i].logprob;
        }
        TANDEM_RETURN_IF_ERROR(dev.copy_from_host(table, host.data(), slot_bytes));
    }
    // The all-gather of the decode partials, of which only rank 0's slot is read.
    auto slot = [&](int s) { return at(static_cast<void*>(table), s * slot_bytes); };
    void* stream = dev.stream();
    std::vector<kernels::RingRequest> posted;
    for (int s = 0; s + 1 < P; ++s) {
        const int send_from = (rank() - s + P) % P;
        const int recv_from = (rank() - s - 1 + 2 * P) % P;
        TANDEM_RETURN_IF_ERROR(transport_.order_after(stream));
        TANDEM_ASSIGN_OR_RETURN(kernels::RingRequest req,
                                transport_.post_shift(kernels::kRingChannelPartial, slot(send_from),
                                                      slot(recv_from), slot_bytes));
        posted.push_back(req);
        TANDEM_RETURN_IF_ERROR(transport_.order_before(req, stream));
    }
    for (kernels::RingRequest req : posted) {
        TANDEM_RETURN_IF_ERROR(transport_.wait(req, options_.timeout));
    }
    if (rank() == 0) return Status();
    TANDEM_RETURN_IF_ERROR(dev.copy_to_host(host.data(), slot(0), slot_bytes));
    for (size_t i = 0; i < picks.size(); ++i) {
        std::memcpy(&picks[i].token, &host[2 * i], sizeof(float));
        picks[i].logprob = host[2 * i + 1];
    }
    return Status();
}

Status DeviceContextParallelRank::generate(std::span<const std::vector<int32_t>> prompts,
                                           std::span<const model::ContextParallelGroup> groups,
                                           const model::SamplingOptions& o,
                                           std::span<const int32_t> stop_ids,
                                           std::span<model::Rng> rngs,
                                           std::span<model::Completion> out,
                                           model::ContextParallelStats* stats) {
    const int V = config_.vocab_size;
    const int r = rank();
    model::ContextParallelStats local;
    if (groups.empty()) {
        if (stats) *stats = local;
        return Status();
    }
    // Every check before the first collective: all ranks see the same inputs and fail alike.
    TANDEM_ASSIGN_OR_RETURN(model::ContextParallelRun run,
                            model::ContextParallelRun::create(config_, options_.layout, ranks(),
                                                              prompts, groups, o, out.size()));
    if (r == 0) {
        for (const model::ContextParallelRun::Draw& d : run.draws()) {
            if (static_cast<size_t>(d.slot) >= rngs.size()) {
                return invalid_argument(fmt::format(
                    "device context parallel: completion slot {} has no random stream ({} given)",
                    d.slot, rngs.size()));
            }
        }
    }
    const int64_t ngroups = static_cast<int64_t>(groups.size());
    const std::vector<model::ContextShardPlan>& plans = run.plans();
    local.prompt_tokens = run.prompt_tokens();
    shared_.assign(static_cast<size_t>(ngroups), {});
    tails_.assign(static_cast<size_t>(run.members()), {});
    for (int64_t gi = 0; gi < ngroups; ++gi) {
        const model::ContextShardPlan& plan = plans[static_cast<size_t>(gi)];
        for (const int32_t b : groups[gi].members) {
            TANDEM_ASSIGN_OR_RETURN(tails_[static_cast<size_t>(run.tail_of(b))],
                                    new_pieces(plan.append_end[r] - plan.append_begin[r], "tail"));
        }
    }
    // Ring prefill of every prompt but its last token, group by group (the same order on every
    // rank, so the collectives pair up).
    for (int64_t gi = 0; gi < ngroups; ++gi) {
        TANDEM_RETURN_IF_ERROR(prefill(prompts[static_cast<size_t>(groups[gi].prompt)],
                                       plans[static_cast<size_t>(gi)],
                                       shared_[static_cast<size_t>(gi)]));
    }
    // Decode: the first step is every group's last prompt token, then every live sample's. Rank 0
    // samples; every rank records the same picks.
    std::vector<float> logits;
    model::Sampler sampler;
    std::vector<model::SampledToken> picks;
    for (bool first = true; !run.done(); first = false) {
        const std::vector<model::ContextParallelItem>& items = run.items();
        if (r == 0) logits.resize(items.size() * static_cast<size_t>(V));
        TANDEM_RETURN_IF_ERROR(step(items, plans, logits.data()));
        if (!first) ++local.decode_steps;
        picks.assign(run.draws().size(), model::SampledToken{});
        if (r == 0) {
            for (size_t i = 0; i < picks.size(); ++i) {
                const model::ContextParallelRun::Draw& d = run.draws()[i];
                picks[i] = sampler.sample(logits.data() + static_cast<int64_t>(d.row) * V, V, o,
                                          rngs[d.slot]);
            }
        }
        TANDEM_RETURN_IF_ERROR(broadcast(picks));
        run.record(picks, stop_ids, out);
    }
    // Stats of this rank's shards (rows only grow within a call, so the end is the peak).
    const size_t kv_row = static_cast<size_t>(config_.kv_dim()) * elem_;
    for (int64_t gi = 0; gi < ngroups; ++gi) {
        const auto& sh = shared_[static_cast<size_t>(gi)];
        local.peak_kv_tokens += sh[0].rows;
        for (const int32_t b : groups[gi].members) {
            const auto& tl = tails_[static_cast<size_t>(run.tail_of(b))];
            local.generated_tokens += static_cast<int64_t>(out[b].tokens.size());
            ++local.sequences;
            local.peak_tokens_per_rank =
                std::max(local.peak_tokens_per_rank, sh[0].rows + tl[0].rows);
            local.peak_kv_tokens += tl[0].rows;
        }
    }
    local.peak_kv_bytes =
        local.peak_kv_tokens * config_.num_layers * 2 * static_cast<int64_t>(kv_row);
    shared_.clear();
    tails_.clear();
    if (stats) *stats = local;
    return Status();
}

}  // namespace tandem::gpu
