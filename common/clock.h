#pragma once

#include <chrono>
#include <cstdint>

namespace tandem {

// Time source injected into everything that measures durations or deadlines, so tests can drive
// time with a fake (tests/fakes/fake_clock.h). Implementations are thread-safe.
class Clock {
public:
    using Duration = std::chrono::nanoseconds;
    using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

    virtual ~Clock() = default;
    // Monotonic time, for durations, deadlines, leases and heartbeats.
    virtual TimePoint now() const = 0;
    // Wall-clock time in nanoseconds since the Unix epoch, for timestamps shown to people.
    virtual int64_t wall_ns() const = 0;
};

// The real clocks (steady_clock and system_clock).
class SystemClock final : public Clock {
public:
    TimePoint now() const override;
    int64_t wall_ns() const override;
    // A process-wide instance for code whose owner did not inject one (main functions).
    static const SystemClock& instance();
};

inline double seconds_between(Clock::TimePoint a, Clock::TimePoint b) {
    return std::chrono::duration<double>(b - a).count();
}

}  // namespace tandem
