#pragma once

// xxh3-64 through libxxhash's runtime-dispatched entry points on x86-64 (AVX2 / AVX-512 when the
// CPU has them): Debian's default build of the plain functions is SSE2-only, about 5x slower
// (9 GB/s against 45 GB/s in cache on the machine this was measured on). Same digests either way.

#include <xxhash.h>

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <xxh_x86dispatch.h>
#endif

namespace tandem::weights {

inline uint64_t xxh3_64(const void* data, size_t length) {
#if defined(__x86_64__) || defined(_M_X64)
    return XXH3_64bits_dispatch(data, length);
#else
    return XXH3_64bits(data, length);
#endif
}

inline void xxh3_64_update(XXH3_state_t* state, const void* data, size_t length) {
#if defined(__x86_64__) || defined(_M_X64)
    XXH3_64bits_update_dispatch(state, data, length);
#else
    XXH3_64bits_update(state, data, length);
#endif
}

}  // namespace tandem::weights
