#pragma once

// Quantized KV pages: storage formats for cached keys and values, quantize / dequantize, and
// attention that reads the pages directly (CPU here; a CUDA kernel mirrors the same byte layout).
//
// A page holds `page_tokens` consecutive rows of one layer's keys and values, all kv heads:
// logically k [page_tokens, hkv, d] and v [page_tokens, hkv, d]. Row r of head h, channel c is
// element e = (r * hkv + h) * d + c. Formats (x = stored value, c = code, s = scale, m = minimum;
// f16 = IEEE half, bf16 = bfloat16; all scales are stored rounded so that the bounds below hold):
//
//   kF32                  K f32[e] | V f32[e]                                     x = value
//   kBF16                 K bf16[e] | V bf16[e]                                   |x - v| <= 2^-8 |v|
//   kInt8  (per token)    K i8[e] | V i8[e] | K s f16 [T, hkv] | V s f16 [T, hkv]
//                         symmetric, x = s * c, c in [-127, 127], s >= absmax(row, head) / 127
//                         |x - v| <= s / 2
//   kInt4  (per token)    K u4[e] | V u4[e] | K (m, s) f16 [T, hkv, 2] | V (m, s) f16 [T, hkv, 2]
//                         asymmetric, x = m + s * c, c in [0, 15], m <= min, m + 15 s >= max
//                         |x - v| <= s / 2 (+ fp32 rounding of m + s * c)
//   kInt4 / kInt2 (KIVI)  K uN[e] | V uN[e] | K (m, s) f16 [hkv, d, 2] | V (m, s) f16 [T, hkv, d/G, 2]
//                         keys per channel over the page's rows (the page is the key group),
//                         values per token in groups of G = value_group channels;
//                         c in [0, 2^N - 1], |x - v| <= s / 2 (+ fp32 rounding)
//
// N-bit codes are packed little-endian within bytes: element e occupies bits (e * N) % 8 ..
// of byte (e * N) / 8. Rows of a page after the quantized ones hold zero codes. Scales are
// computed over the rows quantized together (a partial page quantizes over its rows only).
// bf16 scales would lose range; f16 scales are clamped to [2^-24, 65504] (a row whose range is
// zero gets s = 2^-24 and exact codes).

#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"
#include "kernels/attention.h"

namespace tandem::kernels {

enum class KvDType : uint8_t { kF32, kBF16, kInt8, kInt4, kInt2 };
enum class KvScheme : uint8_t { kPerToken, kKivi };

const char* kv_dtype_name(KvDType dtype);
Result<KvDType> parse_kv_dtype(std::string_view name);
// Bits per stored element (32, 16, 8, 4, 2).
int kv_dtype_bits(KvDType dtype);

struct KvPageFormat {
    KvDType dtype = KvDType::kF32;
    // Scheme of the integer formats: kInt8 is always per token, kInt2 always KIVI, kInt4 either.
    // Ignored for kF32 / kBF16.
    KvScheme scheme = KvScheme::kPerToken;
    int hkv = 0;
    int d = 0;
    int page_tokens = 0;  // rows per page (KIVI: the key group)
    int value_group = 0;  // KIVI: channels per value scale group; divides d

    bool kivi() const {
        return dtype == KvDType::kInt2 || (dtype == KvDType::kInt4 && scheme == KvScheme::kKivi);
    }
    int64_t row_elems() const { return static_cast<int64_t>(hkv) * d; }
    bool operator==(const KvPageFormat&) const = default;
};

// Checks the fields (positive dims, a scheme the dtype allows, codes filling whole bytes per row,
// value_group dividing d for KIVI).
Status validate(const KvPageFormat& f);
// Bytes of one page, scales included.
int64_t kv_page_bytes(const KvPageFormat& f);
// "int2/kivi [T=32 hkv=8 d=128 G=32]" for messages.
std::string describe(const KvPageFormat& f);

// Quantizes rows [0, rows) of k and v ([rows, hkv, d] fp32, contiguous) into `page`
// (kv_page_bytes(f) bytes). Rows >= rows are zeroed. 0 < rows <= page_tokens. NaN/inf in the
// input is invalid_argument for the integer formats (the page is left unspecified).
Status kv_quantize_page(const KvPageFormat& f, const float* k, const float* v, int64_t rows,
                        uint8_t* page);

// Dequantizes rows [row0, row0 + rows) of `page` into k and v ([rows, hkv, d] fp32). Either
// output may be null to skip it.
Status kv_dequantize_page(const KvPageFormat& f, const uint8_t* page, int64_t row0, int64_t rows,
                          float* k, float* v);

// One page of a sequence's cache as the attention sees it: rows [row0, row0 + rows) of the page,
// the first at global position pos0 (consecutive positions within the page).
struct KvPageRef {
    const KvPageFormat* format = nullptr;
    const uint8_t* page = nullptr;
    int32_t row0 = 0;
    int32_t rows = 0;
    int64_t pos0 = 0;
};

// Attention of q [p.tq, p.hq, p.d] over the keys/values held by `pages`, in order, merged by
// log-sum-exp exactly as attention_forward_cpu with p.accumulate would merge them. p.tk,
// p.k_pos0, p.k_split and p.k_pos1 are ignored (the pages give the key positions); p.accumulate
// says whether o/lse already hold a partial to merge into. Every page's format must have p.hkv
// heads of p.d channels. Pages may mix formats (a residual window in f32 after int2 pages, pages
// requantized by a background compressor).
//
// The CPU kernel dequantizes one page at a time into a per-thread tile ([rows, hkv, d] fp32:
// at most one page is ever held in fp32) and runs the fp32 blockwise kernel on it; f32 pages are
// read in place. Pages entirely after the last query (causal) are skipped without dequantizing.
// Thread-safe: calls share no state.
Status kv_paged_attention_cpu(const AttentionParams& p, std::span<const KvPageRef> pages,
                              const float* q, float* o, float* lse);

// Re-rotates keys stored with rotary embedding at position pos to position pos + delta, in place:
// k [n, heads, d] fp32 rotated HF style (channel c pairs with c + d/2, "rotate_half"), with
// inv_freq [d/2] (the model's table: theta^(-2i/d) or its scaled variant). RoPE composes
// additively, so rotating by delta equals recomputing at the new position up to rounding.
void rope_shift_keys(float* k, int64_t n, int heads, int d, std::span<const double> inv_freq,
                     int64_t delta);

}  // namespace tandem::kernels
