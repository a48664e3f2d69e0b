// DeviceModel::backward: the decoder's backward on the device, layer by layer from the
// activations train_forward kept, in the order and with the conventions of
// Transformer::backward (common/model/transformer.cc), so the two can be compared op by op.
#include <algorithm>
#include <vector>

#include "common/gpu/device_acts.h"
#include "common/gpu/device_model.h"
#include "common/model/self_attention.h"
#include "kernels/cuda/attention_backward.h"
#include "kernels/cuda/ops.h"

namespace tandem::gpu {

using kernels::cuda::Bf16;
using kernels::cuda::DeviceBuffer;
using kernels::cuda::Gemm;
using kernels::cuda::GemmShape;
using kernels::cuda::Stream;
namespace ops = kernels::cuda;

namespace {

// For y = x W^T (x [n, in], W [out, in]): dx [n, in] (+)= dy W (skipped when dx is null) and
// dw [out, in] += dy^T x, with dy [n, out] in bf16 (fp32 accumulation, fp32 results).
Status linear_backward(const Stream& s, Gemm& gemm, int64_t n, int64_t in, int64_t out,
                       const Bf16* x, const Bf16* w, const Bf16* dy, float* dx, bool accumulate_dx,
                       float* dw) {
    if (n == 0) return Status();
    if (dx) {
        const GemmShape g{false, false, n, in, out, out, in, in};
        TANDEM_RETURN_IF_ERROR(gemm.matmul(s, g, 1.0f, dy, w, accumulate_dx ? 1.0f : 0.0f, dx));
    }
    const GemmShape g{true, false, out, in, n, out, in, in};
    return gemm.matmul(s, g, 1.0f, dy, x, 1.0f, dw);
}

Status copy_floats(const Stream& s, float* dst, const float* src, int64_t count) {
    return ops::copy_on_device(s, dst, src, static_cast<size_t>(count) * sizeof(float));
}

}  // namespace

Status DeviceModel::backward(const Stream& s, const float* weight, float* grads) {
    using model::PackedBatch;
    if (!saved_) return invalid_argument("device model: backward() without a train_forward()");
    Saved& S = *saved_;
    if (S.ns == 0) return Status();
    if (!weight || !grads) return invalid_argument("device model: backward with a null buffer");
    const model::ModelConfig& c = config_;
    const int64_t n = S.rows.n, h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(),
                  inter = c.intermediate_size, V = c.vocab_size, hq = c.num_heads,
                  hkv = c.num_kv_heads, ns = S.ns;
    const int d = c.head_dim();
    const model::ParamPtrs<const Bf16> w(index_, weights_.as<const Bf16>());
    const model::ParamPtrs<float> gw(index_, grads);
    auto alloc = [&](int64_t elems, size_t elem_bytes, const char* what) {
        return alloc_.allocate(static_cast<size_t>(std::max<int64_t>(elems, 1)) * elem_bytes, what);
    };
    const int32_t* srow = S.idx.as<const int32_t>();
    const int32_t* target = srow + ns;

    // Head: each chunk's logits recomputed, dlogits, then the final norm rows' gradient df.
    std::vector<float> ws(static_cast<size_t>(ns));
    for (int64_t i = 0; i < ns; ++i) ws[i] = weight[S.trow[i]];
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer wsd, alloc(ns, 4, "scored rows' loss weights"));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, wsd.as(), ws.data(), ws.size() * sizeof(float)));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer df, alloc(ns * h, 4, "final norm output gradient"));
    const int64_t chunk = std::min(ns, std::max<int64_t>(1, (int64_t{1} << 24) / V));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer lg, alloc(chunk * V, 4, "logits"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dl, alloc(chunk * V, 4, "logits gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dlb, alloc(chunk * V, 2, "logits gradient (bf16)"));
    for (int64_t r0 = 0; r0 < ns; r0 += chunk) {
        const int64_t nr = std::min(chunk, ns - r0);
        const Bf16* f = S.fs.as<const Bf16>() + r0 * h;
        TANDEM_RETURN_IF_ERROR(gemm_.linear(s, nr, h, V, f, w.lm_head, lg.as<float>(), false));
        TANDEM_RETURN_IF_ERROR(ops::logprob_backward(s, nr, V, lg.as<float>(), target + r0,
                                                     S.inv_temp, wsd.as<float>() + r0,
                                                     dl.as<float>()));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, nr * V, dl.as<float>(), dlb.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(linear_backward(s, gemm_, nr, h, V, f, w.lm_head, dlb.as<Bf16>(),
                                               df.as<float>() + r0 * h, false, gw.lm_head));
    }
    // The scored rows' gradients back onto their rows (a prefix's last row predicts the first
    // token of every continuation: those add up; embedding_backward is a row scatter-add), then
    // the final norm over all rows (rows without a score get zero gradient).
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dfa, alloc(n * h, 4, "final norm gradient rows"));
    TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, dfa.as(), static_cast<size_t>(n * h) * 4));
    TANDEM_RETURN_IF_ERROR(
        ops::embedding_backward(s, ns, h, n, srow, df.as<float>(), dfa.as<float>()));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dxb, alloc(n * h, 4, "residual gradient"));
    float* dx = dxb.as<float>();
    TANDEM_RETURN_IF_ERROR(ops::rmsnorm_backward(s, n, h, S.x_out.as<float>(), w.final_norm,
                                                 S.rstd_f.as<float>(), dfa.as<float>(), dx, false,
                                                 gw.final_norm));
    lg = DeviceBuffer();
    dl = DeviceBuffer();
    dlb = DeviceBuffer();
    dfa = DeviceBuffer();

    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dmid, alloc(n * h, 4, "attention residual gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer db, alloc(n * h, 4, "post norm output gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer da, alloc(n * h, 4, "input norm output gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dO, alloc(n * qd, 4, "attention output gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dq, alloc(n * qd, 4, "q gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dk, alloc(n * kvd, 4, "k gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dv, alloc(n * kvd, 4, "v gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dg, alloc(n * inter, 4, "gate gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer du, alloc(n * inter, 4, "up gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer dsw, alloc(n * inter, 4, "swiglu gradient"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer sb, alloc(n * inter, 2, "swiglu output (bf16)"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer ob, alloc(n * qd, 2, "attention output (bf16)"));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer gb, alloc(n * std::max({h, qd, inter}), 2,
                                                   "activation gradient (bf16 GEMM input)"));
    DeviceBuffer dqr, dkr;
    if (c.qk_norm) {
        TANDEM_ASSIGN_OR_RETURN(dqr, alloc(n * qd, 4, "q gradient before its norm"));
        TANDEM_ASSIGN_OR_RETURN(dkr, alloc(n * kvd, 4, "k gradient before its norm"));
    }
    int64_t longest = 0;
    for (size_t q = 0; q < S.prefix.size(); ++q) {
        const int64_t p = S.prefix[q];
        if (p == PackedBatch::kNoPrefix) continue;
        longest = std::max(longest, S.begin[p + 1] - S.begin[p] + S.begin[q + 1] - S.begin[q]);
    }
    DeviceBuffer kc, vc, dkc, dvc;
    if (longest > 0) {
        TANDEM_ASSIGN_OR_RETURN(kc, alloc(longest * kvd, 2, "continuation keys"));
        TANDEM_ASSIGN_OR_RETURN(vc, alloc(longest * kvd, 2, "continuation values"));
        TANDEM_ASSIGN_OR_RETURN(dkc, alloc(longest * kvd, 4, "continuation key gradient"));
        TANDEM_ASSIGN_OR_RETURN(dvc, alloc(longest * kvd, 4, "continuation value gradient"));
    }
    const int32_t* pos = S.rows.positions.as<const int32_t>();
    Bf16* g16 = gb.as<Bf16>();

    for (int l = c.num_layers - 1; l >= 0; --l) {
        const LayerActs& A = S.layers[static_cast<size_t>(l)];
        const auto& L = w.layers[l];
        const auto& G = gw.layers[l];
        // MLP: x_out = x_mid + swiglu(b Wg^T + bg, b Wu^T + bu) Wd^T + bd.
        TANDEM_RETURN_IF_ERROR(ops::swiglu_forward(s, n * inter, A.g.as<const float>(),
                                                   A.u.as<const float>(), sb.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * h, dx, g16));
        TANDEM_RETURN_IF_ERROR(linear_backward(s, gemm_, n, inter, h, sb.as<Bf16>(), L.wd, g16,
                                               dsw.as<float>(), false, G.wd));
        if (G.bd) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, h, dx, G.bd));
        TANDEM_RETURN_IF_ERROR(ops::swiglu_backward(s, n * inter, A.g.as<const float>(),
                                                    A.u.as<const float>(), dsw.as<float>(),
                                                    dg.as<float>(), du.as<float>()));
        if (G.bg) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, inter, dg.as<float>(), G.bg));
        if (G.bu) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, inter, du.as<float>(), G.bu));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * inter, dg.as<float>(), g16));
        TANDEM_RETURN_IF_ERROR(linear_backward(s, gemm_, n, h, inter, A.b.as<Bf16>(), L.wg, g16,
                                               db.as<float>(), false, G.wg));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * inter, du.as<float>(), g16));
        TANDEM_RETURN_IF_ERROR(linear_backward(s, gemm_, n, h, inter, A.b.as<Bf16>(), L.wu, g16,
                                               db.as<float>(), true, G.wu));
        TANDEM_RETURN_IF_ERROR(copy_floats(s, dmid.as<float>(), dx, n * h));
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_backward(s, n, h, A.x_mid.as<float>(), L.post_norm,
                                                     A.rstd2.as<float>(), db.as<float>(),
                                                     dmid.as<float>(), true, G.post_norm));
        // Attention: x_mid = x_in + attn(rope(a Wq^T), rope(a Wk^T), a Wv^T) Wo^T + bo.
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * qd, A.o.as<float>(), ob.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * h, dmid.as<float>(), g16));
        TANDEM_RETURN_IF_ERROR(linear_backward(s, gemm_, n, qd, h, ob.as<Bf16>(), L.wo, g16,
                                               dO.as<float>(), false, G.wo));
        if (G.bo) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, h, dmid.as<float>(), G.bo));
        // In sequence order, so a prefix's own key gradients are written before its
        // continuations add theirs.
        for (size_t q = 0; q + 1 < S.begin.size(); ++q) {
            const int64_t b0 = S.begin[q], len = S.begin[q + 1] - b0;
            if (len == 0) continue;
            const int64_t p = S.prefix[q];
            const Bf16* qb = A.q.as<const Bf16>() + b0 * qd;
            const float* o = A.o.as<const float>() + b0 * qd;
            const float* lse = A.lse.as<const float>() + b0 * hq;
            float* dqs = dq.as<float>() + b0 * qd;
            if (p == PackedBatch::kNoPrefix) {
                TANDEM_RETURN_IF_ERROR(ops::attention_backward(
                    s, model::self_attention(c, len), kernels::DType::kBF16, qb,
                    A.k.as<const Bf16>() + b0 * kvd, A.v.as<const Bf16>() + b0 * kvd, o, lse,
                    dO.as<float>() + b0 * qd, dqs, dk.as<float>() + b0 * kvd,
                    dv.as<float>() + b0 * kvd, false));
                continue;
            }
            // Keys and values behind the prefix's; the prefix's key gradients so far are the
            // starting point of the continuation's (accumulate), its own start from zero.
            const int64_t p0 = S.begin[p], plen = S.begin[p + 1] - p0;
            const size_t pre = static_cast<size_t>(plen * kvd),
                         own = static_cast<size_t>(len * kvd);
            const Bf16* k16 = A.k.as<const Bf16>();
            const Bf16* v16 = A.v.as<const Bf16>();
            TANDEM_RETURN_IF_ERROR(ops::copy_on_device(s, kc.as(), k16 + p0 * kvd, pre * 2));
            TANDEM_RETURN_IF_ERROR(
                ops::copy_on_device(s, kc.as<Bf16>() + pre, k16 + b0 * kvd, own * 2));
            TANDEM_RETURN_IF_ERROR(ops::copy_on_device(s, vc.as(), v16 + p0 * kvd, pre * 2));
            TANDEM_RETURN_IF_ERROR(
                ops::copy_on_device(s, vc.as<Bf16>() + pre, v16 + b0 * kvd, own * 2));
            TANDEM_RETURN_IF_ERROR(copy_floats(s, dkc.as<float>(), dk.as<float>() + p0 * kvd, pre));
            TANDEM_RETURN_IF_ERROR(copy_floats(s, dvc.as<float>(), dv.as<float>() + p0 * kvd, pre));
            TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, dkc.as<float>() + pre, own * 4));
            TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, dvc.as<float>() + pre, own * 4));
            TANDEM_RETURN_IF_ERROR(ops::fill_zero(s, dqs, static_cast<size_t>(len * qd) * 4));
            TANDEM_RETURN_IF_ERROR(ops::attention_backward(
                s, model::self_attention(c, len, plen), kernels::DType::kBF16, qb, kc.as<Bf16>(),
                vc.as<Bf16>(), o, lse, dO.as<float>() + b0 * qd, dqs, dkc.as<float>(),
                dvc.as<float>(), true));
            TANDEM_RETURN_IF_ERROR(copy_floats(s, dk.as<float>() + p0 * kvd, dkc.as<float>(), pre));
            TANDEM_RETURN_IF_ERROR(copy_floats(s, dv.as<float>() + p0 * kvd, dvc.as<float>(), pre));
            TANDEM_RETURN_IF_ERROR(
                copy_floats(s, dk.as<float>() + b0 * kvd, dkc.as<float>() + pre, own));
            TANDEM_RETURN_IF_ERROR(
                copy_floats(s, dv.as<float>() + b0 * kvd, dvc.as<float>() + pre, own));
        }
        // q, k, v: RoPE, Qwen3's q/k norm, biases and the projections (decoder_layer.cc's
        // qkv_backward).
        TANDEM_RETURN_IF_ERROR(ops::rope_apply(s, n, c.num_heads, d, cos_.as<const float>(),
                                               sin_.as<const float>(), pos, dq.as<float>(), true));
        TANDEM_RETURN_IF_ERROR(ops::rope_apply(s, n, c.num_kv_heads, d, cos_.as<const float>(),
                                               sin_.as<const float>(), pos, dk.as<float>(), true));
        float* dqp = dq.as<float>();
        float* dkp = dk.as<float>();
        if (L.q_norm) {
            TANDEM_RETURN_IF_ERROR(ops::rmsnorm_backward(s, n * hq, d, A.q_raw.as<float>(),
                                                         L.q_norm, A.rstd_q.as<float>(), dqp,
                                                         dqr.as<float>(), false, G.q_norm));
            TANDEM_RETURN_IF_ERROR(ops::rmsnorm_backward(s, n * hkv, d, A.k_raw.as<float>(),
                                                         L.k_norm, A.rstd_k.as<float>(), dkp,
                                                         dkr.as<float>(), false, G.k_norm));
            dqp = dqr.as<float>();
            dkp = dkr.as<float>();
        }
        if (G.bq) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, qd, dqp, G.bq));
        if (G.bk) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, kvd, dkp, G.bk));
        if (G.bv) TANDEM_RETURN_IF_ERROR(ops::bias_backward(s, n, kvd, dv.as<float>(), G.bv));
        const Bf16* an = A.a.as<const Bf16>();
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * qd, dqp, g16));
        TANDEM_RETURN_IF_ERROR(
            linear_backward(s, gemm_, n, h, qd, an, L.wq, g16, da.as<float>(), false, G.wq));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * kvd, dkp, g16));
        TANDEM_RETURN_IF_ERROR(
            linear_backward(s, gemm_, n, h, kvd, an, L.wk, g16, da.as<float>(), true, G.wk));
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * kvd, dv.as<float>(), g16));
        TANDEM_RETURN_IF_ERROR(
            linear_backward(s, gemm_, n, h, kvd, an, L.wv, g16, da.as<float>(), true, G.wv));
        TANDEM_RETURN_IF_ERROR(copy_floats(s, dx, dmid.as<float>(), n * h));
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_backward(s, n, h, A.x_in.as<float>(), L.input_norm,
                                                     A.rstd1.as<float>(), da.as<float>(), dx, true,
                                                     G.input_norm));
    }
    // Embedding rows.
    return ops::embedding_backward(s, n, h, V, S.rows.tokens.as<const int32_t>(), dx, gw.embed);
}

}  // namespace tandem::gpu
