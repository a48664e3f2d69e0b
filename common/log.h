#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"

namespace spdlog {
class logger;
}

namespace tandem {

// Structured fields carried by a log line. Every line about a job carries job, actor and version
// so one job's story can be pulled from the logs of all processes.
struct LogFields {
    std::string node;
    std::string job;
    std::string actor;
    std::optional<Version> version;
};

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError, kOff };
Result<LogLevel> parse_log_level(std::string_view text);
std::string_view log_level_name(LogLevel level);

struct LogOptions {
    LogLevel console_level = LogLevel::kInfo;
    // JSON-lines file ("ts, level, component, msg" plus node/job/actor/version); empty: none.
    std::string json_path;
    LogLevel file_level = LogLevel::kDebug;
    // Default `node` field for every line this process writes.
    std::string node;
};

// Sets up the process's sinks: a readable console sink on stderr and, if asked, a JSON-lines file.
// Call once from main() before starting threads; loggers made earlier pick the sinks up too. A
// process that never calls it logs info and above to the console.
Status init_logging(const LogOptions& options);
// Flushes and closes the file sink (main() calls it before exit; idempotent).
void shutdown_logging();

// A component's logger: cheap to copy, thread-safe (spdlog serialises the sinks).
class Logger {
public:
    explicit Logger(std::string component, LogFields fields = {});

    // A copy whose lines also carry `extra` (non-empty fields of `extra` win).
    Logger with(const LogFields& extra) const;
    const LogFields& fields() const { return fields_; }
    const std::string& component() const { return component_; }

    template <typename... Args>
    void trace(fmt::format_string<Args...> f, Args&&... args) const {
        log(LogLevel::kTrace, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void debug(fmt::format_string<Args...> f, Args&&... args) const {
        log(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void info(fmt::format_string<Args...> f, Args&&... args) const {
        log(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void warn(fmt::format_string<Args...> f, Args&&... args) const {
        log(LogLevel::kWarn, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void error(fmt::format_string<Args...> f, Args&&... args) const {
        log(LogLevel::kError, fmt::format(f, std::forward<Args>(args)...));
    }

    void log(LogLevel level, std::string_view message) const;

private:
    std::string component_;
    LogFields fields_;
    std::shared_ptr<spdlog::logger> impl_;
};

// For hot paths: writes at most one line per `interval`; the next line that passes says how many
// were suppressed. Thread-safe.
class RateLimitedLogger {
public:
    RateLimitedLogger(Logger logger, std::chrono::milliseconds interval,
                      const Clock& clock = SystemClock::instance());

    template <typename... Args>
    void warn(fmt::format_string<Args...> f, Args&&... args) {
        if (auto suppressed = admit()) {
            emit(LogLevel::kWarn, fmt::format(f, std::forward<Args>(args)...), *suppressed);
        }
    }
    template <typename... Args>
    void info(fmt::format_string<Args...> f, Args&&... args) {
        if (auto suppressed = admit()) {
            emit(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...), *suppressed);
        }
    }
    template <typename... Args>
    void error(fmt::format_string<Args...> f, Args&&... args) {
        if (auto suppressed = admit()) {
            emit(LogLevel::kError, fmt::format(f, std::forward<Args>(args)...), *suppressed);
        }
    }

private:
    // The number of lines suppressed since the last one written, or nullopt to suppress this one.
    std::optional<uint64_t> admit();
    void emit(LogLevel level, const std::string& message, uint64_t suppressed) const;

    Logger logger_;
    const std::chrono::milliseconds interval_;
    const Clock& clock_;
    std::mutex mu_;
    std::optional<Clock::TimePoint> last_;  // guarded by mu_
    uint64_t suppressed_ = 0;               // guarded by mu_
};

}  // namespace tandem
