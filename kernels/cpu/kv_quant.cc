// CPU quantize / dequantize of KV pages and attention over them (layouts in kernels/kv_quant.h).
#include "kernels/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/half.h"

namespace tandem::kernels {

namespace {

constexpr float kMinScale = 5.9604645e-08f;  // 2^-24, the smallest positive f16
constexpr float kMaxF16 = 65504.0f;

// Smallest f16 >= x (x finite, |x| <= 65504).
uint16_t f16_up(float x) {
    uint16_t h = float_to_half_bits(x);
    const float back = half_bits_to_float(h);
    if (back < x) {
        if (h == 0x8000u) return 0x0001u;  // -0 -> smallest positive subnormal
        h = (h & 0x8000u) ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>(h + 1);
    }
    return h;
}

// Largest f16 <= x (x finite, |x| <= 65504).
uint16_t f16_down(float x) {
    uint16_t h = float_to_half_bits(x);
    const float back = half_bits_to_float(h);
    if (back > x) {
        if (h == 0x0000u) return 0x8001u;  // +0 -> smallest negative subnormal
        h = (h & 0x8000u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
    }
    return h;
}

uint16_t load_u16(const uint8_t* p, int64_t i) {
    uint16_t x;
    std::memcpy(&x, p + 2 * i, 2);
    return x;
}
void store_u16(uint8_t* p, int64_t i, uint16_t x) { std::memcpy(p + 2 * i, &x, 2); }

inline void put_code(uint8_t* base, int64_t e, int bits, uint32_t c) {
    const int64_t bit = e * bits;
    base[bit >> 3] |= static_cast<uint8_t>(c << (bit & 7));
}
inline uint32_t get_code(const uint8_t* base, int64_t e, int bits) {
    const int64_t bit = e * bits;
    return (base[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
}

// Byte offsets of a page's sections.
struct Sections {
    int64_t k = 0, v = 0, ks = 0, vs = 0, end = 0;
};

Sections sections(const KvPageFormat& f) {
    const int64_t T = f.page_tokens, E = f.row_elems();
    Sections s;
    const int bits = kv_dtype_bits(f.dtype);
    const int64_t codes = T * E * bits / 8;
    s.k = 0;
    s.v = codes;
    s.ks = 2 * codes;
    int64_t kscale = 0, vscale = 0;  // bytes
    switch (f.dtype) {
        case KvDType::kF32:
        case KvDType::kBF16:
            break;
        case KvDType::kInt8:
            kscale = vscale = T * f.hkv * 2;
            break;
        case KvDType::kInt4:
        case KvDType::kInt2:
            if (f.kivi()) {
                kscale = static_cast<int64_t>(f.hkv) * f.d * 4;
                vscale = T * f.hkv * (f.d / f.value_group) * 4;
            } else {
                kscale = vscale = T * f.hkv * 4;
            }
            break;
    }
    s.vs = s.ks + kscale;
    s.end = s.vs + vscale;
    return s;
}

// Asymmetric (m, s) for values in [lo, hi] with `levels` steps: m <= lo, m + levels s >= hi.
Status asym_params(float lo, float hi, int levels, uint16_t* m16, uint16_t* s16) {
    if (!std::isfinite(lo) || !std::isfinite(hi)) {
        return invalid_argument("kv quantize: non-finite key or value");
    }
    if (lo < -kMaxF16 || hi > kMaxF16) {
        return invalid_argument("kv quantize: value outside the f16 scale range");
    }
    *m16 = f16_down(lo);
    const float m = half_bits_to_float(*m16);
    float s = (hi - m) / static_cast<float>(levels);
    // (hi - m) / levels rounds; nudge s until m + levels * s covers hi.
    s = std::max(s, kMinScale);
    *s16 = f16_up(s);
    while (m + static_cast<float>(levels) * half_bits_to_float(*s16) < hi) ++*s16;
    if (half_bits_to_float(*s16) > kMaxF16) {
        return invalid_argument("kv quantize: range outside the f16 scale range");
    }
    return Status();
}

inline uint32_t asym_code(float x, float m, float s, int levels) {
    const float c = std::nearbyint((x - m) / s);
    return static_cast<uint32_t>(std::clamp(c, 0.0f, static_cast<float>(levels)));
}

// Per-token quantization of one tensor (keys or values) of rows [0, rows).
Status quantize_per_token(const KvPageFormat& f, const float* x, int64_t rows, uint8_t* codes,
                          uint8_t* scales) {
    const int bits = kv_dtype_bits(f.dtype);
    const int d = f.d;
    for (int64_t r = 0; r < rows; ++r) {
        for (int h = 0; h < f.hkv; ++h) {
            const int64_t rh = r * f.hkv + h;
            const float* row = x + rh * d;
            if (f.dtype == KvDType::kInt8) {
                float amax = 0.0f;
                for (int c = 0; c < d; ++c) {
                    if (!std::isfinite(row[c])) {
                        return invalid_argument("kv quantize: non-finite key or value");
                    }
                    amax = std::max(amax, std::fabs(row[c]));
                }
                if (amax / 127.0f > kMaxF16) {
                    return invalid_argument("kv quantize: value outside the f16 scale range");
                }
                const uint16_t s16 = f16_up(std::max(amax / 127.0f, kMinScale));
                const float s = half_bits_to_float(s16);
                store_u16(scales, rh, s16);
                auto* out = reinterpret_cast<int8_t*>(codes) + rh * d;
                for (int c = 0; c < d; ++c) {
                    out[c] = static_cast<int8_t>(
                        std::clamp(std::nearbyint(row[c] / s), -127.0f, 127.0f));
                }
            } else {
                const int levels = (1 << bits) - 1;
                float lo = row[0], hi = row[0];
                for (int c = 1; c < d; ++c) {
                    lo = std::min(lo, row[c]);
                    hi = std::max(hi, row[c]);
                }
                uint16_t m16, s16;
                TANDEM_RETURN_IF_ERROR(asym_params(lo, hi, levels, &m16, &s16));
                store_u16(scales, 2 * rh, m16);
                store_u16(scales, 2 * rh + 1, s16);
                const float m = half_bits_to_float(m16), s = half_bits_to_float(s16);
                for (int c = 0; c < d; ++c) {
                    if (!std::isfinite(row[c])) {
                        return invalid_argument("kv quantize: non-finite key or value");
                    }
                    put_code(codes, rh * d + c, bits, asym_code(row[c], m, s, levels));
                }
            }
        }
    }
    return Status();
}

// KIVI keys: per (head, channel) over rows [0, rows).
Status quantize_kivi_keys(const KvPageFormat& f, const float* k, int64_t rows, uint8_t* codes,
                          uint8_t* scales) {
    const int bits = kv_dtype_bits(f.dtype), levels = (1 << bits) - 1;
    const int64_t E = f.row_elems();
    for (int h = 0; h < f.hkv; ++h) {
        for (int c = 0; c < f.d; ++c) {
            const int64_t col = static_cast<int64_t>(h) * f.d + c;
            float lo = k[col], hi = k[col];
            for (int64_t r = 1; r < rows; ++r) {
                lo = std::min(lo, k[r * E + col]);
                hi = std::max(hi, k[r * E + col]);
            }
            uint16_t m16, s16;
            TANDEM_RETURN_IF_ERROR(asym_params(lo, hi, levels, &m16, &s16));
            store_u16(scales, 2 * col, m16);
            store_u16(scales, 2 * col + 1, s16);
            const float m = half_bits_to_float(m16), s = half_bits_to_float(s16);
            for (int64_t r = 0; r < rows; ++r) {
                const float x = k[r * E + col];
                if (!std::isfinite(x)) return invalid_argument("kv quantize: non-finite key");
                put_code(codes, r * E + col, bits, asym_code(x, m, s, levels));
            }
        }
    }
    return Status();
}

// KIVI values: per (row, head, channel group).
Status quantize_kivi_values(const KvPageFormat& f, const float* v, int64_t rows, uint8_t* codes,
                            uint8_t* scales) {
    const int bits = kv_dtype_bits(f.dtype), levels = (1 << bits) - 1;
    const int G = f.value_group, groups = f.d / G;
    for (int64_t r = 0; r < rows; ++r) {
        for (int h = 0; h < f.hkv; ++h) {
            for (int g = 0; g < groups; ++g) {
                const int64_t e0 = (r * f.hkv + h) * f.d + static_cast<int64_t>(g) * G;
                float lo = v[e0], hi = v[e0];
                for (int c = 1; c < G; ++c) {
                    lo = std::min(lo, v[e0 + c]);
                    hi = std::max(hi, v[e0 + c]);
                }
                uint16_t m16, s16;
                TANDEM_RETURN_IF_ERROR(asym_params(lo, hi, levels, &m16, &s16));
                const int64_t si = (r * f.hkv + h) * groups + g;
                store_u16(scales, 2 * si, m16);
                store_u16(scales, 2 * si + 1, s16);
                const float m = half_bits_to_float(m16), s = half_bits_to_float(s16);
                for (int c = 0; c < G; ++c) {
                    const float x = v[e0 + c];
                    if (!std::isfinite(x)) return invalid_argument("kv quantize: non-finite value");
                    put_code(codes, e0 + c, bits, asym_code(x, m, s, levels));
                }
            }
        }
    }
    return Status();
}

void dequantize_tensor(const KvPageFormat& f, const uint8_t* page, const Sections& sec, bool keys,
                       int64_t row0, int64_t rows, float* out) {
    const int64_t E = f.row_elems();
    const uint8_t* codes = page + (keys ? sec.k : sec.v);
    const uint8_t* scales = page + (keys ? sec.ks : sec.vs);
    const int bits = kv_dtype_bits(f.dtype);
    const int d = f.d;
    switch (f.dtype) {
        case KvDType::kF32:
            std::memcpy(out, codes + row0 * E * 4, static_cast<size_t>(rows * E) * 4);
            return;
        case KvDType::kBF16:
            for (int64_t i = 0; i < rows * E; ++i) {
                out[i] = bf16_bits_to_float(load_u16(codes, row0 * E + i));
            }
            return;
        case KvDType::kInt8:
            for (int64_t r = 0; r < rows; ++r) {
                for (int h = 0; h < f.hkv; ++h) {
                    const int64_t rh = (row0 + r) * f.hkv + h;
                    const float s = half_bits_to_float(load_u16(scales, rh));
                    const auto* c = reinterpret_cast<const int8_t*>(codes) + rh * d;
                    float* o = out + (r * f.hkv + h) * d;
                    for (int i = 0; i < d; ++i) o[i] = s * static_cast<float>(c[i]);
                }
            }
            return;
        case KvDType::kInt4:
        case KvDType::kInt2:
            break;
    }
    if (!f.kivi()) {
        for (int64_t r = 0; r < rows; ++r) {
            for (int h = 0; h < f.hkv; ++h) {
                const int64_t rh = (row0 + r) * f.hkv + h;
                const float m = half_bits_to_float(load_u16(scales, 2 * rh));
                const float s = half_bits_to_float(load_u16(scales, 2 * rh + 1));
                float* o = out + (r * f.hkv + h) * d;
                for (int i = 0; i < d; ++i) {
                    o[i] = m + s * static_cast<float>(get_code(codes, rh * d + i, bits));
                }
            }
        }
        return;
    }
    if (keys) {
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t col = 0; col < E; ++col) {
                const float m = half_bits_to_float(load_u16(scales, 2 * col));
                const float s = half_bits_to_float(load_u16(scales, 2 * col + 1));
                out[r * E + col] =
                    m + s * static_cast<float>(get_code(codes, (row0 + r) * E + col, bits));
            }
        }
        return;
    }
    const int G = f.value_group, groups = d / G;
    for (int64_t r = 0; r < rows; ++r) {
        for (int h = 0; h < f.hkv; ++h) {
            for (int g = 0; g < groups; ++g) {
                const int64_t si = ((row0 + r) * f.hkv + h) * groups + g;
                const float m = half_bits_to_float(load_u16(scales, 2 * si));
                const float s = half_bits_to_float(load_u16(scales, 2 * si + 1));
                const int64_t e_in = ((row0 + r) * f.hkv + h) * d + static_cast<int64_t>(g) * G;
                float* o = out + (r * f.hkv + h) * d + static_cast<int64_t>(g) * G;
                for (int c = 0; c < G; ++c) {
                    o[c] = m + s * static_cast<float>(get_code(codes, e_in + c, bits));
                }
            }
        }
    }
}

}  // namespace

const char* kv_dtype_name(KvDType dtype) {
    switch (dtype) {
        case KvDType::kF32:
            return "f32";
        case KvDType::kBF16:
            return "bf16";
        case KvDType::kInt8:
            return "int8";
        case KvDType::kInt4:
            return "int4";
        case KvDType::kInt2:
            return "int2";
    }
    return "?";
}

Result<KvDType> parse_kv_dtype(std::string_view name) {
    for (KvDType t :
         {KvDType::kF32, KvDType::kBF16, KvDType::kInt8, KvDType::kInt4, KvDType::kInt2}) {
        if (name == kv_dtype_name(t)) return t;
    }
    return invalid_argument("kv cache dtype \"" + std::string(name) +
                            "\": expected f32, bf16, int8, int4 or int2");
}

int kv_dtype_bits(KvDType dtype) {
    switch (dtype) {
        case KvDType::kF32:
            return 32;
        case KvDType::kBF16:
            return 16;
        case KvDType::kInt8:
            return 8;
        case KvDType::kInt4:
            return 4;
        case KvDType::kInt2:
            return 2;
    }
    return 32;
}

Status validate(const KvPageFormat& f) {
    if (f.hkv <= 0 || f.d <= 0 || f.page_tokens <= 0) {
        return invalid_argument("kv page format: " + describe(f) + ": hkv, d, tokens must be > 0");
    }
    if (f.dtype == KvDType::kInt8 && f.scheme != KvScheme::kPerToken) {
        return invalid_argument("kv page format: int8 is per token only");
    }
    if (f.dtype == KvDType::kInt2 && f.scheme != KvScheme::kKivi) {
        return invalid_argument("kv page format: int2 is KIVI only (per-channel keys)");
    }
    if ((static_cast<int64_t>(f.d) * kv_dtype_bits(f.dtype)) % 8 != 0) {
        return invalid_argument("kv page format: " + describe(f) +
                                ": a head's codes must fill whole bytes");
    }
    if (f.kivi() && (f.value_group <= 0 || f.d % f.value_group != 0)) {
        return invalid_argument("kv page format: " + describe(f) +
                                ": value_group must divide the head dimension");
    }
    return Status();
}

int64_t kv_page_bytes(const KvPageFormat& f) { return sections(f).end; }

std::string describe(const KvPageFormat& f) {
    std::string s = kv_dtype_name(f.dtype);
    if (f.kivi()) s += "/kivi";
    s += " [T=" + std::to_string(f.page_tokens) + " hkv=" + std::to_string(f.hkv) +
         " d=" + std::to_string(f.d);
    if (f.kivi()) s += " G=" + std::to_string(f.value_group);
    return s + "]";
}

Status kv_quantize_page(const KvPageFormat& f, const float* k, const float* v, int64_t rows,
                        uint8_t* page) {
    TANDEM_RETURN_IF_ERROR(validate(f));
    if (rows <= 0 || rows > f.page_tokens) {
        return invalid_argument("kv quantize: " + std::to_string(rows) + " rows for a page of " +
                                std::to_string(f.page_tokens));
    }
    const Sections sec = sections(f);
    const int64_t E = f.row_elems();
    std::memset(page, 0, static_cast<size_t>(sec.end));
    switch (f.dtype) {
        case KvDType::kF32:
            std::memcpy(page + sec.k, k, static_cast<size_t>(rows * E) * 4);
            std::memcpy(page + sec.v, v, static_cast<size_t>(rows * E) * 4);
            return Status();
        case KvDType::kBF16:
            for (int64_t i = 0; i < rows * E; ++i) {
                store_u16(page + sec.k, i, float_to_bf16_bits(k[i]));
                store_u16(page + sec.v, i, float_to_bf16_bits(v[i]));
            }
            return Status();
        case KvDType::kInt8:
        case KvDType::kInt4:
        case KvDType::kInt2:
            break;
    }
    if (!f.kivi()) {
        TANDEM_RETURN_IF_ERROR(quantize_per_token(f, k, rows, page + sec.k, page + sec.ks));
        return quantize_per_token(f, v, rows, page + sec.v, page + sec.vs);
    }
    TANDEM_RETURN_IF_ERROR(quantize_kivi_keys(f, k, rows, page + sec.k, page + sec.ks));
    return quantize_kivi_values(f, v, rows, page + sec.v, page + sec.vs);
}

Status kv_dequantize_page(const KvPageFormat& f, const uint8_t* page, int64_t row0, int64_t rows,
                          float* k, float* v) {
    TANDEM_RETURN_IF_ERROR(validate(f));
    if (row0 < 0 || rows < 0 || row0 + rows > f.page_tokens) {
        return invalid_argument("kv dequantize: rows outside the page");
    }
    const Sections sec = sections(f);
    if (k) dequantize_tensor(f, page, sec, true, row0, rows, k);
    if (v) dequantize_tensor(f, page, sec, false, row0, rows, v);
    return Status();
}

Status kv_paged_attention_cpu(const AttentionParams& p, std::span<const KvPageRef> pages,
                              const float* q, float* o, float* lse) {
    AttentionParams base = p;
    base.tk = 1;
    base.k_pos0 = 0;
    base.k_split = kNoSplit;
    TANDEM_RETURN_IF_ERROR(validate(base));
    const int64_t last_q = query_position(p, p.tq - 1);
    thread_local std::vector<float> tile_k, tile_v;
    bool have = p.accumulate;
    for (const KvPageRef& ref : pages) {
        if (!ref.format || !ref.page) return invalid_argument("kv attention: null page");
        const KvPageFormat& f = *ref.format;
        if (f.hkv != p.hkv || f.d != p.d) {
            return invalid_argument("kv attention: page " + describe(f) + " does not match " +
                                    std::to_string(p.hkv) + " heads of " + std::to_string(p.d));
        }
        if (ref.row0 < 0 || ref.rows < 0 || ref.row0 + ref.rows > f.page_tokens) {
            return invalid_argument("kv attention: rows outside the page");
        }
        if (ref.rows == 0 || (p.causal && ref.pos0 > last_q)) continue;
        const int64_t E = f.row_elems();
        const float *kp, *vp;
        if (f.dtype == KvDType::kF32) {
            const Sections sec = sections(f);
            kp = reinterpret_cast<const float*>(ref.page + sec.k) + ref.row0 * E;
            vp = reinterpret_cast<const float*>(ref.page + sec.v) + ref.row0 * E;
        } else {
            tile_k.resize(static_cast<size_t>(ref.rows * E));
            tile_v.resize(static_cast<size_t>(ref.rows * E));
            TANDEM_RETURN_IF_ERROR(
                kv_dequantize_page(f, ref.page, ref.row0, ref.rows, tile_k.data(), tile_v.data()));
            kp = tile_k.data();
            vp = tile_v.data();
        }
        AttentionParams pp = base;
        pp.tk = ref.rows;
        pp.k_pos0 = ref.pos0;
        pp.accumulate = have;
        TANDEM_RETURN_IF_ERROR(attention_forward_cpu(pp, q, kp, vp, o, lse));
        have = true;
    }
    if (!have) {
        const int64_t stride = p.lse_stride ? p.lse_stride : p.tq;
        std::fill(o, o + p.tq * p.hq * p.d, 0.0f);
        for (int h = 0; h < p.hq; ++h) {
            std::fill(lse + h * stride, lse + h * stride + p.tq,
                      -std::numeric_limits<float>::infinity());
        }
    }
    return Status();
}

void rope_shift_keys(float* k, int64_t n, int heads, int d, std::span<const double> inv_freq,
                     int64_t delta) {
    const int half = d / 2;
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        const double a = static_cast<double>(delta) * inv_freq[static_cast<size_t>(i)];
        c[static_cast<size_t>(i)] = static_cast<float>(std::cos(a));
        s[static_cast<size_t>(i)] = static_cast<float>(std::sin(a));
    }
    for (int64_t r = 0; r < n * heads; ++r) {
        float* x = k + r * d;
        for (int i = 0; i < half; ++i) {
            const float a = x[i], b = x[i + half];
            x[i] = a * c[static_cast<size_t>(i)] - b * s[static_cast<size_t>(i)];
            x[i + half] = b * c[static_cast<size_t>(i)] + a * s[static_cast<size_t>(i)];
        }
    }
}

}  // namespace tandem::kernels
