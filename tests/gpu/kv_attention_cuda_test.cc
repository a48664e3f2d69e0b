// Decode attention over quantized KV pages on the GPU (kernels/cuda/kv_attention.h) against a
// double reference over the same pages dequantized by the CPU code (kv_dequantize_page), and
// against kv_paged_attention_cpu. Sequences are built by KvPagedSequence, so every format is
// read as the engine stores it: sealed pages, the f32 residual window after them, partial pages.
// Skips with a reason without a device.
//
// Tolerance (inputs uniform in [-1, 1], scale 1/sqrt(d)): |err| <= 2e-5 + 2e-5 |ref| for o and
// lse against the double reference (the kernel dequantizes in fp32 exactly as the CPU does,
// up to fused multiply-adds, and accumulates in fp32).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cuda/kv_attention.h"
#include "kernels/kv_sequence.h"
#include "tests/gpu/cuda_test_util.h"

namespace tandem::kernels::cuda {
namespace {

using testing::CudaFixture;

struct Case {
    KvDType dtype;
    KvScheme scheme;
    int hq, hkv, d;
};

std::string name(const Case& c) {
    return std::string(kv_dtype_name(c.dtype)) + (c.scheme == KvScheme::kKivi ? "/kivi" : "") +
           " hq=" + std::to_string(c.hq) + " hkv=" + std::to_string(c.hkv) +
           " d=" + std::to_string(c.d);
}

// o [hq, d] and lse [hq] in double over the dequantized pages, keys at positions <= q_pos.
void reference(const std::vector<KvPageRef>& pages, const float* q, int hq, int hkv, int d,
               double scale, int64_t q_pos, std::vector<double>& o, std::vector<double>& lse) {
    std::vector<float> k, v;
    std::vector<double> scores;
    std::vector<std::vector<double>> vals;
    o.assign(static_cast<size_t>(hq) * d, 0.0);
    lse.assign(static_cast<size_t>(hq), -std::numeric_limits<double>::infinity());
    for (int h = 0; h < hq; ++h) {
        const int kvh = h / (hq / hkv);
        scores.clear();
        vals.clear();
        for (const KvPageRef& ref : pages) {
            const int64_t E = ref.format->row_elems();
            k.resize(static_cast<size_t>(ref.rows * E));
            v.resize(static_cast<size_t>(ref.rows * E));
            ASSERT_TRUE(
                kv_dequantize_page(*ref.format, ref.page, ref.row0, ref.rows, k.data(), v.data())
                    .ok());
            for (int r = 0; r < ref.rows && ref.pos0 + r <= q_pos; ++r) {
                double dot = 0;
                for (int c = 0; c < d; ++c)
                    dot += static_cast<double>(q[h * d + c]) * k[(r * hkv + kvh) * d + c];
                scores.push_back(scale * dot);
                vals.emplace_back(v.begin() + (r * hkv + kvh) * d,
                                  v.begin() + (r * hkv + kvh) * d + d);
            }
        }
        if (scores.empty()) continue;
        double mx = -std::numeric_limits<double>::infinity();
        for (double s : scores) mx = std::max(mx, s);
        double den = 0;
        for (size_t j = 0; j < scores.size(); ++j) {
            const double w = std::exp(scores[j] - mx);
            den += w;
            for (int c = 0; c < d; ++c) o[static_cast<size_t>(h * d + c)] += w * vals[j][c];
        }
        for (int c = 0; c < d; ++c) o[static_cast<size_t>(h * d + c)] /= den;
        lse[static_cast<size_t>(h)] = mx + std::log(den);
    }
}

class KvAttentionCuda : public CudaFixture {};

TEST_F(KvAttentionCuda, DecodeMatchesTheCpuKernelAndADoubleReferenceForEveryFormat) {
    const std::vector<Case> cases = {
        {KvDType::kF32, KvScheme::kPerToken, 4, 2, 16},
        {KvDType::kBF16, KvScheme::kPerToken, 4, 2, 16},
        {KvDType::kInt8, KvScheme::kPerToken, 8, 2, 64},
        {KvDType::kInt4, KvScheme::kPerToken, 4, 4, 16},
        {KvDType::kInt4, KvScheme::kKivi, 16, 8, 128},
        {KvDType::kInt2, KvScheme::kKivi, 4, 2, 16},
        {KvDType::kInt2, KvScheme::kKivi, 16, 8, 128},
        {KvDType::kInt2, KvScheme::kKivi, 4, 1, 256},
    };
    // Lengths: empty, one token (only the f32 window), a partial page, several pages with a
    // window; the last sequence's query sits in the middle (keys after it are masked).
    const std::vector<int64_t> lengths = {0, 1, 5, 37, 100, 100};
    const std::vector<int64_t> q_offsets = {0, 0, 0, 0, 0, 40};  // q_pos = length - 1 - offset
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> U(-1.0f, 1.0f);
    for (const Case& c : cases) {
        SCOPED_TRACE(name(c));
        KvSequenceConfig config;
        config.sealed.dtype = c.dtype;
        config.sealed.scheme = c.scheme;
        config.sealed.hkv = c.hkv;
        config.sealed.d = c.d;
        config.sealed.page_tokens = 8;
        config.sealed.value_group = std::min(c.d, 32);
        config.residual_tokens = 8;
        const int64_t E = config.sealed.row_elems();
        const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
        std::vector<KvPagedSequence> seqs;
        std::vector<KvDecodeSequence> dev_seqs;
        std::vector<int64_t> q_pos;
        for (size_t b = 0; b < lengths.size(); ++b) {
            auto seq = KvPagedSequence::create(config);
            ASSERT_TRUE(seq.ok()) << seq.status().to_string();
            // Appended in uneven chunks, as decode and prefill would.
            for (int64_t pos = 0; pos < lengths[b];) {
                const int64_t n = std::min<int64_t>(lengths[b] - pos, 1 + (pos % 7));
                std::vector<float> k(static_cast<size_t>(n * E)), v(k.size());
                for (float& x : k) x = U(rng);
                for (float& x : v) x = U(rng);
                ASSERT_TRUE(seq->append(pos, n, k.data(), v.data()).ok());
                pos += n;
            }
            seqs.push_back(std::move(*seq));
            q_pos.push_back(std::max<int64_t>(0, lengths[b] - 1 - q_offsets[b]));
        }
        if (c.dtype != KvDType::kF32) {
            EXPECT_GT(seqs[4].sealed_pages(), 0);
            EXPECT_GT(seqs[4].f32_tokens(), 0);
        }
        for (size_t b = 0; b < seqs.size(); ++b) {
            KvDecodeSequence ds;
            ds.q_pos = q_pos[b];
            for (KvPageRef ref : seqs[b].pages()) {
                const size_t bytes = static_cast<size_t>(kv_page_bytes(*ref.format));
                std::vector<uint8_t> host(ref.page, ref.page + bytes);
                ref.page = upload(host);
                ds.pages.push_back(ref);
            }
            dev_seqs.push_back(std::move(ds));
        }
        const int64_t B = static_cast<int64_t>(seqs.size());
        std::vector<float> q(static_cast<size_t>(B * c.hq * c.d));
        for (float& x : q) x = U(rng);
        const float* dq = upload(q);
        float* d_o = device<float>(q.size());
        float* d_lse = device<float>(static_cast<size_t>(B * c.hq));
        const Status st =
            kv_paged_decode_cuda(s(), *alloc_, c.hq, c.hkv, c.d, scale, dev_seqs, dq, d_o, d_lse);
        ASSERT_TRUE(st.ok()) << st.to_string();
        const std::vector<float> o = download(d_o, q.size());
        const std::vector<float> lse = download(d_lse, static_cast<size_t>(B * c.hq));
        for (int64_t b = 0; b < B; ++b) {
            SCOPED_TRACE("sequence " + std::to_string(b) + " of length " +
                         std::to_string(lengths[static_cast<size_t>(b)]));
            const float* qb = q.data() + b * c.hq * c.d;
            const auto pages = seqs[static_cast<size_t>(b)].pages();
            std::vector<double> ro, rl;
            reference(pages, qb, c.hq, c.hkv, c.d, scale, q_pos[static_cast<size_t>(b)], ro, rl);
            // The CPU kernel on the same pages (lse [hq, 1]).
            AttentionParams p;
            p.tq = 1;
            p.hq = c.hq;
            p.hkv = c.hkv;
            p.d = c.d;
            p.scale = scale;
            p.causal = true;
            p.q_pos0 = q_pos[static_cast<size_t>(b)];
            std::vector<float> co(static_cast<size_t>(c.hq * c.d)), cl(static_cast<size_t>(c.hq));
            ASSERT_TRUE(kv_paged_attention_cpu(p, pages, qb, co.data(), cl.data()).ok());
            double max_err = 0, max_cpu = 0;
            for (int h = 0; h < c.hq; ++h) {
                const float got_lse = lse[static_cast<size_t>(b * c.hq + h)];
                if (std::isinf(rl[static_cast<size_t>(h)])) {
                    EXPECT_TRUE(std::isinf(got_lse) && got_lse < 0) << "head " << h;
                } else {
                    EXPECT_NEAR(got_lse, rl[static_cast<size_t>(h)],
                                2e-5 + 2e-5 * std::fabs(rl[static_cast<size_t>(h)]))
                        << "head " << h;
                    max_cpu = std::max<double>(max_cpu, std::fabs(got_lse - cl[h]));
                }
                for (int ch = 0; ch < c.d; ++ch) {
                    const size_t i = static_cast<size_t>(h * c.d + ch);
                    const double got = o[static_cast<size_t>(b * c.hq * c.d) + i];
                    const double err = std::fabs(got - ro[i]);
                    max_err = std::max(max_err, err);
                    max_cpu = std::max(max_cpu, std::fabs(got - co[i]));
                    ASSERT_LE(err, 2e-5 + 2e-5 * std::fabs(ro[i])) << "head " << h << " ch " << ch;
                }
            }
            EXPECT_LE(max_cpu, 1e-4);
            std::printf("%s seq %lld: max |o - ref| %.2e, max |gpu - cpu| %.2e\n", name(c).c_str(),
                        static_cast<long long>(b), max_err, max_cpu);
        }
    }
}

TEST_F(KvAttentionCuda, RefusesPagesOfAnotherShape) {
    KvPageFormat f;
    f.dtype = KvDType::kInt8;
    f.hkv = 2;
    f.d = 32;
    f.page_tokens = 4;
    std::vector<uint8_t> host(static_cast<size_t>(kv_page_bytes(f)), 0);
    KvDecodeSequence seq;
    seq.pages.push_back(KvPageRef{&f, upload(host), 0, 4, 0});
    seq.q_pos = 3;
    std::vector<float> q(2 * 16, 0.5f);
    float* dq = upload(q);
    const std::vector<KvDecodeSequence> seqs = {seq};
    const Status st = kv_paged_decode_cuda(s(), *alloc_, 2, 2, 16, 0.25f, seqs, dq,
                                           device<float>(32), device<float>(2));
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("sequence 0"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("does not match 2 heads of 16"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace tandem::kernels::cuda
