#pragma once

// Device helpers over one KV page of the CPU engine's format (kernels/kv_quant.h), described by
// PagedKvPages (kernels/cuda/paged_kv.h): read one element dequantized, quantize one row of one
// head per token, find the (m, s) of an asymmetric group. The quantizers reproduce
// kernels/cpu/kv_quant.cc bit for bit: f16 scales rounded outward (f16_up / f16_down), the
// arithmetic in explicit round-to-nearest intrinsics so nvcc does not contract it into FMAs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/kv_attention_kernel.h"
#include "kernels/cuda/ops_common.cuh"
#include "kernels/cuda/paged_kv.h"

namespace tandem::kernels::cuda::detail {

constexpr float kKvMinScale = 5.9604645e-08f;  // 2^-24, the smallest positive f16

__device__ __forceinline__ float f16_value(unsigned short h) {
    return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ unsigned short f16_up(float x) {
    unsigned short h = __half_as_ushort(__float2half_rn(x));
    if (f16_value(h) < x) {
        if (h == 0x8000u) return 0x0001u;
        h = (h & 0x8000u) ? static_cast<unsigned short>(h - 1) : static_cast<unsigned short>(h + 1);
    }
    return h;
}
__device__ __forceinline__ unsigned short f16_down(float x) {
    unsigned short h = __half_as_ushort(__float2half_rn(x));
    if (f16_value(h) > x) {
        if (h == 0x0000u) return 0x8001u;
        h = (h & 0x8000u) ? static_cast<unsigned short>(h + 1) : static_cast<unsigned short>(h - 1);
    }
    return h;
}
__device__ __forceinline__ int page_bits(int32_t dtype) {
    return dtype == kKvF32    ? 32
           : dtype == kKvBF16 ? 16
           : dtype == kKvInt8 ? 8
           : dtype == kKvInt4 ? 4
                              : 2;
}

// (m, s) of values in [lo, hi] with `levels` steps: m <= lo, m + levels s >= hi (asym_params).
__device__ __forceinline__ void asym_params(float lo, float hi, int levels, unsigned short* m16,
                                            unsigned short* s16) {
    *m16 = f16_down(lo);
    const float m = f16_value(*m16);
    float s = __fdiv_rn(__fsub_rn(hi, m), static_cast<float>(levels));
    s = fmaxf(s, kKvMinScale);
    *s16 = f16_up(s);
    while (__fadd_rn(m, __fmul_rn(static_cast<float>(levels), f16_value(*s16))) < hi) ++*s16;
}
__device__ __forceinline__ unsigned asym_code(float x, float m, float s, int levels) {
    const float c = rintf(__fdiv_rn(__fsub_rn(x, m), s));
    return static_cast<unsigned>(fminf(fmaxf(c, 0.0f), static_cast<float>(levels)));
}

// Element (row, h, c) of the page's keys (key) or values, dequantized.
__device__ __forceinline__ float page_value(const PagedKvPages& f, const uint8_t* page, bool key,
                                            int64_t row, int h, int c, int hkv, int d) {
    const int64_t rh = row * hkv + h;
    const int64_t e = rh * d + c;
    const uint8_t* codes = page + (key ? 0 : f.v_codes);
    const auto* scales =
        reinterpret_cast<const unsigned short*>(page + (key ? f.k_scales : f.v_scales));
    switch (f.dtype) {
        case kKvF32:
            return reinterpret_cast<const float*>(codes)[e];
        case kKvBF16:
            return __uint_as_float(
                static_cast<unsigned>(reinterpret_cast<const unsigned short*>(codes)[e]) << 16);
        case kKvInt8:
            return f16_value(scales[rh]) *
                   static_cast<float>(reinterpret_cast<const int8_t*>(codes)[e]);
        default:
            break;
    }
    const int bits = f.dtype == kKvInt4 ? 4 : 2;
    const int64_t bit = e * bits;
    const unsigned code = (codes[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
    int64_t si;
    if (!f.kivi) {
        si = rh;
    } else if (key) {
        si = static_cast<int64_t>(h) * d + c;
    } else {
        si = rh * (d / f.value_group) + c / f.value_group;
    }
    return f16_value(scales[2 * si]) + f16_value(scales[2 * si + 1]) * static_cast<float>(code);
}

// Quantizes one row of one head (d channels, val(c)) per token into codes/scales of a page of
// format f (f32, bf16, int8, int4 per token): rh = row * hkv + h. One warp, all lanes.
template <class Val>
__device__ void quantize_row(const PagedKvPages& f, uint8_t* codes, uint8_t* scales_bytes,
                             int64_t rh, int d, Val val, int lane) {
    auto* scales = reinterpret_cast<unsigned short*>(scales_bytes);
    const int64_t e0 = rh * d;
    if (f.dtype == kKvF32) {
        for (int c = lane; c < d; c += 32) reinterpret_cast<float*>(codes)[e0 + c] = val(c);
        return;
    }
    if (f.dtype == kKvBF16) {
        for (int c = lane; c < d; c += 32) {
            reinterpret_cast<unsigned short*>(codes)[e0 + c] =
                __bfloat16_as_ushort(__float2bfloat16_rn(val(c)));
        }
        return;
    }
    if (f.dtype == kKvInt8) {
        float amax = 0.0f;
        for (int c = lane; c < d; c += 32) amax = fmaxf(amax, fabsf(val(c)));
        amax = warp_max(amax);
        const unsigned short s16 = f16_up(fmaxf(__fdiv_rn(amax, 127.0f), kKvMinScale));
        if (lane == 0) scales[rh] = s16;
        const float s = f16_value(s16);
        for (int c = lane; c < d; c += 32) {
            const float q = fminf(fmaxf(rintf(__fdiv_rn(val(c), s)), -127.0f), 127.0f);
            reinterpret_cast<int8_t*>(codes)[e0 + c] = static_cast<int8_t>(q);
        }
        return;
    }
    // int4 per token: (m, s) over the row; two codes a byte (d even).
    float lo = INFINITY, hi = -INFINITY;
    for (int c = lane; c < d; c += 32) {
        lo = fminf(lo, val(c));
        hi = fmaxf(hi, val(c));
    }
    lo = -warp_max(-lo);
    hi = warp_max(hi);
    unsigned short m16, s16;
    asym_params(lo, hi, 15, &m16, &s16);
    if (lane == 0) {
        scales[2 * rh] = m16;
        scales[2 * rh + 1] = s16;
    }
    const float m = f16_value(m16), s = f16_value(s16);
    for (int j = lane; j < d / 2; j += 32) {
        codes[e0 / 2 + j] = static_cast<uint8_t>(asym_code(val(2 * j), m, s, 15) |
                                                 (asym_code(val(2 * j + 1), m, s, 15) << 4));
    }
}

}  // namespace tandem::kernels::cuda::detail
