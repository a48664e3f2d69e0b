// The host fp16/bf16 conversions the GPU tests rely on.
#include "kernels/half.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tandem::kernels {
namespace {

TEST(HalfConvert, EveryHalfRoundTrips) {
    for (uint32_t h = 0; h < 0x10000u; ++h) {
        const float f = half_bits_to_float(static_cast<uint16_t>(h));
        if (std::isnan(f)) continue;
        ASSERT_EQ(float_to_half_bits(f), h) << std::hex << h;
    }
}

TEST(HalfConvert, EveryBf16RoundTrips) {
    for (uint32_t b = 0; b < 0x10000u; ++b) {
        const float f = bf16_bits_to_float(static_cast<uint16_t>(b));
        if (std::isnan(f)) continue;
        ASSERT_EQ(float_to_bf16_bits(f), b) << std::hex << b;
    }
}

TEST(HalfConvert, RoundsToNearestEven) {
    EXPECT_EQ(float_to_half_bits(1.0f), 0x3c00);
    EXPECT_EQ(float_to_half_bits(65504.0f), 0x7bff);
    EXPECT_EQ(float_to_half_bits(1e6f), 0x7c00);
    EXPECT_EQ(float_to_half_bits(1.0f + 1.0f / 2048), 0x3c00);  // tie: stays even
    EXPECT_EQ(float_to_half_bits(1.0f + 3.0f / 2048), 0x3c02);  // tie: rounds up to even
    EXPECT_EQ(float_to_bf16_bits(1.0f), 0x3f80);
    EXPECT_EQ(float_to_bf16_bits(-2.0f), 0xc000);
    EXPECT_NEAR(half_bits_to_float(float_to_half_bits(0.1f)), 0.1f, 1e-4);
}

}  // namespace
}  // namespace tandem::kernels
