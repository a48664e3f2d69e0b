#include "common/model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "common/model/decoder_layer.h"
#include "common/model/self_attention.h"

namespace tandem::model {

void PackedBatch::clear() {
    tokens.clear();
    begin.assign(1, 0);
    score_from.clear();
    prefix.clear();
}

void PackedBatch::add(std::span<const int32_t> prompt, std::span<const int32_t> completion) {
    tokens.insert(tokens.end(), prompt.begin(), prompt.end());
    tokens.insert(tokens.end(), completion.begin(), completion.end());
    begin.push_back(static_cast<int64_t>(tokens.size()));
    score_from.push_back(static_cast<int32_t>(std::max<size_t>(prompt.size(), 1)));
    prefix.push_back(kNoPrefix);
}

void PackedBatch::add_sequence(std::span<const int32_t> seq, int32_t from) {
    tokens.insert(tokens.end(), seq.begin(), seq.end());
    begin.push_back(static_cast<int64_t>(tokens.size()));
    score_from.push_back(std::max<int32_t>(from, 1));
    prefix.push_back(kNoPrefix);
}

int64_t PackedBatch::add_prefix(std::span<const int32_t> prompt) {
    tokens.insert(tokens.end(), prompt.begin(), prompt.end());
    begin.push_back(static_cast<int64_t>(tokens.size()));
    score_from.push_back(static_cast<int32_t>(std::max<size_t>(prompt.size(), 1)));
    prefix.push_back(kNoPrefix);
    return num_sequences() - 1;
}

int64_t PackedBatch::add_continuation(int64_t of, std::span<const int32_t> completion) {
    tokens.insert(tokens.end(), completion.begin(), completion.end());
    begin.push_back(static_cast<int64_t>(tokens.size()));
    score_from.push_back(0);
    prefix.push_back(of);
    return num_sequences() - 1;
}

template <typename T>
Result<Transformer<T>> Transformer<T>::create(const ModelConfig& config) {
    Transformer t;
    t.config_ = config;
    TANDEM_ASSIGN_OR_RETURN(t.layout_, make_param_layout(config));
    TANDEM_ASSIGN_OR_RETURN(t.index_, ParamIndex::create(config, t.layout_));
    t.rope_ = make_rope_table<T>(config);
    t.acts_.resize(static_cast<size_t>(config.num_layers));
    return t;
}

namespace {

template <typename T>
T* resized(std::vector<T>& v, int64_t n) {
    v.resize(static_cast<size_t>(n));
    return v.data();
}

// [a rows; b rows] of width w into `buf`.
template <typename T>
T* gather_behind(std::vector<T>& buf, const T* a, int64_t a_rows, const T* b, int64_t b_rows,
                 int64_t w) {
    T* out = resized(buf, (a_rows + b_rows) * w);
    std::memcpy(out, a, sizeof(T) * a_rows * w);
    std::memcpy(out + a_rows * w, b, sizeof(T) * b_rows * w);
    return out;
}

}  // namespace

template <typename T>
Status Transformer<T>::run_layers(const T* params, const PackedBatch& batch) {
    const ModelConfig& c = config_;
    const int64_t n = batch.num_tokens(), h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(),
                  inter = c.intermediate_size;
    if (batch.begin.size() != batch.score_from.size() + 1 || batch.begin.back() != n ||
        batch.prefix.size() != batch.score_from.size()) {
        return invalid_argument(
            "transformer: malformed PackedBatch (offsets disagree with tokens)");
    }
    for (int64_t s = 0; s < batch.num_sequences(); ++s) {
        const int64_t p = batch.prefix[s];
        if (p == PackedBatch::kNoPrefix) continue;
        if (p < 0 || p >= s || batch.prefix[p] != PackedBatch::kNoPrefix || batch.length(p) == 0) {
            return invalid_argument(fmt::format(
                "transformer: sequence {} continues sequence {}, which is not an earlier, "
                "non-empty sequence without a prefix of its own",
                s, p));
        }
    }
    const ParamPtrs<const T> w(index_, params);
    tokens_.assign(batch.tokens.begin(), batch.tokens.end());
    begin_.assign(batch.begin.begin(), batch.begin.end());
    prefix_.assign(batch.prefix.begin(), batch.prefix.end());
    pos_.resize(static_cast<size_t>(n));
    for (int64_t s = 0; s < batch.num_sequences(); ++s) {
        const int64_t len = batch.length(s), first = batch.first_position(s);
        if (first + len > c.max_seq_len) {
            return invalid_argument(
                fmt::format("transformer: sequence {} has {} tokens, more than max_seq_len {}", s,
                            first + len, c.max_seq_len));
        }
        for (int64_t i = 0; i < len; ++i)
            pos_[batch.begin[s] + i] = static_cast<int32_t>(first + i);
    }
    // Embedding.
    T* x = resized(x_out_, n * h);
    for (int64_t r = 0; r < n; ++r) {
        const int32_t t = tokens_[r];
        if (t < 0 || t >= c.vocab_size) {
            return invalid_argument(
                fmt::format("transformer: token {} at row {} is outside the vocabulary ({})", t, r,
                            c.vocab_size));
        }
        std::memcpy(x + r * h, w.embed + static_cast<int64_t>(t) * h, sizeof(T) * h);
    }
    for (int l = 0; l < c.num_layers; ++l) {
        LayerActs& A = acts_[l];
        const auto& L = w.layers[l];
        T* x_in = resized(A.x_in, n * h);
        std::memcpy(x_in, x, sizeof(T) * n * h);
        T* a = resized(A.a, n * h);
        rmsnorm_forward<T>(n, h, x_in, L.input_norm, c.rms_norm_eps, a, resized(A.rstd1, n));
        T* q = resized(A.q, n * qd);
        T* k = resized(A.k, n * kvd);
        T* v = resized(A.v, n * kvd);
        qkv_forward<T>(c, L, rope_, n, pos_.data(), a, q, k, v, A.qk);
        T* o = resized(A.o, n * qd);
        T* lse = resized(A.lse, n * c.num_heads);
        for (int64_t s = 0; s < batch.num_sequences(); ++s) {
            const int64_t b0 = begin_[s], len = batch.length(s);
            if (len == 0) continue;
            const int64_t p = prefix_[s];
            if (p == PackedBatch::kNoPrefix) {
                TANDEM_RETURN_IF_ERROR(attention_forward<T>(self_attention(c, len), q + b0 * qd,
                                                            k + b0 * kvd, v + b0 * kvd, o + b0 * qd,
                                                            lse + b0 * c.num_heads));
                continue;
            }
            const int64_t p0 = begin_[p], plen = batch.length(p);
            T* kc = gather_behind(kc_, k + p0 * kvd, plen, k + b0 * kvd, len, kvd);
            T* vc = gather_behind(vc_, v + p0 * kvd, plen, v + b0 * kvd, len, kvd);
            TANDEM_RETURN_IF_ERROR(attention_forward<T>(self_attention(c, len, plen), q + b0 * qd,
                                                        kc, vc, o + b0 * qd,
                                                        lse + b0 * c.num_heads));
        }
        T* x_mid = resized(A.x_mid, n * h);
        std::memcpy(x_mid, x_in, sizeof(T) * n * h);
        out_proj_forward<T>(c, L, n, o, x_mid);
        T* b = resized(A.b, n * h);
        rmsnorm_forward<T>(n, h, x_mid, L.post_norm, c.rms_norm_eps, b, resized(A.rstd2, n));
        T* g = resized(A.g, n * inter);
        T* u = resized(A.u, n * inter);
        T* sw = resized(A.s, n * inter);
        std::memcpy(x, x_mid, sizeof(T) * n * h);
        mlp_forward<T>(c, L, n, b, g, u, sw, x);
    }
    return Status();
}

template <typename T>
void Transformer<T>::head_inputs(const T* params) {
    const ModelConfig& c = config_;
    const ParamPtrs<const T> w(index_, params);
    const int64_t ns = static_cast<int64_t>(srow_.size()), h = c.hidden_size;
    T* xs = resized(xs_, ns * h);
    for (int64_t i = 0; i < ns; ++i)
        std::memcpy(xs + i * h, x_out_.data() + srow_[i] * h, sizeof(T) * h);
    T* f = resized(f_, ns * h);
    rmsnorm_forward<T>(ns, h, xs, w.final_norm, c.rms_norm_eps, f, resized(rstd_f_, ns));
}

template <typename T>
int64_t Transformer<T>::head_chunk_rows() const {
    return std::max<int64_t>(1, head_chunk_elements_ / config_.vocab_size);
}

template <typename T>
const T* Transformer<T>::head_logits(const T* params, int64_t row0, int64_t rows) {
    const ParamPtrs<const T> w(index_, params);
    const int64_t h = config_.hidden_size, V = config_.vocab_size;
    T* out = resized(logits_, rows * V);
    linear_forward<T>(rows, h, V, f_.data() + row0 * h, w.lm_head, out);
    return out;
}

template <typename T>
Status Transformer<T>::forward(const T* params, const PackedBatch& batch, double temperature,
                               T* logp, T* entropy) {
    if (!(temperature > 0.0)) {
        return invalid_argument(
            fmt::format("transformer: temperature must be > 0, got {}", temperature));
    }
    TANDEM_RETURN_IF_ERROR(run_layers(params, batch));
    inv_temp_ = 1.0 / temperature;
    srow_.clear();
    trow_.clear();
    target_.clear();
    for (int64_t s = 0; s < batch.num_sequences(); ++s) {
        const int64_t p = batch.prefix[s];
        // A continuation's first token is predicted by its prefix's last row.
        const int64_t from =
            p == PackedBatch::kNoPrefix ? std::max<int64_t>(batch.score_from[s], 1) : 0;
        for (int64_t i = from; i < batch.length(s); ++i) {
            const int64_t row = batch.begin[s] + i;
            srow_.push_back(i > 0 ? row - 1 : batch.begin[p + 1] - 1);
            trow_.push_back(row);
            target_.push_back(batch.tokens[row]);
        }
    }
    head_inputs(params);
    const int64_t n = batch.num_tokens(), ns = static_cast<int64_t>(srow_.size());
    std::fill(logp, logp + n, T(0));
    if (entropy) std::fill(entropy, entropy + n, T(0));
    // Scored values are computed into a compact scratch, then spread to their token index. The
    // logits are made a chunk of rows at a time (all at once when they fit; then backward reuses
    // them, else it recomputes each chunk).
    T* lp = resized(lp_, 2 * ns);
    const int64_t chunk = head_chunk_rows();
    for (int64_t r0 = 0; r0 < ns; r0 += chunk) {
        const int64_t rows = std::min(chunk, ns - r0);
        const T* lg = head_logits(params, r0, rows);
        token_logprob_forward<T>(rows, config_.vocab_size, lg, target_.data() + r0, inv_temp_,
                                 lp + r0, entropy ? lp + ns + r0 : nullptr);
    }
    for (int64_t i = 0; i < ns; ++i) {
        logp[trow_[i]] = lp[i];
        if (entropy) entropy[trow_[i]] = lp[ns + i];
    }
    return Status();
}

template <typename T>
Status Transformer<T>::logits(const T* params, const PackedBatch& batch, T* out) {
    TANDEM_RETURN_IF_ERROR(run_layers(params, batch));
    srow_.resize(static_cast<size_t>(batch.num_tokens()));
    for (int64_t r = 0; r < batch.num_tokens(); ++r) srow_[r] = r;
    target_.clear();  // no backward from here
    head_inputs(params);
    const ParamPtrs<const T> w(index_, params);
    linear_forward<T>(batch.num_tokens(), config_.hidden_size, config_.vocab_size, f_.data(),
                      w.lm_head, out);
    srow_.clear();
    trow_.clear();
    return Status();
}

template <typename T>
Status Transformer<T>::backward(const T* params, const T* weight, T* grads) {
    const ModelConfig& c = config_;
    if (target_.size() != srow_.size() || trow_.size() != srow_.size()) {
        return internal_error("transformer: backward() without a matching forward()");
    }
    const ParamPtrs<const T> w(index_, params);
    const ParamPtrs<T> gw(index_, grads);
    const int64_t n = static_cast<int64_t>(tokens_.size()), h = c.hidden_size, qd = c.q_dim(),
                  kvd = c.kv_dim(), inter = c.intermediate_size, V = c.vocab_size;
    const int64_t ns = static_cast<int64_t>(srow_.size());

    // Head: logits -> final norm -> scatter into dx.
    T* ws = resized(w_scored_, ns);
    for (int64_t i = 0; i < ns; ++i) ws[i] = weight[trow_[i]];
    T* df = resized(df_, ns * h);
    const int64_t chunk = head_chunk_rows();
    for (int64_t r0 = 0; r0 < ns; r0 += chunk) {
        const int64_t rows = std::min(chunk, ns - r0);
        // One chunk: forward() left its logits; several: recompute this one's.
        const T* lg = ns <= chunk ? logits_.data() : head_logits(params, r0, rows);
        T* dlogits = resized(dlogits_, rows * V);
        token_logprob_backward<T>(rows, V, lg, target_.data() + r0, inv_temp_, ws + r0, dlogits);
        linear_backward<T>(rows, h, V, f_.data() + r0 * h, w.lm_head, dlogits, df + r0 * h, false,
                           gw.lm_head);
    }
    T* dxs = resized(dxs_, ns * h);
    rmsnorm_backward<T>(ns, h, xs_.data(), w.final_norm, rstd_f_.data(), df, dxs, false,
                        gw.final_norm);
    T* dx = resized(dx_, n * h);
    std::fill(dx, dx + n * h, T(0));
    for (int64_t i = 0; i < ns; ++i) {
        T* dst = dx + srow_[i] * h;
        const T* src = dxs + i * h;
        for (int64_t j = 0; j < h; ++j) dst[j] += src[j];
    }

    T* dmid = resized(dmid_, n * h);
    T* db = resized(db_, n * h);
    T* da = resized(da_, n * h);
    T* dO = resized(do_, n * qd);
    T* dq = resized(dq_, n * qd);
    T* dk = resized(dk_, n * kvd);
    T* dv = resized(dv_, n * kvd);
    T* dg = resized(dg_, n * inter);
    T* du = resized(du_, n * inter);
    T* dsw = resized(ds_, n * inter);
    for (int l = c.num_layers - 1; l >= 0; --l) {
        LayerActs& A = acts_[l];
        const auto& L = w.layers[l];
        const auto& G = gw.layers[l];
        // MLP: x_out = x_mid + swiglu(b Wg^T, b Wu^T) Wd^T.
        linear_backward<T>(n, inter, h, A.s.data(), L.wd, dx, dsw, false, G.wd);
        if (G.bd) bias_backward<T>(n, h, dx, G.bd);
        swiglu_backward<T>(n * inter, A.g.data(), A.u.data(), dsw, dg, du);
        if (G.bg) {
            bias_backward<T>(n, inter, dg, G.bg);
            bias_backward<T>(n, inter, du, G.bu);
        }
        linear_backward<T>(n, h, inter, A.b.data(), L.wg, dg, db, false, G.wg);
        linear_backward<T>(n, h, inter, A.b.data(), L.wu, du, db, true, G.wu);
        std::memcpy(dmid, dx, sizeof(T) * n * h);
        rmsnorm_backward<T>(n, h, A.x_mid.data(), L.post_norm, A.rstd2.data(), db, dmid, true,
                            G.post_norm);
        // Attention: x_mid = x_in + attn(rope(a Wq^T), rope(a Wk^T), a Wv^T) Wo^T.
        linear_backward<T>(n, qd, h, A.o.data(), L.wo, dmid, dO, false, G.wo);
        if (G.bo) bias_backward<T>(n, h, dmid, G.bo);
        // In sequence order, so a prefix's own gradients are written before its continuations
        // add theirs.
        for (int64_t s = 0; s + 1 < static_cast<int64_t>(begin_.size()); ++s) {
            const int64_t b0 = begin_[s], len = begin_[s + 1] - b0;
            if (len == 0) continue;
            const int64_t p = prefix_[s];
            if (p == PackedBatch::kNoPrefix) {
                TANDEM_RETURN_IF_ERROR(attention_backward<T>(
                    self_attention(c, len), A.q.data() + b0 * qd, A.k.data() + b0 * kvd,
                    A.v.data() + b0 * kvd, A.o.data() + b0 * qd, A.lse.data() + b0 * c.num_heads,
                    dO + b0 * qd, dq + b0 * qd, dk + b0 * kvd, dv + b0 * kvd));
                continue;
            }
            const int64_t p0 = begin_[p], plen = begin_[p + 1] - p0;
            const T* kc =
                gather_behind(kc_, A.k.data() + p0 * kvd, plen, A.k.data() + b0 * kvd, len, kvd);
            const T* vc =
                gather_behind(vc_, A.v.data() + p0 * kvd, plen, A.v.data() + b0 * kvd, len, kvd);
            T* dkc = resized(dkc_, (plen + len) * kvd);
            T* dvc = resized(dvc_, (plen + len) * kvd);
            TANDEM_RETURN_IF_ERROR(attention_backward<T>(
                self_attention(c, len, plen), A.q.data() + b0 * qd, kc, vc, A.o.data() + b0 * qd,
                A.lse.data() + b0 * c.num_heads, dO + b0 * qd, dq + b0 * qd, dkc, dvc));
            for (int64_t j = 0; j < plen * kvd; ++j) {
                dk[p0 * kvd + j] += dkc[j];
                dv[p0 * kvd + j] += dvc[j];
            }
            std::memcpy(dk + b0 * kvd, dkc + plen * kvd, sizeof(T) * len * kvd);
            std::memcpy(dv + b0 * kvd, dvc + plen * kvd, sizeof(T) * len * kvd);
        }
        qkv_backward<T>(c, L, G, rope_, n, pos_.data(), A.a.data(), A.qk, dq, dk, dv, da);
        std::memcpy(dx, dmid, sizeof(T) * n * h);
        rmsnorm_backward<T>(n, h, A.x_in.data(), L.input_norm, A.rstd1.data(), da, dx, true,
                            G.input_norm);
    }
    // Embedding rows.
    for (int64_t r = 0; r < n; ++r) {
        T* dst = gw.embed + static_cast<int64_t>(tokens_[r]) * h;
        const T* src = dx + r * h;
        for (int64_t j = 0; j < h; ++j) dst[j] += src[j];
    }
    return Status();
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace tandem::model
