#include "common/gpu/device_model.h"

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/gpu/device_acts.h"
#include "common/model/decoder_layer.h"
#include "common/model/self_attention.h"
#include "kernels/attention.h"
#include "kernels/cuda/ops.h"
#include "kernels/half.h"

namespace tandem::gpu {

using kernels::cuda::Bf16;
using kernels::cuda::DeviceBuffer;
using kernels::cuda::Stream;
namespace ops = kernels::cuda;

Status project_heads(const Stream& s, ops::Gemm& gemm, const model::ModelConfig& c, int64_t n,
                     const Bf16* a, const HeadProjection& w, const float* cos, const float* sin,
                     const int32_t* pos, float* proj, Bf16* out, float* raw, float* rstd) {
    TANDEM_RETURN_IF_ERROR(gemm.linear(s, n, c.hidden_size, int64_t{w.heads} * c.head_dim(), a,
                                       w.weight, proj, false));
    ops::HeadPrepare hp;
    hp.n = n;
    hp.heads = w.heads;
    hp.d = c.head_dim();
    hp.bias = w.bias;
    hp.norm_w = w.norm;
    hp.eps = static_cast<float>(c.rms_norm_eps);
    hp.cos = cos;
    hp.sin = sin;
    hp.pos = pos;
    hp.raw = raw;
    hp.rstd = rstd;
    return ops::head_prepare(s, hp, proj, out);
}

DeviceModel::DeviceModel(const model::ModelConfig& c, kernels::cuda::DeviceAllocator& alloc,
                         kernels::cuda::Gemm& gemm)
    : config_(c), alloc_(alloc), gemm_(gemm) {}

DeviceModel::~DeviceModel() = default;

Result<std::unique_ptr<DeviceModel>> DeviceModel::create(const model::ModelConfig& config,
                                                         kernels::cuda::DeviceAllocator& alloc,
                                                         kernels::cuda::Gemm& gemm,
                                                         const Stream& s) {
    TANDEM_RETURN_IF_ERROR(config.validate());
    if (config.vocab_size <= 0) return invalid_argument("device model: vocab_size must be > 0");
    std::unique_ptr<DeviceModel> m(new DeviceModel(config, alloc, gemm));
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, model::make_param_layout(config));
    TANDEM_ASSIGN_OR_RETURN(m->index_, model::ParamIndex::create(config, layout));
    TANDEM_ASSIGN_OR_RETURN(m->weights_, alloc.allocate(m->index_.elements * sizeof(Bf16),
                                                        "device model weights (bf16)"));
    // The CPU engine's own table (angles in double, stored as float), so both rotate alike.
    const model::RopeTable<float> rope = model::make_rope_table<float>(config);
    const size_t table = static_cast<size_t>(config.max_seq_len) * (config.head_dim() / 2);
    TANDEM_ASSIGN_OR_RETURN(m->cos_, alloc.allocate(table * sizeof(float), "RoPE cos table"));
    TANDEM_ASSIGN_OR_RETURN(m->sin_, alloc.allocate(table * sizeof(float), "RoPE sin table"));
    TANDEM_RETURN_IF_ERROR(
        ops::copy_to_device(s, m->cos_.as(), rope.cos(0), table * sizeof(float)));
    TANDEM_RETURN_IF_ERROR(
        ops::copy_to_device(s, m->sin_.as(), rope.sin(0), table * sizeof(float)));
    return m;
}

Status DeviceModel::load(const Stream& s, const float* params) {
    if (!params) return invalid_argument("device model: load from a null parameter buffer");
    std::vector<uint16_t> bits(index_.elements);
    for (uint64_t i = 0; i < index_.elements; ++i) bits[i] = kernels::float_to_bf16_bits(params[i]);
    TANDEM_RETURN_IF_ERROR(
        ops::copy_to_device(s, weights_.as(), bits.data(), bits.size() * sizeof(uint16_t)));
    loaded_ = true;
    return Status();
}

Status DeviceModel::prepare(const Stream& s, const model::PackedBatch& batch, Rows& rows) {
    using model::PackedBatch;
    const model::ModelConfig& c = config_;
    if (!loaded_) return invalid_argument("device model: no weights loaded (call load first)");
    const int64_t n = batch.num_tokens();
    if (batch.begin.size() != batch.score_from.size() + 1 || batch.begin.back() != n ||
        batch.prefix.size() != batch.score_from.size()) {
        return invalid_argument(
            "device model: malformed PackedBatch (offsets disagree with tokens)");
    }
    rows.n = n;
    rows.pos.assign(static_cast<size_t>(n), 0);
    for (int64_t q = 0; q < batch.num_sequences(); ++q) {
        const int64_t p = batch.prefix[q];
        if (p != PackedBatch::kNoPrefix &&
            (p < 0 || p >= q || batch.prefix[p] != PackedBatch::kNoPrefix ||
             batch.length(p) == 0)) {
            return invalid_argument(fmt::format(
                "device model: sequence {} continues sequence {}, which is not an earlier, "
                "non-empty sequence without a prefix of its own",
                q, p));
        }
        const int64_t len = batch.length(q), first = batch.first_position(q);
        if (first + len > c.max_seq_len) {
            return invalid_argument(
                fmt::format("device model: sequence {} has {} tokens, more than max_seq_len {}", q,
                            first + len, c.max_seq_len));
        }
        for (int64_t i = 0; i < len; ++i) {
            rows.pos[batch.begin[q] + i] = static_cast<int32_t>(first + i);
        }
    }
    for (int64_t r = 0; r < n; ++r) {
        const int32_t t = batch.tokens[r];
        if (t < 0 || t >= c.vocab_size) {
            return invalid_argument(
                fmt::format("device model: token {} at row {} is outside the vocabulary ({})", t, r,
                            c.vocab_size));
        }
    }
    if (n == 0) return Status();
    TANDEM_ASSIGN_OR_RETURN(rows.tokens, alloc_.allocate(n * sizeof(int32_t), "batch tokens"));
    TANDEM_ASSIGN_OR_RETURN(rows.positions,
                            alloc_.allocate(n * sizeof(int32_t), "batch positions"));
    TANDEM_RETURN_IF_ERROR(
        ops::copy_to_device(s, rows.tokens.as(), batch.tokens.data(), n * sizeof(int32_t)));
    TANDEM_RETURN_IF_ERROR(
        ops::copy_to_device(s, rows.positions.as(), rows.pos.data(), n * sizeof(int32_t)));
    return Status();
}

Status DeviceModel::run_layers(const Stream& s, const model::PackedBatch& batch, Rows& rows,
                               Saved* saved) {
    using model::PackedBatch;
    const model::ModelConfig& c = config_;
    const int64_t n = rows.n, h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(),
                  inter = c.intermediate_size, hq = c.num_heads;
    const float eps = static_cast<float>(c.rms_norm_eps);
    const model::ParamPtrs<const Bf16> w(index_, weights_.as<const Bf16>());
    auto alloc = [&](int64_t elems, size_t elem_bytes, const char* what) {
        return alloc_.allocate(static_cast<size_t>(elems) * elem_bytes, what);
    };
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer x, alloc(n * h, 4, "residual stream"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer a, alloc(n * std::max(h, qd), 2, "normed rows / o"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer proj, alloc(n * std::max(qd, inter), 4, "projection"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer sw, alloc(n * inter, 2, "swiglu (bf16)"));
    // Inference reuses one set of buffers for every layer; training keeps each layer's.
    struct Scratch {
        DeviceBuffer proj2, qb, kb, vb, o, lse;
    } scratch;
    if (!saved) {
        TANDEM_ASSIGN_OR_RETURN(scratch.proj2, alloc(n * inter, 4, "up projection"));
        TANDEM_ASSIGN_OR_RETURN(scratch.qb, alloc(n * qd, 2, "q (bf16)"));
        TANDEM_ASSIGN_OR_RETURN(scratch.kb, alloc(n * kvd, 2, "k (bf16)"));
        TANDEM_ASSIGN_OR_RETURN(scratch.vb, alloc(n * kvd, 2, "v (bf16)"));
        TANDEM_ASSIGN_OR_RETURN(scratch.o, alloc(n * qd, 4, "attention output"));
        TANDEM_ASSIGN_OR_RETURN(scratch.lse, alloc(n * hq, 4, "attention lse"));
    } else {
        saved->layers.clear();
        saved->layers.resize(static_cast<size_t>(c.num_layers));
    }
    // Longest continuation with its prefix: keys and values gathered behind the prefix's.
    int64_t longest = 0;
    for (int64_t q = 0; q < batch.num_sequences(); ++q) {
        if (batch.prefix[q] != PackedBatch::kNoPrefix) {
            longest = std::max(longest, batch.first_position(q) + batch.length(q));
        }
    }
    DeviceBuffer kc, vc;
    if (longest > 0) {
        TANDEM_ASSIGN_OR_RETURN(kc, alloc(longest * kvd, 2, "continuation keys"));
        TANDEM_ASSIGN_OR_RETURN(vc, alloc(longest * kvd, 2, "continuation values"));
    }
    const int32_t* pos = rows.positions.as<const int32_t>();

    TANDEM_RETURN_IF_ERROR(ops::embedding_forward(
        s, n, h, c.vocab_size, rows.tokens.as<const int32_t>(), w.embed, x.as<float>()));
    for (int l = 0; l < c.num_layers; ++l) {
        const auto& L = w.layers[l];
        // This layer's activation buffers: its own when training, else the shared scratch.
        LayerActs* A = saved ? &saved->layers[static_cast<size_t>(l)] : nullptr;
        if (A) {
            TANDEM_ASSIGN_OR_RETURN(A->x_in, alloc(n * h, 4, "saved layer input"));
            TANDEM_ASSIGN_OR_RETURN(A->rstd1, alloc(n, 4, "saved input norm rstd"));
            TANDEM_ASSIGN_OR_RETURN(A->a, alloc(n * h, 2, "saved normed input"));
            TANDEM_ASSIGN_OR_RETURN(A->q, alloc(n * qd, 2, "saved q"));
            TANDEM_ASSIGN_OR_RETURN(A->k, alloc(n * kvd, 2, "saved k"));
            TANDEM_ASSIGN_OR_RETURN(A->v, alloc(n * kvd, 2, "saved v"));
            if (L.q_norm) {
                TANDEM_ASSIGN_OR_RETURN(A->q_raw, alloc(n * qd, 4, "saved q before its norm"));
                TANDEM_ASSIGN_OR_RETURN(A->k_raw, alloc(n * kvd, 4, "saved k before its norm"));
                TANDEM_ASSIGN_OR_RETURN(A->rstd_q, alloc(n * hq, 4, "saved q norm rstd"));
                TANDEM_ASSIGN_OR_RETURN(A->rstd_k,
                                        alloc(n * c.num_kv_heads, 4, "saved k norm rstd"));
            }
            TANDEM_ASSIGN_OR_RETURN(A->o, alloc(n * qd, 4, "saved attention output"));
            TANDEM_ASSIGN_OR_RETURN(A->lse, alloc(n * hq, 4, "saved attention lse"));
            TANDEM_ASSIGN_OR_RETURN(A->x_mid, alloc(n * h, 4, "saved attention residual"));
            TANDEM_ASSIGN_OR_RETURN(A->rstd2, alloc(n, 4, "saved post norm rstd"));
            TANDEM_ASSIGN_OR_RETURN(A->b, alloc(n * h, 2, "saved post norm output"));
            TANDEM_ASSIGN_OR_RETURN(A->g, alloc(n * inter, 4, "saved gate projection"));
            TANDEM_ASSIGN_OR_RETURN(A->u, alloc(n * inter, 4, "saved up projection"));
            TANDEM_RETURN_IF_ERROR(
                ops::copy_on_device(s, A->x_in.as(), x.as(), static_cast<size_t>(n * h) * 4));
        }
        Bf16* an = A ? A->a.as<Bf16>() : a.as<Bf16>();
        Bf16* qb = A ? A->q.as<Bf16>() : scratch.qb.as<Bf16>();
        Bf16* kb = A ? A->k.as<Bf16>() : scratch.kb.as<Bf16>();
        Bf16* vb = A ? A->v.as<Bf16>() : scratch.vb.as<Bf16>();
        float* o = A ? A->o.as<float>() : scratch.o.as<float>();
        float* lse = A ? A->lse.as<float>() : scratch.lse.as<float>();
        float* g = A ? A->g.as<float>() : proj.as<float>();
        float* u = A ? A->u.as<float>() : scratch.proj2.as<float>();
        // Attention block.
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_forward(s, n, h, x.as<float>(), L.input_norm, eps, an,
                                                    A ? A->rstd1.as<float>() : nullptr));
        auto heads = [&](const HeadProjection& w, bool rope, DeviceBuffer* raw, DeviceBuffer* rstd,
                         Bf16* out) -> Status {
            const bool keep = A && w.norm;  // the q/k norm's inputs, for the backward
            return project_heads(s, gemm_, c, n, an, w, rope ? cos_.as<const float>() : nullptr,
                                 rope ? sin_.as<const float>() : nullptr, rope ? pos : nullptr,
                                 proj.as<float>(), out, keep ? raw->as<float>() : nullptr,
                                 keep ? rstd->as<float>() : nullptr);
        };
        TANDEM_RETURN_IF_ERROR(heads({L.wq, L.bq, L.q_norm, c.num_heads}, true,
                                     A ? &A->q_raw : nullptr, A ? &A->rstd_q : nullptr, qb));
        TANDEM_RETURN_IF_ERROR(heads({L.wk, L.bk, L.k_norm, c.num_kv_heads}, true,
                                     A ? &A->k_raw : nullptr, A ? &A->rstd_k : nullptr, kb));
        TANDEM_RETURN_IF_ERROR(
            heads({L.wv, L.bv, nullptr, c.num_kv_heads}, false, nullptr, nullptr, vb));
        for (int64_t q = 0; q < batch.num_sequences(); ++q) {
            const int64_t b0 = batch.begin[q], len = batch.length(q);
            if (len == 0) continue;
            const int64_t p = batch.prefix[q];
            const Bf16* keys = kb + b0 * kvd;
            const Bf16* values = vb + b0 * kvd;
            int64_t first = 0;
            if (p != PackedBatch::kNoPrefix) {
                const int64_t p0 = batch.begin[p], plen = batch.length(p);
                const size_t pre = static_cast<size_t>(plen * kvd) * sizeof(Bf16);
                const size_t own = static_cast<size_t>(len * kvd) * sizeof(Bf16);
                TANDEM_RETURN_IF_ERROR(ops::copy_on_device(s, kc.as(), kb + p0 * kvd, pre));
                TANDEM_RETURN_IF_ERROR(
                    ops::copy_on_device(s, kc.as<Bf16>() + plen * kvd, keys, own));
                TANDEM_RETURN_IF_ERROR(ops::copy_on_device(s, vc.as(), vb + p0 * kvd, pre));
                TANDEM_RETURN_IF_ERROR(
                    ops::copy_on_device(s, vc.as<Bf16>() + plen * kvd, values, own));
                keys = kc.as<Bf16>();
                values = vc.as<Bf16>();
                first = plen;
            }
            TANDEM_RETURN_IF_ERROR(kernels::attention_forward_cuda(
                model::self_attention(c, len, first), kernels::DType::kBF16, qb + b0 * qd, keys,
                values, o + b0 * qd, lse + b0 * hq, s.handle()));
        }
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * qd, o, a.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s, n, qd, h, a.as<Bf16>(), L.wo, x.as<float>(), true));
        if (L.bo) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, h, L.bo, x.as<float>()));
        if (A) {
            TANDEM_RETURN_IF_ERROR(
                ops::copy_on_device(s, A->x_mid.as(), x.as(), static_cast<size_t>(n * h) * 4));
        }
        // MLP block.
        Bf16* bn = A ? A->b.as<Bf16>() : a.as<Bf16>();
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_forward(s, n, h, x.as<float>(), L.post_norm, eps, bn,
                                                    A ? A->rstd2.as<float>() : nullptr));
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s, n, h, inter, bn, L.wg, g, false));
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s, n, h, inter, bn, L.wu, u, false));
        if (L.bg) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, inter, L.bg, g));
        if (L.bu) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, inter, L.bu, u));
        TANDEM_RETURN_IF_ERROR(ops::swiglu_forward(s, n * inter, g, u, sw.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(
            gemm_.linear(s, n, inter, h, sw.as<Bf16>(), L.wd, x.as<float>(), true));
        if (L.bd) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, h, L.bd, x.as<float>()));
    }
    TANDEM_ASSIGN_OR_RETURN(rows.f, alloc(n * h, 2, "final norm output"));
    if (saved) {
        TANDEM_ASSIGN_OR_RETURN(saved->rstd_f, alloc(n, 4, "saved final norm rstd"));
    }
    TANDEM_RETURN_IF_ERROR(ops::rmsnorm_forward(s, n, h, x.as<float>(), w.final_norm, eps,
                                                rows.f.as<Bf16>(),
                                                saved ? saved->rstd_f.as<float>() : nullptr));
    if (saved) saved->x_out = std::move(x);
    return Status();
}

Status DeviceModel::logits(const Stream& s, const model::PackedBatch& batch, float* out) {
    Rows rows;
    TANDEM_RETURN_IF_ERROR(prepare(s, batch, rows));
    if (rows.n == 0) return Status();
    if (!out) return invalid_argument("device model: logits into a null buffer");
    TANDEM_RETURN_IF_ERROR(run_layers(s, batch, rows, nullptr));
    const model::ModelConfig& c = config_;
    const int64_t V = c.vocab_size, h = c.hidden_size;
    const model::ParamPtrs<const Bf16> w(index_, weights_.as<const Bf16>());
    // A chunk of rows at a time (at most 16M logits on the device).
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / V);
    TANDEM_ASSIGN_OR_RETURN(
        DeviceBuffer lg,
        alloc_.allocate(static_cast<size_t>(std::min(chunk, rows.n) * V) * sizeof(float),
                        "logits"));
    for (int64_t r0 = 0; r0 < rows.n; r0 += chunk) {
        const int64_t nr = std::min(chunk, rows.n - r0);
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s, nr, h, V, rows.f.as<Bf16>() + r0 * h, w.lm_head,
                                            lg.as<float>(), false));
        TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, out + r0 * V, lg.as(),
                                                 static_cast<size_t>(nr * V) * sizeof(float)));
        // Pageable destination: the copy completes on the host only with the stream.
        TANDEM_RETURN_IF_ERROR(s.synchronize("device model logits"));
    }
    return Status();
}

Status DeviceModel::logprobs(const Stream& s, const model::PackedBatch& batch, double temperature,
                             float* logp, float* entropy) {
    return scored_forward(s, batch, temperature, logp, entropy, false);
}

Status DeviceModel::train_forward(const Stream& s, const model::PackedBatch& batch,
                                  double temperature, float* logp, float* entropy) {
    return scored_forward(s, batch, temperature, logp, entropy, true);
}

void DeviceModel::release_activations() { saved_.reset(); }

Status DeviceModel::scored_forward(const Stream& s, const model::PackedBatch& batch,
                                   double temperature, float* logp, float* entropy, bool keep) {
    using model::PackedBatch;
    saved_.reset();
    if (!(temperature > 0.0)) {
        return invalid_argument(
            fmt::format("device model: temperature must be > 0, got {}", temperature));
    }
    std::unique_ptr<Saved> saved = keep ? std::make_unique<Saved>() : nullptr;
    Rows local;
    Rows& rows = saved ? saved->rows : local;
    TANDEM_RETURN_IF_ERROR(prepare(s, batch, rows));
    const int64_t n = rows.n;
    if (n > 0 && !logp) return invalid_argument("device model: logprobs into a null buffer");
    std::fill(logp, logp + n, 0.0f);
    if (entropy) std::fill(entropy, entropy + n, 0.0f);
    // Scored rows, as Transformer::forward picks them.
    std::vector<int32_t> srow, target;
    std::vector<int64_t> trow;
    for (int64_t q = 0; q < batch.num_sequences(); ++q) {
        const int64_t p = batch.prefix[q];
        const int64_t from =
            p == PackedBatch::kNoPrefix ? std::max<int64_t>(batch.score_from[q], 1) : 0;
        for (int64_t i = from; i < batch.length(q); ++i) {
            const int64_t row = batch.begin[q] + i;
            srow.push_back(static_cast<int32_t>(i > 0 ? row - 1 : batch.begin[p + 1] - 1));
            trow.push_back(row);
            target.push_back(batch.tokens[row]);
        }
    }
    const int64_t ns = static_cast<int64_t>(srow.size());
    if (ns == 0) {
        if (saved) saved_ = std::make_unique<Saved>();  // backward has nothing to do
        return Status();
    }
    TANDEM_RETURN_IF_ERROR(run_layers(s, batch, rows, saved.get()));
    const model::ModelConfig& c = config_;
    const int64_t V = c.vocab_size, h = c.hidden_size;
    const model::ParamPtrs<const Bf16> w(index_, weights_.as<const Bf16>());
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer idx,
                            alloc_.allocate(2 * ns * sizeof(int32_t), "scored rows"));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, idx.as(), srow.data(), ns * sizeof(int32_t)));
    TANDEM_RETURN_IF_ERROR(
        ops::copy_to_device(s, idx.as<int32_t>() + ns, target.data(), ns * sizeof(int32_t)));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer fs, alloc_.allocate(ns * h * sizeof(Bf16), "scored rows"));
    TANDEM_RETURN_IF_ERROR(ops::gather_rows(s, ns, h, idx.as<const int32_t>(),
                                            rows.f.as<const Bf16>(), fs.as<Bf16>()));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer lp, alloc_.allocate(2 * ns * sizeof(float), "log-probs"));
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / V);
    TANDEM_ASSIGN_OR_RETURN(
        DeviceBuffer lg,
        alloc_.allocate(static_cast<size_t>(std::min(chunk, ns) * V) * sizeof(float), "logits"));
    const float inv_temp = static_cast<float>(1.0 / temperature);
    for (int64_t r0 = 0; r0 < ns; r0 += chunk) {
        const int64_t nr = std::min(chunk, ns - r0);
        TANDEM_RETURN_IF_ERROR(
            gemm_.linear(s, nr, h, V, fs.as<Bf16>() + r0 * h, w.lm_head, lg.as<float>(), false));
        TANDEM_RETURN_IF_ERROR(ops::logprob_forward(
            s, nr, V, lg.as<float>(), idx.as<const int32_t>() + ns + r0, inv_temp,
            lp.as<float>() + r0, entropy ? lp.as<float>() + ns + r0 : nullptr));
    }
    std::vector<float> host(static_cast<size_t>(2 * ns));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, host.data(), lp.as(), host.size() * sizeof(float)));
    TANDEM_RETURN_IF_ERROR(s.synchronize("device model log-probs"));
    for (int64_t i = 0; i < ns; ++i) {
        logp[trow[i]] = host[i];
        if (entropy) entropy[trow[i]] = host[ns + i];
    }
    if (saved) {
        saved->begin = batch.begin;
        saved->prefix = batch.prefix;
        saved->ns = ns;
        saved->idx = std::move(idx);
        saved->fs = std::move(fs);
        saved->trow = std::move(trow);
        saved->inv_temp = inv_temp;
        saved_ = std::move(saved);
    }
    return Status();
}

}  // namespace tandem::gpu
