// Quantized KV pages on the device (kernels/cuda/paged_kv.h) against the CPU engine's page code
// (kernels/kv_quant.h) on the same rows. Skips with a reason without a device. Expected, and
// printed for the first device run (first estimates):
//   paged_kv_write_pages (bf16, int8, int4 per token) vs kv_quantize_page of the same bf16
//     rows: every byte of every full page equal (same scale rounding, codes rounded to nearest
//     even; 'paged pages write <dtype>: bytes differing' prints the count)
//   paged_requantize of int8 pages to int2 KIVI, int4 KIVI and int4 per token vs
//     kv_dequantize_page + kv_quantize_page on the host: every byte equal (int8 dequantizes
//     exactly: scale x code)
//   paged_decode_attention over pages (some blocks flagged compressed, read from the second
//     pool), 1 split and forced 3 and 7 splits, vs attention in double over the host-dequantized
//     pages with the same bf16 q: |err| <= 2e-4 + 1e-3 |ref|; the split results agree with one
//     split to 1e-4 (float sums in another order; values up to ~30) ('paged decode pages ...'
//     prints both)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "kernels/cuda/kv_attention.h"
#include "kernels/cuda/paged_kv.h"
#include "kernels/kv_quant.h"
#include "tests/gpu/cuda_test_util.h"

namespace tandem::kernels::cuda {
namespace {

using testing::CudaFixture;

class PagedKvPagesTest : public CudaFixture {};

KvPageFormat page_format(KvDType dt, bool kivi, int hkv, int d, int bt, int group = 16) {
    KvPageFormat f;
    f.dtype = dt;
    f.scheme = kivi ? KvScheme::kKivi : KvScheme::kPerToken;
    f.hkv = hkv;
    f.d = d;
    f.page_tokens = bt;
    f.value_group = group;
    return f;
}

// Random rows, rounded to bf16 (what the device writes from), normal with a few outliers.
std::vector<float> random_rows(std::mt19937_64& rng, size_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(n);
    for (auto& v : x) v = dist(rng);
    for (size_t i = 0; i < n; i += 97) x[i] *= 8.0f;
    return x;
}

struct Pages {
    PagedKvShape shape;
    uint8_t* pool = nullptr;
    std::vector<int32_t> order;  // block of page i (shuffled)
};

// Writes `blocks` full pages of rows k, v (bf16-rounded in place) through slots in shuffled
// blocks of a pool of blocks + 1.
Pages write_pages(PagedKvPagesTest& t, const KvPageFormat& f, int blocks, std::vector<float>& k,
                  std::vector<float>& v, std::mt19937_64& rng) {
    Pages p;
    auto pages = paged_kv_pages(f);
    EXPECT_TRUE(pages.ok()) << pages.status().to_string();
    p.shape = PagedKvShape{blocks + 1, f.page_tokens, f.hkv, f.d, *pages};
    p.order.resize(static_cast<size_t>(blocks));
    std::iota(p.order.begin(), p.order.end(), 1);
    std::shuffle(p.order.begin(), p.order.end(), rng);
    std::vector<int32_t> slots;
    for (int b = 0; b < blocks; ++b) {
        for (int r = 0; r < f.page_tokens; ++r) slots.push_back(p.order[b] * f.page_tokens + r);
    }
    Bf16* dk = t.upload_bf16(k);
    Bf16* dv = t.upload_bf16(v);
    p.pool = t.device<uint8_t>(static_cast<size_t>(p.shape.layer_bytes()));
    EXPECT_TRUE(fill_zero(t.s(), p.pool, p.shape.layer_bytes()).ok());
    const Status st =
        paged_kv_write_pages(t.s(), p.shape, std::ssize(slots), t.upload(slots), dk, dv, p.pool);
    EXPECT_TRUE(st.ok()) << st.to_string();
    return p;
}

TEST_F(PagedKvPagesTest, WrittenRowsAreTheCpuEnginesQuantizedPages) {
    std::mt19937_64 rng(21);
    const int hkv = 2, d = 64, bt = 16, blocks = 3;
    for (const KvDType dt : {KvDType::kBF16, KvDType::kInt8, KvDType::kInt4}) {
        SCOPED_TRACE(kv_dtype_name(dt));
        const KvPageFormat f = page_format(dt, false, hkv, d, bt);
        const size_t elems = static_cast<size_t>(blocks) * bt * hkv * d;
        std::vector<float> k = random_rows(rng, elems), v = random_rows(rng, elems);
        const Pages p = write_pages(*this, f, blocks, k, v, rng);
        const std::vector<uint8_t> got =
            download(p.pool, static_cast<size_t>(p.shape.layer_bytes()));
        int64_t differing = 0;
        const int64_t page_bytes = kv_page_bytes(f);
        for (int b = 0; b < blocks; ++b) {
            std::vector<uint8_t> want(static_cast<size_t>(page_bytes));
            const size_t at = static_cast<size_t>(b) * bt * hkv * d;
            ASSERT_TRUE(kv_quantize_page(f, k.data() + at, v.data() + at, bt, want.data()).ok());
            const uint8_t* page = got.data() + p.order[b] * p.shape.pages.stride;
            for (int64_t i = 0; i < page_bytes; ++i) differing += page[i] != want[i];
        }
        std::printf("paged pages write %s: bytes differing %lld of %lld\n", kv_dtype_name(dt),
                    static_cast<long long>(differing), static_cast<long long>(page_bytes * blocks));
        EXPECT_EQ(differing, 0);
    }
}

TEST_F(PagedKvPagesTest, RequantizeIsTheCpuRequantizationOfTheSamePages) {
    std::mt19937_64 rng(22);
    const int hkv = 2, d = 64, bt = 16, blocks = 4, layers = 1;
    const KvPageFormat from = page_format(KvDType::kInt8, false, hkv, d, bt);
    const size_t elems = static_cast<size_t>(blocks) * bt * hkv * d;
    std::vector<float> k = random_rows(rng, elems), v = random_rows(rng, elems);
    const Pages p = write_pages(*this, from, blocks, k, v, rng);
    const std::vector<uint8_t> src = download(p.pool, static_cast<size_t>(p.shape.layer_bytes()));
    for (const auto& [dt, kivi] : std::vector<std::pair<KvDType, bool>>{
             {KvDType::kInt2, true}, {KvDType::kInt4, true}, {KvDType::kInt4, false}}) {
        const KvPageFormat to = page_format(dt, kivi, hkv, d, bt);
        SCOPED_TRACE(describe(to));
        auto to_pages = paged_kv_pages(to);
        ASSERT_TRUE(to_pages.ok());
        uint8_t* dst = device<uint8_t>(static_cast<size_t>((blocks + 1) * to_pages->stride));
        const std::vector<int32_t> which(p.order.begin(), p.order.end());
        const Status st =
            paged_requantize(s(), p.shape, layers, blocks, upload(which), p.pool, *to_pages, dst);
        ASSERT_TRUE(st.ok()) << st.to_string();
        const std::vector<uint8_t> got =
            download(dst, static_cast<size_t>((blocks + 1) * to_pages->stride));
        int64_t differing = 0;
        for (const int32_t b : which) {
            std::vector<float> kd(static_cast<size_t>(bt) * hkv * d), vd(kd.size());
            ASSERT_TRUE(kv_dequantize_page(from, src.data() + b * p.shape.pages.stride, 0, bt,
                                           kd.data(), vd.data())
                            .ok());
            std::vector<uint8_t> want(static_cast<size_t>(kv_page_bytes(to)));
            ASSERT_TRUE(kv_quantize_page(to, kd.data(), vd.data(), bt, want.data()).ok());
            const uint8_t* page = got.data() + b * to_pages->stride;
            for (size_t i = 0; i < want.size(); ++i) differing += page[i] != want[i];
        }
        std::printf("paged pages requantize int8 -> %s: bytes differing %lld\n",
                    describe(to).c_str(), static_cast<long long>(differing));
        EXPECT_EQ(differing, 0);
    }
}

TEST_F(PagedKvPagesTest, DecodeOverPagesAndCompressedPagesInSplitsMatchesDouble) {
    std::mt19937_64 rng(23);
    const int hq = 8, hkv = 2, d = 64, bt = 16;
    const std::vector<int> lens{1, 17, 100, 333};
    const int n = static_cast<int>(lens.size());
    int width = 0, blocks = 0;
    for (int len : lens) {
        width = std::max(width, (len + bt - 1) / bt);
        blocks += (len + bt - 1) / bt;
    }
    const KvPageFormat f = page_format(KvDType::kInt8, false, hkv, d, bt);
    const KvPageFormat cf = page_format(KvDType::kInt2, true, hkv, d, bt);
    auto fp = paged_kv_pages(f);
    auto cp = paged_kv_pages(cf);
    ASSERT_TRUE(fp.ok() && cp.ok());
    const PagedKvShape shape{blocks + 1, bt, hkv, d, *fp};
    std::vector<int32_t> ids(static_cast<size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 1);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<int32_t> table(static_cast<size_t>(n * width), 0), slots;
    size_t next = 0;
    for (int r = 0; r < n; ++r) {
        for (int i = 0; i < lens[r]; ++i) {
            if (i % bt == 0) table[r * width + i / bt] = ids[next++];
            slots.push_back(table[r * width + i / bt] * bt + i % bt);
        }
    }
    const size_t kvd = static_cast<size_t>(hkv) * d;
    std::vector<float> k = random_rows(rng, slots.size() * kvd), v = random_rows(rng, k.size());
    std::vector<float> q = random_rows(rng, static_cast<size_t>(n) * hq * d);
    Bf16* dk = upload_bf16(k);
    Bf16* dv = upload_bf16(v);
    Bf16* dq = upload_bf16(q);
    uint8_t* pool = device<uint8_t>(static_cast<size_t>(shape.layer_bytes()));
    uint8_t* cpool = device<uint8_t>(static_cast<size_t>((blocks + 1) * cp->stride));
    ASSERT_TRUE(fill_zero(s(), pool, shape.layer_bytes()).ok());
    ASSERT_TRUE(
        paged_kv_write_pages(s(), shape, std::ssize(slots), upload(slots), dk, dv, pool).ok());
    // Every other full block compressed to int2 KIVI and flagged.
    std::vector<int32_t> flags(static_cast<size_t>(blocks + 1), 0), compress;
    for (int r = 0; r < n; ++r) {
        for (int i = 0; (i + 1) * bt <= lens[r]; i += 2) {
            compress.push_back(table[r * width + i]);
            flags[static_cast<size_t>(table[r * width + i])] = 1;
        }
    }
    if (!compress.empty()) {
        ASSERT_TRUE(paged_requantize(s(), shape, 1, std::ssize(compress), upload(compress), pool,
                                     *cp, cpool)
                        .ok());
    }
    // The host's view of every position: its block's page, dequantized.
    const std::vector<uint8_t> hp = download(pool, static_cast<size_t>(shape.layer_bytes()));
    const std::vector<uint8_t> hc = download(cpool, static_cast<size_t>((blocks + 1) * cp->stride));
    auto row_kv = [&](int32_t block, int row, std::vector<float>& kr, std::vector<float>& vr) {
        const bool z = flags[static_cast<size_t>(block)] != 0;
        const KvPageFormat& pf = z ? cf : f;
        const uint8_t* page = (z ? hc.data() + block * cp->stride : hp.data() + block * fp->stride);
        kr.resize(kvd);
        vr.resize(kvd);
        ASSERT_TRUE(kv_dequantize_page(pf, page, row, 1, kr.data(), vr.data()).ok());
    };
    std::vector<int32_t> lens32(lens.begin(), lens.end());
    PagedDecode pd;
    pd.shape = shape;
    pd.n = n;
    pd.hq = hq;
    pd.scale = 1.0f / std::sqrt(static_cast<float>(d));
    pd.block_table = upload(table);
    pd.table_width = width;
    pd.context_lens = upload(lens32);
    pd.pages = pool;
    pd.cpages = cpool;
    pd.cformat = *cp;
    pd.compressed = upload(flags);
    std::vector<float> one;
    for (const int splits : {1, 3, 7}) {
        pd.splits = splits;
        pd.partials = device<float>(static_cast<size_t>(splits) * n * hq * (d + 1));
        pd.lse = device<float>(static_cast<size_t>(n) * hq);
        float* o = device<float>(q.size());
        const Status st = paged_decode_attention(s(), pd, dq, o);
        ASSERT_TRUE(st.ok()) << st.to_string();
        const std::vector<float> got = download(o, q.size());
        double worst = 0, vs_one = 0;
        for (int r = 0; r < n; ++r) {
            std::vector<std::vector<float>> ks(static_cast<size_t>(lens[r])), vs(ks.size());
            for (int j = 0; j < lens[r]; ++j) {
                row_kv(table[r * width + j / bt], j % bt, ks[static_cast<size_t>(j)],
                       vs[static_cast<size_t>(j)]);
            }
            for (int h = 0; h < hq; ++h) {
                const int kvh = h / (hq / hkv);
                std::vector<double> sc(static_cast<size_t>(lens[r]));
                double mx = -INFINITY, den = 0;
                for (int j = 0; j < lens[r]; ++j) {
                    double dot = 0;
                    for (int c = 0; c < d; ++c) {
                        dot += double{q[(r * hq + h) * d + c]} * ks[j][kvh * d + c];
                    }
                    sc[j] = dot * pd.scale;
                    mx = std::max(mx, sc[j]);
                }
                for (auto& x : sc) den += x = std::exp(x - mx);
                for (int c = 0; c < d; ++c) {
                    double ref = 0;
                    for (int j = 0; j < lens[r]; ++j) ref += sc[j] * vs[j][kvh * d + c];
                    ref /= den;
                    const size_t i = static_cast<size_t>((r * hq + h) * d + c);
                    ASSERT_TRUE(std::isfinite(got[i])) << "row " << r << " head " << h;
                    const double e = std::abs(got[i] - ref);
                    worst = std::max(worst, e);
                    EXPECT_LE(e, 2e-4 + 1e-3 * std::abs(ref))
                        << "splits " << splits << " row " << r << " head " << h << " ch " << c;
                    if (!one.empty()) vs_one = std::max(vs_one, double{std::abs(got[i] - one[i])});
                }
            }
        }
        if (splits == 1) one = got;
        std::printf(
            "paged decode pages (int8 + int2 kivi compressed) splits %d: max |err| %.3g, "
            "vs 1 split %.3g\n",
            splits, worst, vs_one);
        EXPECT_LE(vs_one, 1e-4);
    }
}

TEST_F(PagedKvPagesTest, RefusesKiviWritesAndMismatchedPools) {
    auto kivi = paged_kv_pages(page_format(KvDType::kInt2, true, 2, 64, 16));
    ASSERT_TRUE(kivi.ok());
    const PagedKvShape shape{4, 16, 2, 64, *kivi};
    uint8_t* pool = device<uint8_t>(static_cast<size_t>(shape.layer_bytes()));
    Bf16* rows = device<Bf16>(2 * 64);
    int32_t* slots = device<int32_t>(1);
    const Status st = paged_kv_write_pages(s(), shape, 1, slots, rows, rows, pool);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("KIVI"), std::string::npos) << st.message();
    const PagedKvShape bf16{4, 16, 2, 64};
    const Status wrong = paged_kv_write_pages(s(), bf16, 1, slots, rows, rows, pool);
    EXPECT_NE(wrong.message().find("bf16 rows"), std::string::npos) << wrong.message();
}

}  // namespace
}  // namespace tandem::kernels::cuda
