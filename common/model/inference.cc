#include "common/model/inference.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/model/decoder_layer.h"

namespace tandem::model {

namespace {

size_t common_segments(std::span<const PagedKvCache::Segment> a,
                       std::span<const PagedKvCache::Segment> b) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i].block == b[i].block && a[i].slot0 == b[i].slot0 &&
           a[i].count == b[i].count) {
        ++i;
    }
    return i;
}

}  // namespace

Result<InferenceEngine> InferenceEngine::create(const ModelConfig& config) {
    InferenceEngine e;
    e.config_ = config;
    TANDEM_ASSIGN_OR_RETURN(e.layout_, make_param_layout(config));
    TANDEM_ASSIGN_OR_RETURN(e.index_, ParamIndex::create(config, e.layout_));
    e.rope_ = make_rope_table<float>(config);
    e.layer_ranges_ = layer_ranges(config, e.layout_);
    return e;
}

Status InferenceEngine::attend(const PagedKvCache& cache, int layer,
                               std::span<const ForwardItem> items) {
    const ModelConfig& c = config_;
    const int64_t qd = c.q_dim();
    const int hq = c.num_heads;
    kernels::AttentionParams base;
    base.hq = hq;
    base.hkv = c.num_kv_heads;
    base.d = c.head_dim();
    base.scale = kernels::default_softmax_scale(base.d);
    float* q = q_.data();
    float* o = o_.data();

    auto segment_call = [&](kernels::AttentionParams p, const PagedKvCache::Segment& seg,
                            const float* qp, float* op, float* lp) {
        return cache.attend_segment(p, layer, seg, qp, op, lp);  // f32 or sealed (quantized)
    };

    size_t i = 0;
    while (i < items.size()) {
        const auto segs_i = cache.segments(items[i].seq);
        // A run of single-token items sharing their first `shared` segments.
        size_t j = i + 1;
        size_t shared = 0;
        if (group_shared_ && items[i].tokens.size() == 1 && j < items.size() &&
            items[j].tokens.size() == 1) {
            shared = common_segments(segs_i, cache.segments(items[j].seq));
            if (shared > 0) {
                while (j < items.size() && items[j].tokens.size() == 1 &&
                       common_segments(segs_i, cache.segments(items[j].seq)) >= shared) {
                    ++j;
                }
            }
        }
        if (shared == 0) {
            const ForwardItem& it = items[i];
            const int64_t r0 = row0_[i], nt = static_cast<int64_t>(it.tokens.size());
            float* lse = grown_to(lse_, hq * nt);
            kernels::AttentionParams p = base;
            p.tq = nt;
            p.causal = true;
            p.q_pos0 = pos_[r0];
            bool first = true;
            for (const auto& seg : segs_i) {
                p.accumulate = !first;
                first = false;
                TANDEM_RETURN_IF_ERROR(segment_call(p, seg, q + r0 * qd, o + r0 * qd, lse));
            }
            ++i;
            continue;
        }
        // Group path: the shared blocks see all members' queries at once.
        const int64_t m = static_cast<int64_t>(j - i);
        float* qg = grown_to(qg_, m * qd);
        float* og = grown_to(og_, m * qd);
        float* lg = grown_to(lseg_, hq * m);
        for (int64_t r = 0; r < m; ++r) {
            std::memcpy(qg + r * qd, q + row0_[i + r] * qd, sizeof(float) * qd);
        }
        kernels::AttentionParams p = base;
        p.tq = m;
        p.causal = false;  // every cached key precedes the new tokens
        for (size_t s = 0; s < shared; ++s) {
            p.accumulate = s > 0;
            TANDEM_RETURN_IF_ERROR(segment_call(p, segs_i[s], qg, og, lg));
        }
        for (int64_t r = 0; r < m; ++r) {
            const auto segs = cache.segments(items[i + r].seq);
            kernels::AttentionParams pr = base;
            pr.tq = 1;
            pr.causal = false;
            pr.accumulate = true;
            pr.lse_stride = m;
            for (size_t s = shared; s < segs.size(); ++s) {
                TANDEM_RETURN_IF_ERROR(segment_call(pr, segs[s], qg + r * qd, og + r * qd, lg + r));
            }
            std::memcpy(o + row0_[i + r] * qd, og + r * qd, sizeof(float) * qd);
        }
        i = j;
    }
    return Status();
}

Status InferenceEngine::forward(WeightView params, PagedKvCache& cache,
                                std::span<const ForwardItem> items, float* logits, bool all_rows) {
    const ModelConfig& c = config_;
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    // Rows, positions and cache slots.
    row0_.resize(items.size());
    int64_t n = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        row0_[i] = n;
        const int64_t len =
            cache.length(items[i].seq) + static_cast<int64_t>(items[i].tokens.size());
        if (len > c.max_seq_len) {
            return invalid_argument(fmt::format(
                "inference: sequence {} would reach {} positions, more than max_seq_len {}",
                items[i].seq, len, c.max_seq_len));
        }
        if (items[i].tokens.empty()) {
            return invalid_argument(fmt::format("inference: item {} has no tokens", i));
        }
        n += static_cast<int64_t>(items[i].tokens.size());
    }
    pos_.resize(static_cast<size_t>(n));
    slots_.clear();
    for (size_t i = 0; i < items.size(); ++i) {
        const int64_t len0 = cache.length(items[i].seq);
        for (size_t t = 0; t < items[i].tokens.size(); ++t) {
            pos_[row0_[i] + static_cast<int64_t>(t)] = static_cast<int32_t>(len0 + t);
        }
        TANDEM_RETURN_IF_ERROR(
            cache.append(items[i].seq, static_cast<int64_t>(items[i].tokens.size()), slots_));
    }
    float* x = grown_to(x_, n * h);
    for (size_t i = 0; i < items.size(); ++i) {
        for (size_t t = 0; t < items[i].tokens.size(); ++t) {
            const int32_t tok = items[i].tokens[t];
            if (tok < 0 || tok >= c.vocab_size) {
                return invalid_argument(fmt::format(
                    "inference: token {} is outside the vocabulary ({})", tok, c.vocab_size));
            }
            std::memcpy(x + (row0_[i] + static_cast<int64_t>(t)) * h,
                        params.widen(index_.embed + static_cast<uint64_t>(tok) * h, h, wide_row_),
                        sizeof(float) * h);
        }
    }
    float* a = grown_to(a_, n * h);
    float* rstd = grown_to(rstd_, n);
    float* q = grown_to(q_, n * qd);
    float* k = grown_to(k_, n * kvd);
    float* v = grown_to(v_, n * kvd);
    grown_to(o_, n * qd);
    float* g = grown_to(g_, n * inter);
    float* u = grown_to(u_, n * inter);
    for (int l = 0; l < c.num_layers; ++l) {
        const auto [begin, end] = layer_ranges_[static_cast<size_t>(l)];
        const auto L = layer_pointers(
            index_.layers[l], params.widen(begin, static_cast<int64_t>(end - begin), wide_layer_),
            begin);
        rmsnorm_forward<float>(n, h, x, L.input_norm, c.rms_norm_eps, a, rstd);
        qkv_forward<float>(c, L, rope_, n, pos_.data(), a, q, k, v, qk_);
        for (int64_t r = 0; r < n; ++r) {
            const auto s = slots_[static_cast<size_t>(r)];
            std::memcpy(cache.key(l, s.block) + static_cast<int64_t>(s.slot) * kvd, k + r * kvd,
                        sizeof(float) * kvd);
            std::memcpy(cache.value(l, s.block) + static_cast<int64_t>(s.slot) * kvd, v + r * kvd,
                        sizeof(float) * kvd);
        }
        TANDEM_RETURN_IF_ERROR(attend(cache, l, items));
        out_proj_forward<float>(c, L, n, o_.data(), x);
        rmsnorm_forward<float>(n, h, x, L.post_norm, c.rms_norm_eps, a, rstd);
        mlp_forward<float>(c, L, n, a, g, u, g, x);
    }
    // Head on the requested rows.
    out_rows_.clear();
    if (all_rows) {
        for (int64_t r = 0; r < n; ++r) out_rows_.push_back(r);
    } else {
        for (size_t i = 0; i < items.size(); ++i) {
            out_rows_.push_back(row0_[i] + static_cast<int64_t>(items[i].tokens.size()) - 1);
        }
    }
    const int64_t no = static_cast<int64_t>(out_rows_.size());
    float* xs = grown_to(xs_, no * h);
    for (int64_t i = 0; i < no; ++i)
        std::memcpy(xs + i * h, x + out_rows_[i] * h, sizeof(float) * h);
    rmsnorm_forward<float>(no, h, xs, params.widen(index_.final_norm, h, wide_norm_),
                           c.rms_norm_eps, a, rstd);
    if (params.is_f32()) {
        linear_forward<float>(no, h, c.vocab_size, a, params.f32() + index_.lm_head, logits);
        return Status();
    }
    // The head widened in chunks of rows (it is the largest tensor), each chunk's logits columns
    // written in place.
    constexpr int64_t kHeadRows = 4096;
    for (int64_t r0 = 0; r0 < c.vocab_size; r0 += kHeadRows) {
        const int64_t rows = std::min(kHeadRows, c.vocab_size - r0);
        const float* wh =
            params.widen(index_.lm_head + static_cast<uint64_t>(r0) * h, rows * h, wide_head_);
        gemm<float>(false, true, no, rows, h, 1.0f, a, h, wh, h, 0.0f, logits + r0, c.vocab_size);
    }
    return Status();
}

}  // namespace tandem::model
