#pragma once

// A small, fast, seedable random generator (xoshiro256**) whose state fits in a JSON array, and
// splitmix64 for deriving independent streams from (seed, counters).

#include <array>
#include <cstdint>

namespace tandem::model {

inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// A well-mixed 64-bit value from a seed and up to three counters.
inline uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
    uint64_t s = seed;
    uint64_t h = splitmix64(s);
    for (const uint64_t v : {a, b, c}) {
        s = h ^ (v * 0xd6e8feb86659fd93ULL);
        h = splitmix64(s);
    }
    return h;
}

// Value type; not thread-safe (one per stream).
class Rng {
public:
    explicit Rng(uint64_t seed = 0) { reseed(seed); }
    void reseed(uint64_t seed) {
        uint64_t s = seed;
        for (auto& x : s_) x = splitmix64(s);
    }
    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
    // Uniform integer in [0, n), n > 0.
    uint64_t below(uint64_t n) { return static_cast<uint64_t>(uniform() * static_cast<double>(n)); }
    // Standard normal (Box-Muller).
    double normal();

    const std::array<uint64_t, 4>& state() const { return s_; }
    void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    std::array<uint64_t, 4> s_{};
};

}  // namespace tandem::model
