// Quantized KV pages: round trips with stated bounds, attention over quantized pages against a
// double reference of the dequantized values (exactness, |err| <= 1e-5 + 1e-5 |ref|) and against
// the unquantized reference (bounded drift), residual-window folding at every boundary, sharded
// decode over quantized shards, RoPE re-rotation.
#include "kernels/kv_quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/kv_sequence.h"
#include "kernels/ring/in_process_transport.h"
#include "kernels/ring/ring_layout.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::max_abs_error;
using testkit::random_floats;
using testkit::reference_forward;
using testkit::test_seed;
using testkit::to_double;

KvPageFormat format(KvDType dt, KvScheme sc, int hkv, int d, int T, int G = 8) {
    KvPageFormat f;
    f.dtype = dt;
    f.scheme = sc;
    f.hkv = hkv;
    f.d = d;
    f.page_tokens = T;
    f.value_group = G;
    return f;
}

std::vector<KvPageFormat> all_formats(int hkv, int d, int T) {
    return {format(KvDType::kF32, KvScheme::kPerToken, hkv, d, T),
            format(KvDType::kBF16, KvScheme::kPerToken, hkv, d, T),
            format(KvDType::kInt8, KvScheme::kPerToken, hkv, d, T),
            format(KvDType::kInt4, KvScheme::kPerToken, hkv, d, T),
            format(KvDType::kInt4, KvScheme::kKivi, hkv, d, T),
            format(KvDType::kInt2, KvScheme::kKivi, hkv, d, T)};
}

// Stated bound on |x - deq(x)| for a value in a quantization group spanning [lo, hi]:
// half a step of the f16-rounded scale (the step is (hi - m16) / levels rounded up, m16 <= lo
// within one f16 ulp), plus fp32 rounding of m + s c.
double group_bound(const KvPageFormat& f, double lo, double hi) {
    const double mag = std::max(std::fabs(lo), std::fabs(hi));
    if (f.dtype == KvDType::kF32) return 0.0;
    if (f.dtype == KvDType::kBF16) return mag * std::ldexp(1.0, -8);
    if (f.dtype == KvDType::kInt8) return mag / 127.0 / 2.0 * (1 + std::ldexp(1.0, -10)) + 1e-7;
    const double levels = (1 << kv_dtype_bits(f.dtype)) - 1;
    const double range = hi - lo + std::ldexp(1.0, -10) * mag + std::ldexp(1.0, -24);
    return range / levels / 2.0 * (1 + std::ldexp(1.0, -9)) + 4 * std::ldexp(1.0, -24) * mag;
}

// Per element bound for keys (k = true) or values of `rows` rows quantized together.
std::vector<double> element_bounds(const KvPageFormat& f, const std::vector<float>& x, int64_t rows,
                                   bool keys) {
    const int64_t E = f.row_elems();
    std::vector<double> b(static_cast<size_t>(rows * E));
    for (int64_t r = 0; r < rows; ++r) {
        for (int h = 0; h < f.hkv; ++h) {
            for (int c = 0; c < f.d; ++c) {
                const int64_t e = (r * f.hkv + h) * f.d + c;
                double lo = x[e], hi = x[e];
                auto span = [&](int64_t e0) {
                    lo = std::min<double>(lo, x[e0]);
                    hi = std::max<double>(hi, x[e0]);
                };
                if (f.kivi() && keys) {  // channel over the rows
                    for (int64_t r2 = 0; r2 < rows; ++r2) span((r2 * f.hkv + h) * f.d + c);
                } else if (f.kivi()) {  // value group
                    const int g0 = c / f.value_group * f.value_group;
                    for (int c2 = g0; c2 < g0 + f.value_group; ++c2) {
                        span((r * f.hkv + h) * f.d + c2);
                    }
                } else if (f.dtype == KvDType::kBF16) {
                    // elementwise
                } else {  // per token and head
                    for (int c2 = 0; c2 < f.d; ++c2) span((r * f.hkv + h) * f.d + c2);
                }
                if (f.dtype == KvDType::kBF16) lo = hi = x[e];
                b[e] = group_bound(f, lo, hi);
            }
        }
    }
    return b;
}

TEST(KvQuant, RoundTripStaysWithinTheStatedBoundForEveryFormat) {
    const int hkv = 2, d = 16, T = 8;
    uint64_t seed = test_seed();
    for (const auto& f : all_formats(hkv, d, T)) {
        SCOPED_TRACE(describe(f));
        for (int64_t rows : {int64_t{1}, int64_t{5}, int64_t{T}}) {
            // Keys with a channel offset (the outlier channels KIVI is built for), values plain.
            auto k = random_floats(static_cast<size_t>(rows * hkv * d), ++seed, -2.0f, 2.0f);
            auto v = random_floats(static_cast<size_t>(rows * hkv * d), ++seed, -1.0f, 1.0f);
            for (size_t i = 0; i < k.size(); ++i) k[i] += (i % d == 3) ? 20.0f : 0.0f;
            std::vector<uint8_t> page(static_cast<size_t>(kv_page_bytes(f)));
            ASSERT_TRUE(kv_quantize_page(f, k.data(), v.data(), rows, page.data()).ok());
            std::vector<float> kd(k.size()), vd(v.size());
            ASSERT_TRUE(kv_dequantize_page(f, page.data(), 0, rows, kd.data(), vd.data()).ok());
            const auto kb = element_bounds(f, k, rows, true);
            const auto vb = element_bounds(f, v, rows, false);
            for (size_t i = 0; i < k.size(); ++i) {
                ASSERT_TRUE(std::isfinite(kd[i]) && std::isfinite(vd[i]));
                ASSERT_LE(std::fabs(kd[i] - k[i]), kb[i]) << "key " << i << " rows " << rows;
                ASSERT_LE(std::fabs(vd[i] - v[i]), vb[i]) << "value " << i << " rows " << rows;
            }
            // A row range dequantizes to the same values as the whole page.
            if (rows > 2) {
                std::vector<float> k2(static_cast<size_t>(2 * hkv * d));
                ASSERT_TRUE(kv_dequantize_page(f, page.data(), 1, 2, k2.data(), nullptr).ok());
                EXPECT_EQ(0, std::memcmp(k2.data(), kd.data() + hkv * d, k2.size() * 4));
            }
        }
    }
}

// Asymmetric formats hold a constant row exactly (m = the value, codes 0); int8 (symmetric) is
// within half a step.
TEST(KvQuant, ConstantRowsRoundTripExactlyAndNonFiniteInputIsRejected) {
    for (const auto& f : all_formats(1, 8, 4)) {
        SCOPED_TRACE(describe(f));
        std::vector<float> k(4 * 8, 0.375f), v(4 * 8, -1.5f);
        std::vector<uint8_t> page(static_cast<size_t>(kv_page_bytes(f)));
        ASSERT_TRUE(kv_quantize_page(f, k.data(), v.data(), 4, page.data()).ok());
        std::vector<float> kd(k.size()), vd(v.size());
        ASSERT_TRUE(kv_dequantize_page(f, page.data(), 0, 4, kd.data(), vd.data()).ok());
        const bool sym = f.dtype == KvDType::kInt8;
        EXPECT_LE(max_abs_error(kd, to_double(k)), sym ? 0.375 / 254 * 1.001 : 0.0);
        EXPECT_LE(max_abs_error(vd, to_double(v)), sym ? 1.5 / 254 * 1.001 : 0.0);
        if (f.dtype == KvDType::kF32 || f.dtype == KvDType::kBF16) continue;
        k[5] = std::nanf("");
        EXPECT_EQ(kv_quantize_page(f, k.data(), v.data(), 4, page.data()).code(),
                  StatusCode::kInvalidArgument);
    }
}

TEST(KvQuant, PageBytesMatchTheDocumentedLayout) {
    // Qwen3-shaped heads: hkv 8, d 128, pages of 32.
    const int64_t T = 32, E = 8 * 128;
    EXPECT_EQ(kv_page_bytes(format(KvDType::kF32, KvScheme::kPerToken, 8, 128, 32)), 2 * T * E * 4);
    EXPECT_EQ(kv_page_bytes(format(KvDType::kBF16, KvScheme::kPerToken, 8, 128, 32)),
              2 * T * E * 2);
    EXPECT_EQ(kv_page_bytes(format(KvDType::kInt8, KvScheme::kPerToken, 8, 128, 32)),
              2 * T * E + 2 * T * 8 * 2);
    EXPECT_EQ(kv_page_bytes(format(KvDType::kInt4, KvScheme::kPerToken, 8, 128, 32)),
              T * E + 2 * T * 8 * 4);
    EXPECT_EQ(kv_page_bytes(format(KvDType::kInt2, KvScheme::kKivi, 8, 128, 32, 32)),
              T * E / 2 + E * 4 + T * 8 * 4 * 4);
    EXPECT_FALSE(validate(format(KvDType::kInt2, KvScheme::kPerToken, 8, 128, 32)).ok());
    EXPECT_FALSE(validate(format(KvDType::kInt2, KvScheme::kKivi, 8, 128, 32, 48)).ok());
    EXPECT_FALSE(validate(format(KvDType::kInt2, KvScheme::kKivi, 1, 2, 32, 2)).ok());
    EXPECT_FALSE(validate(format(KvDType::kInt8, KvScheme::kKivi, 8, 128, 32)).ok());
}

struct PagedCase {
    std::vector<KvPageFormat> formats;        // one per page (pointed to by refs)
    std::vector<std::vector<uint8_t>> pages;  //
    std::vector<KvPageRef> refs;              //
    std::vector<float> k, v;                  // original keys/values in position order
    std::vector<float> kd, vd;                // dequantized, in position order
};

// Pages of random formats holding `tk` tokens from position 0 (some pages partly used).
PagedCase make_paged_case(int hkv, int d, int T, int64_t tk, uint64_t seed, bool mixed,
                          KvDType only = KvDType::kInt2) {
    PagedCase c;
    const auto fmts = all_formats(hkv, d, T);
    const int64_t E = static_cast<int64_t>(hkv) * d;
    c.k = random_floats(static_cast<size_t>(tk * E), seed);
    c.v = random_floats(static_cast<size_t>(tk * E), seed + 1);
    int64_t pos = 0;
    uint64_t pick = seed;
    c.formats.reserve(static_cast<size_t>(tk));
    while (pos < tk) {
        pick = pick * 6364136223846793005ull + 1442695040888963407ull;
        const int64_t rows =
            std::min<int64_t>(tk - pos, 1 + static_cast<int64_t>((pick >> 33) % T));
        KvPageFormat f = fmts[(pick >> 40) % fmts.size()];
        if (!mixed) f = only == KvDType::kInt2 ? fmts[5] : fmts[only == KvDType::kInt8 ? 2 : 3];
        c.formats.push_back(f);
        std::vector<uint8_t> page(static_cast<size_t>(kv_page_bytes(f)));
        // Place the rows at an offset inside the page when they fit (row0 > 0 exercised).
        const int32_t row0 = static_cast<int32_t>(T - rows > 0 ? (pick >> 50) % (T - rows + 1) : 0);
        std::vector<float> kk(static_cast<size_t>(T * E), 0.0f), vv(kk.size(), 0.0f);
        std::copy(c.k.begin() + pos * E, c.k.begin() + (pos + rows) * E, kk.begin() + row0 * E);
        std::copy(c.v.begin() + pos * E, c.v.begin() + (pos + rows) * E, vv.begin() + row0 * E);
        EXPECT_TRUE(kv_quantize_page(f, kk.data(), vv.data(), row0 + rows, page.data()).ok());
        c.pages.push_back(std::move(page));
        c.refs.push_back(KvPageRef{nullptr, nullptr, row0, static_cast<int32_t>(rows), pos});
        std::vector<float> kd(static_cast<size_t>(rows * E)), vd(kd.size());
        EXPECT_TRUE(
            kv_dequantize_page(f, c.pages.back().data(), row0, rows, kd.data(), vd.data()).ok());
        c.kd.insert(c.kd.end(), kd.begin(), kd.end());
        c.vd.insert(c.vd.end(), vd.begin(), vd.end());
        pos += rows;
    }
    for (size_t i = 0; i < c.refs.size(); ++i) {
        c.refs[i].format = &c.formats[i];
        c.refs[i].page = c.pages[i].data();
    }
    return c;
}

// tk stays 0: the paged attention takes the key positions from the pages.
AttentionParams params(int64_t tq, int hq, int hkv, int d, bool causal, int64_t q_pos0) {
    return testkit::attention_params(tq, /*tk=*/0, hq, hkv, d, causal, q_pos0);
}

TEST(KvPagedAttention, MatchesDoubleReferenceOfTheDequantizedValues) {
    uint64_t seed = test_seed();
    struct Shape {
        int hq, hkv, d, T;
        int64_t tk, tq;
        bool causal;
    };
    // Decode (1..8 queries at the end), prefill (queries over every key, causal), non-causal.
    for (const Shape s : {Shape{4, 2, 16, 8, 45, 1, true}, Shape{4, 2, 16, 8, 45, 8, true},
                          Shape{8, 8, 32, 16, 70, 70, true}, Shape{6, 1, 64, 4, 19, 3, false},
                          Shape{4, 4, 16, 8, 1, 1, true}}) {
        SCOPED_TRACE("hq " + std::to_string(s.hq) + " tk " + std::to_string(s.tk) + " tq " +
                     std::to_string(s.tq));
        const PagedCase c = make_paged_case(s.hkv, s.d, s.T, s.tk, seed += 7, true);
        auto p = params(s.tq, s.hq, s.hkv, s.d, s.causal, s.tk - s.tq);
        const auto q = random_floats(static_cast<size_t>(s.tq * s.hq * s.d), seed + 3);
        std::vector<float> o(q.size()), lse(static_cast<size_t>(s.hq * s.tq));
        ASSERT_TRUE(kv_paged_attention_cpu(p, c.refs, q.data(), o.data(), lse.data()).ok());
        AttentionParams rp = p;
        rp.tk = s.tk;
        const auto ref = reference_forward(rp, to_double(q), to_double(c.kd), to_double(c.vd));
        EXPECT_TRUE(all_close(o, ref.o, 1e-5, 1e-5, "o"));
        EXPECT_TRUE(all_close(lse, ref.lse, 1e-5, 1e-5, "lse"));
    }
}

TEST(KvPagedAttention, AccumulatesIntoAPartialAndEmptyInputGivesTheMergeIdentity) {
    const int hq = 4, hkv = 2, d = 16, T = 8;
    const PagedCase c = make_paged_case(hkv, d, T, 30, test_seed(), true);
    const auto q = random_floats(static_cast<size_t>(2 * hq * d), test_seed() + 1);
    auto p = params(2, hq, hkv, d, true, 28);
    // First half of the pages, then the rest accumulated, equals all pages at once.
    std::vector<float> o1(q.size()), l1(static_cast<size_t>(hq * 2)), o2(q.size()), l2(l1.size());
    ASSERT_TRUE(kv_paged_attention_cpu(p, c.refs, q.data(), o1.data(), l1.data()).ok());
    const size_t half = c.refs.size() / 2;
    std::span<const KvPageRef> refs(c.refs);
    ASSERT_TRUE(kv_paged_attention_cpu(p, refs.first(half), q.data(), o2.data(), l2.data()).ok());
    p.accumulate = true;
    ASSERT_TRUE(kv_paged_attention_cpu(p, refs.subspan(half), q.data(), o2.data(), l2.data()).ok());
    EXPECT_TRUE(all_close(o2, to_double(o1), 1e-6, 1e-5, "o"));
    EXPECT_TRUE(all_close(l2, to_double(l1), 1e-6, 1e-5, "lse"));
    // No pages (or only future ones): o = 0, lse = -inf.
    p.accumulate = false;
    p.q_pos0 = 0;
    std::vector<float> o3(q.size(), 7.0f), l3(l1.size(), 7.0f);
    size_t future = 0;  // the first page after both queries (positions 0 and 1)
    while (c.refs[future].pos0 < 2) ++future;
    ASSERT_TRUE(
        kv_paged_attention_cpu(p, refs.subspan(future), q.data(), o3.data(), l3.data()).ok());
    for (float x : o3) EXPECT_EQ(x, 0.0f);
    for (float x : l3) EXPECT_TRUE(std::isinf(x) && x < 0);
}

// Drift against the unquantized reference, values in [-1, 1], d 64, 256 keys, 4 queries.
// Bounds (max |o - o_f32|): observed about 1e-3 (int8), 2e-2 (int4), 0.1 (int2); stated with
// 3-5x margin.
TEST(KvPagedAttention, DriftFromTheUnquantizedReferenceIsBounded) {
    const int hq = 8, hkv = 2, d = 64, T = 32;
    const int64_t tk = 256, tq = 4;
    struct Case {
        KvDType dt;
        double bound;
    };
    for (const Case cs :
         {Case{KvDType::kInt8, 5e-3}, Case{KvDType::kInt4, 0.08}, Case{KvDType::kInt2, 0.4}}) {
        SCOPED_TRACE(kv_dtype_name(cs.dt));
        const PagedCase c = make_paged_case(hkv, d, T, tk, test_seed() + 11, false, cs.dt);
        auto p = params(tq, hq, hkv, d, true, tk - tq);
        const auto q = random_floats(static_cast<size_t>(tq * hq * d), test_seed() + 12, -3, 3);
        std::vector<float> o(q.size()), lse(static_cast<size_t>(hq * tq));
        ASSERT_TRUE(kv_paged_attention_cpu(p, c.refs, q.data(), o.data(), lse.data()).ok());
        AttentionParams rp = p;
        rp.tk = tk;
        const auto ref = reference_forward(rp, to_double(q), to_double(c.k), to_double(c.v));
        const double err = max_abs_error(o, ref.o);
        RecordProperty(std::string("max_abs_drift_") + kv_dtype_name(cs.dt), std::to_string(err));
        EXPECT_LE(err, cs.bound);
        EXPECT_TRUE(all_close(o, ref.o, cs.bound, 0.0, "o"));
    }
}

// Expected pages of a sequence under the residual policy, built from scratch: page i holds
// positions [i T, (i + 1) T) (appends from 0, no gaps) and is sealed iff it is full and at least
// R (KIVI) / 0 tokens follow it.
std::vector<float> expected_keys(const KvSequenceConfig& cfg, const std::vector<float>& k,
                                 const std::vector<float>& v, int64_t len, bool values) {
    const KvPageFormat& f = cfg.sealed;
    const int64_t E = f.row_elems(), T = f.page_tokens;
    std::vector<float> out(static_cast<size_t>(len * E));
    for (int64_t p0 = 0; p0 < len; p0 += T) {
        const int64_t rows = std::min(T, len - p0);
        const bool sealed =
            f.dtype != KvDType::kF32 && kv_page_sealable(cfg, rows == T, len - p0 - rows);
        if (!sealed) {
            const auto& src = values ? v : k;
            std::copy(src.begin() + p0 * E, src.begin() + (p0 + rows) * E, out.begin() + p0 * E);
            continue;
        }
        std::vector<uint8_t> page(static_cast<size_t>(kv_page_bytes(f)));
        EXPECT_TRUE(
            kv_quantize_page(f, k.data() + p0 * E, v.data() + p0 * E, rows, page.data()).ok());
        std::vector<float> a(static_cast<size_t>(rows * E)), b(a.size());
        EXPECT_TRUE(kv_dequantize_page(f, page.data(), 0, rows, a.data(), b.data()).ok());
        const auto& src = values ? b : a;
        std::copy(src.begin(), src.end(), out.begin() + p0 * E);
    }
    return out;
}

TEST(KvPagedSequence, ResidualWindowFoldsAtEveryBoundary) {
    const int hq = 4, hkv = 2, d = 8, T = 4;
    for (KvDType dt : {KvDType::kInt2, KvDType::kInt4, KvDType::kInt8}) {
        for (int64_t R : {0, 1, 4, 6}) {
            SCOPED_TRACE(std::string(kv_dtype_name(dt)) + " R=" + std::to_string(R));
            KvSequenceConfig cfg;
            cfg.sealed = format(dt, dt == KvDType::kInt8 ? KvScheme::kPerToken : KvScheme::kKivi,
                                hkv, d, T, 4);
            cfg.residual_tokens = R;
            auto seq = KvPagedSequence::create(cfg);
            ASSERT_TRUE(seq.ok());
            const int64_t E = hkv * d, L = 29;
            const auto k = random_floats(static_cast<size_t>(L * E), test_seed() + R);
            const auto v = random_floats(static_cast<size_t>(L * E), test_seed() + R + 100);
            for (int64_t len = 1; len <= L; ++len) {  // one token at a time: every boundary
                ASSERT_TRUE(
                    seq->append(len - 1, 1, k.data() + (len - 1) * E, v.data() + (len - 1) * E)
                        .ok());
                const int64_t window = cfg.sealed.kivi() ? R : 0;
                const int64_t sealed = len >= window ? (len - window) / T : 0;
                ASSERT_EQ(seq->sealed_pages(), sealed) << "len " << len;
                ASSERT_EQ(seq->f32_tokens(), len - sealed * T) << "len " << len;
                if (cfg.sealed.kivi() && len >= R + T) {
                    EXPECT_GE(seq->f32_tokens(), R);
                    EXPECT_LT(seq->f32_tokens(), R + T);
                }
                // The attention reads exactly the expected (folded) values.
                const auto q = random_floats(static_cast<size_t>(hq * d), test_seed() + len);
                std::vector<float> o(q.size()), lse(hq);
                ASSERT_TRUE(seq->attend(hq, default_softmax_scale(d), q.data(), 1, len - 1,
                                        o.data(), lse.data())
                                .ok());
                auto p = params(1, hq, hkv, d, true, len - 1);
                p.tk = len;
                const auto ref = reference_forward(p, to_double(q),
                                                   to_double(expected_keys(cfg, k, v, len, false)),
                                                   to_double(expected_keys(cfg, k, v, len, true)));
                ASSERT_TRUE(all_close(o, ref.o, 1e-5, 1e-5, "o")) << "len " << len;
            }
        }
    }
}

TEST(KvPagedSequence, FoldingDoesNotDependOnHowTokensAreChunked) {
    const int hq = 4, hkv = 2, d = 8;
    KvSequenceConfig cfg;
    cfg.sealed = format(KvDType::kInt2, KvScheme::kKivi, hkv, d, 4, 8);
    cfg.residual_tokens = 5;
    const int64_t E = hkv * d, L = 41;
    const auto k = random_floats(static_cast<size_t>(L * E), test_seed());
    const auto v = random_floats(static_cast<size_t>(L * E), test_seed() + 1);
    auto a = KvPagedSequence::create(cfg);
    auto b = KvPagedSequence::create(cfg);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE(a->append(0, L, k.data(), v.data()).ok());
    int64_t pos = 0, n = 1;
    while (pos < L) {
        const int64_t take = std::min(n, L - pos);
        ASSERT_TRUE(b->append(pos, take, k.data() + pos * E, v.data() + pos * E).ok());
        pos += take;
        n = n % 9 + 2;
    }
    EXPECT_EQ(a->sealed_pages(), b->sealed_pages());
    EXPECT_EQ(a->bytes(), b->bytes());
    const auto q = random_floats(static_cast<size_t>(3 * hq * d), test_seed() + 2);
    std::vector<float> oa(q.size()), ob(q.size()), la(3 * hq), lb(3 * hq);
    const float sc = default_softmax_scale(d);
    ASSERT_TRUE(a->attend(hq, sc, q.data(), 3, L - 3, oa.data(), la.data()).ok());
    ASSERT_TRUE(b->attend(hq, sc, q.data(), 3, L - 3, ob.data(), lb.data()).ok());
    EXPECT_EQ(0, std::memcmp(oa.data(), ob.data(), oa.size() * 4));
    EXPECT_EQ(a->append(3, 1, k.data(), v.data()).code(), StatusCode::kAlreadyExists);
}

// Sharded decode over quantized shards: every rank bitwise equal; equal to one device reading the
// same pages (double reference of the dequantized values, 1e-5); drift from f32 bounded.
TEST(KvDecodeShard, ShardedQuantizedDecodeMatchesTheSameShardsOnOneDevice) {
    const int hq = 4, hkv = 2, d = 16, T = 4;
    const int64_t E = hkv * d;
    const std::chrono::milliseconds timeout{20000};
    for (int ranks : {1, 2, 3, 4}) {
        SCOPED_TRACE("P=" + std::to_string(ranks));
        KvSequenceConfig cfg;
        cfg.sealed = format(KvDType::kInt2, KvScheme::kKivi, hkv, d, T, 8);
        cfg.residual_tokens = 6;
        auto transports = make_in_process_ring(ranks);
        std::vector<KvDecodeShard> shards;
        for (int r = 0; r < ranks; ++r) {
            auto s = KvDecodeShard::create(cfg, hq, default_softmax_scale(d), r, ranks);
            ASSERT_TRUE(s.ok());
            shards.push_back(std::move(s).value());
        }
        int64_t len = 37;
        std::vector<float> k = random_floats(static_cast<size_t>(len * E), test_seed() + ranks);
        std::vector<float> v = random_floats(static_cast<size_t>(len * E), test_seed() + 50);
        for (int r = 0; r < ranks; ++r) {
            for (const auto& seg : ring_shard(RingLayout::kZigzag, len, ranks, r).segments) {
                ASSERT_TRUE(
                    shards[r]
                        .store(seg.pos0, seg.rows, k.data() + seg.pos0 * E, v.data() + seg.pos0 * E)
                        .ok());
            }
        }
        uint64_t seed = test_seed() + 1000;
        for (int64_t n : {1, 1, 3, 8, 1, 2, 5, 1, 1, 1, 4}) {
            const auto nk = random_floats(static_cast<size_t>(n * E), ++seed);
            const auto nv = random_floats(static_cast<size_t>(n * E), ++seed);
            const auto q = random_floats(static_cast<size_t>(n * hq * d), ++seed);
            for (auto& s : shards) ASSERT_TRUE(s.append(len, n, nk.data(), nv.data()).ok());
            k.insert(k.end(), nk.begin(), nk.end());
            v.insert(v.end(), nv.begin(), nv.end());
            const int64_t q_pos0 = len;
            len += n;
            std::vector<std::vector<float>> o(ranks), lse(ranks);
            std::vector<Status> st(ranks);
            std::vector<std::thread> threads;
            for (int r = 0; r < ranks; ++r) {
                o[r].resize(q.size());
                lse[r].resize(static_cast<size_t>(n * hq));
                threads.emplace_back([&, r] {
                    st[r] = shards[r].decode_attend(*transports[r], q.data(), n, q_pos0,
                                                    o[r].data(), lse[r].data(), timeout);
                });
            }
            for (auto& t : threads) t.join();
            // One device: the union of every shard's pages, in position order, dequantized.
            std::vector<KvPageRef> all;
            for (const auto& s : shards) {
                const auto refs = s.sequence().pages();
                all.insert(all.end(), refs.begin(), refs.end());
            }
            std::sort(all.begin(), all.end(),
                      [](const KvPageRef& a, const KvPageRef& b) { return a.pos0 < b.pos0; });
            std::vector<float> kd, vd;
            int64_t total = 0;
            for (const auto& ref : all) {
                std::vector<float> a(static_cast<size_t>(ref.rows * E)), b(a.size());
                ASSERT_TRUE(kv_dequantize_page(*ref.format, ref.page, ref.row0, ref.rows, a.data(),
                                               b.data())
                                .ok());
                kd.insert(kd.end(), a.begin(), a.end());
                vd.insert(vd.end(), b.begin(), b.end());
                ASSERT_EQ(ref.pos0, total);  // the shards cover every position once
                total += ref.rows;
            }
            ASSERT_EQ(total, len);
            auto p = params(n, hq, hkv, d, true, q_pos0);
            p.tk = len;
            const auto ref = reference_forward(p, to_double(q), to_double(kd), to_double(vd));
            const auto ref32 = reference_forward(p, to_double(q), to_double(k), to_double(v));
            for (int r = 0; r < ranks; ++r) {
                ASSERT_TRUE(st[r].ok()) << st[r].to_string();
                EXPECT_TRUE(all_close(o[r], ref.o, 1e-5, 1e-5, "o"));
                EXPECT_TRUE(all_close(lse[r], ref.lse, 1e-5, 1e-5, "lse"));
                EXPECT_EQ(0, std::memcmp(o[r].data(), o[0].data(), o[0].size() * 4));
                EXPECT_TRUE(all_close(o[r], ref32.o, 0.4, 0.0, "o vs f32"));
            }
        }
        int64_t sealed = 0;
        for (const auto& s : shards) sealed += s.sequence().sealed_pages();
        EXPECT_GT(sealed, 0);
    }
}

void rope_at(std::vector<float>& x, int64_t n, int heads, int d, const std::vector<double>& inv,
             int64_t pos0) {
    for (int64_t r = 0; r < n; ++r) {
        for (int h = 0; h < heads; ++h) {
            float* v = x.data() + (r * heads + h) * d;
            for (int i = 0; i < d / 2; ++i) {
                const double a = static_cast<double>(pos0 + r) * inv[static_cast<size_t>(i)];
                const double x0 = v[i], x1 = v[i + d / 2];
                v[i] = static_cast<float>(x0 * std::cos(a) - x1 * std::sin(a));
                v[i + d / 2] = static_cast<float>(x1 * std::cos(a) + x0 * std::sin(a));
            }
        }
    }
}

TEST(KvRope, ShiftingRotatedKeysEqualsRotatingAtTheNewPosition) {
    const int heads = 2, d = 32;
    const int64_t n = 20;
    std::vector<double> inv(d / 2);
    for (int i = 0; i < d / 2; ++i) inv[static_cast<size_t>(i)] = std::pow(1e4, -2.0 * i / d);
    const auto raw = random_floats(static_cast<size_t>(n * heads * d), test_seed());
    for (int64_t delta : {int64_t{1}, int64_t{37}, int64_t{1500}, int64_t{-5}}) {
        auto shifted = raw;
        rope_at(shifted, n, heads, d, inv, 10);
        rope_shift_keys(shifted.data(), n, heads, d, inv, delta);
        auto direct = raw;
        rope_at(direct, n, heads, d, inv, 10 + delta);
        EXPECT_TRUE(all_close(shifted, to_double(direct), 2e-6, 1e-5, "shifted keys"))
            << "delta " << delta;
    }
}

}  // namespace
}  // namespace tandem::kernels
