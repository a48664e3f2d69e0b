#pragma once

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the
// generator of cuRAND and PyTorch's CUDA sampling): a counter-based generator, so a draw is a pure
// function of (key, counter) and needs no state between steps. Device sampling keys it with the
// job's seed and counts (stream, step): sample g of prompt p at decode step t draws
// philox_uniform(seed, stream(p, g), t) wherever and in whatever batch it runs. Usable from host
// and device code (the host copy is the reference the unit tests check against the published
// known-answer vectors).

#include <cstdint>

#if defined(__CUDACC__)
#define TANDEM_HD __host__ __device__ __forceinline__
#else
#define TANDEM_HD inline
#endif

namespace tandem::kernels::cuda {

struct Philox4 {
    uint32_t x[4];
};

TANDEM_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
    const uint64_t p = static_cast<uint64_t>(a) * b;
    hi = static_cast<uint32_t>(p >> 32);
    lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
TANDEM_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; ++r) {
        uint32_t hi0, lo0, hi1, lo1;
        philox_mulhilo(0xD2511F53u, c.x[0], hi0, lo0);
        philox_mulhilo(0xCD9E8D57u, c.x[2], hi1, lo1);
        c = Philox4{{hi1 ^ c.x[1] ^ k0, lo1, hi0 ^ c.x[3] ^ k1, lo0}};
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

// Uniform in [0, 1) with 53 random bits for (seed, stream, step): key = seed, counter = (stream
// low, stream high, step, 0).
TANDEM_HD double philox_uniform(uint64_t seed, uint64_t stream, uint32_t step) {
    const Philox4 r = philox4x32_10(
        Philox4{{static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32), step, 0u}},
        static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const uint64_t bits = (static_cast<uint64_t>(r.x[0]) << 32) | r.x[1];
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace tandem::kernels::cuda

#undef TANDEM_HD
