#pragma once

#include <atomic>
#include <chrono>

#include "common/clock.h"

namespace tandem::testing {

// A clock that moves only when the test says so. Thread-safe.
class FakeClock final : public Clock {
public:
    explicit FakeClock(int64_t start_wall_ns = 1'700'000'000'000'000'000) : wall0_(start_wall_ns) {}

    TimePoint now() const override { return TimePoint(Duration(ns_.load())); }
    int64_t wall_ns() const override { return wall0_ + ns_.load(); }

    void advance(Duration d) { ns_.fetch_add(d.count()); }
    template <typename Rep, typename Period>
    void advance(std::chrono::duration<Rep, Period> d) {
        advance(std::chrono::duration_cast<Duration>(d));
    }

private:
    std::atomic<int64_t> ns_{0};
    const int64_t wall0_;
};

}  // namespace tandem::testing
