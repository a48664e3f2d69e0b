#include "common/log.h"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <vector>

#include <spdlog/details/log_msg.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <nlohmann/json.hpp>

namespace tandem {

namespace {

// The fields of the line being logged on this thread. spdlog's synchronous loggers call the sinks
// on the calling thread, so Logger::log sets this around the call and the sinks read it.
thread_local const LogFields* tl_fields = nullptr;

spdlog::level::level_enum to_spdlog(LogLevel level) {
    switch (level) {
        case LogLevel::kTrace:
            return spdlog::level::trace;
        case LogLevel::kDebug:
            return spdlog::level::debug;
        case LogLevel::kInfo:
            return spdlog::level::info;
        case LogLevel::kWarn:
            return spdlog::level::warn;
        case LogLevel::kError:
            return spdlog::level::err;
        case LogLevel::kOff:
            return spdlog::level::off;
    }
    return spdlog::level::info;
}

const char* level_word(spdlog::level::level_enum level) {
    switch (level) {
        case spdlog::level::trace:
            return "trace";
        case spdlog::level::debug:
            return "debug";
        case spdlog::level::info:
            return "info";
        case spdlog::level::warn:
            return "warn";
        case spdlog::level::err:
            return "error";
        case spdlog::level::critical:
            return "critical";
        default:
            return "off";
    }
}

std::string iso_time(spdlog::log_clock::time_point tp, bool date) {
    const auto since = tp.time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since - secs).count();
    const std::time_t t = secs.count();
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    if (date) {
        std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        return fmt::format("{}.{:06d}Z", buf, micros);
    }
    std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
    return fmt::format("{}.{:03d}", buf, micros / 1000);
}

// Fields of the line: the logger's own, with the process default node filled in.
struct LineFields {
    const LogFields* fields;
    const std::string& default_node;
    const std::string& node() const {
        return fields && !fields->node.empty() ? fields->node : default_node;
    }
};

// Writes one JSON object per line: {"ts","level","component","msg", node?, job?, actor?, version?}.
class JsonLinesSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    JsonLinesSink(std::FILE* file, std::string node) : file_(file), node_(std::move(node)) {}
    ~JsonLinesSink() override {
        if (file_) std::fclose(file_);
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        LineFields lf{tl_fields, node_};
        nlohmann::ordered_json j;
        j["ts"] = iso_time(msg.time, true);
        j["level"] = level_word(msg.level);
        j["component"] = std::string(msg.logger_name.data(), msg.logger_name.size());
        j["msg"] = std::string(msg.payload.data(), msg.payload.size());
        if (!lf.node().empty()) j["node"] = lf.node();
        if (tl_fields) {
            if (!tl_fields->job.empty()) j["job"] = tl_fields->job;
            if (!tl_fields->actor.empty()) j["actor"] = tl_fields->actor;
            if (tl_fields->version) j["version"] = *tl_fields->version;
        }
        std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        line += '\n';
        std::fwrite(line.data(), 1, line.size(), file_);
        std::fflush(file_);  // a crash must not lose the lines before it
    }
    void flush_() override { std::fflush(file_); }

private:
    std::FILE* file_;
    const std::string node_;
};

// Readable lines on stderr: "22:47:09.123 I coordinator: msg  job=... actor=... version=3".
class ConsoleSink final : public spdlog::sinks::base_sink<std::mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        std::string line = fmt::format(
            "{} {} {}: {}", iso_time(msg.time, false),
            static_cast<char>(std::toupper(static_cast<unsigned char>(level_word(msg.level)[0]))),
            std::string_view(msg.logger_name.data(), msg.logger_name.size()),
            std::string_view(msg.payload.data(), msg.payload.size()));
        if (tl_fields) {
            if (!tl_fields->job.empty()) line += fmt::format("  job={}", tl_fields->job);
            if (!tl_fields->actor.empty()) line += fmt::format(" actor={}", tl_fields->actor);
            if (tl_fields->version) line += fmt::format(" version={}", *tl_fields->version);
        }
        line += '\n';
        std::fwrite(line.data(), 1, line.size(), stderr);
    }
    void flush_() override { std::fflush(stderr); }
};

// The process's sinks. Every Logger holds this one distributing sink; init_logging() swaps what
// it distributes to, so loggers made before init_logging() follow.
std::shared_ptr<spdlog::sinks::dist_sink_mt> process_sinks() {
    static const auto sinks = [] {
        auto d = std::make_shared<spdlog::sinks::dist_sink_mt>();
        auto console = std::make_shared<ConsoleSink>();
        console->set_level(spdlog::level::info);
        d->add_sink(console);
        return d;
    }();
    return sinks;
}

}  // namespace

Result<LogLevel> parse_log_level(std::string_view text) {
    if (text == "trace") return LogLevel::kTrace;
    if (text == "debug") return LogLevel::kDebug;
    if (text == "info") return LogLevel::kInfo;
    if (text == "warn" || text == "warning") return LogLevel::kWarn;
    if (text == "error") return LogLevel::kError;
    if (text == "off") return LogLevel::kOff;
    return invalid_argument(fmt::format(
        "unknown log level \"{}\" (expected trace, debug, info, warn, error or off)", text));
}

std::string_view log_level_name(LogLevel level) {
    switch (level) {
        case LogLevel::kTrace:
            return "trace";
        case LogLevel::kDebug:
            return "debug";
        case LogLevel::kInfo:
            return "info";
        case LogLevel::kWarn:
            return "warn";
        case LogLevel::kError:
            return "error";
        case LogLevel::kOff:
            return "off";
    }
    return "info";
}

Status init_logging(const LogOptions& options) {
    std::vector<spdlog::sink_ptr> sinks;
    auto console = std::make_shared<ConsoleSink>();
    console->set_level(to_spdlog(options.console_level));
    sinks.push_back(console);
    if (!options.json_path.empty()) {
        std::FILE* f = std::fopen(options.json_path.c_str(), "ae");
        if (!f) {
            return unavailable(fmt::format("cannot open log file {}: {}", options.json_path,
                                           std::strerror(errno)));
        }
        auto json = std::make_shared<JsonLinesSink>(f, options.node);
        json->set_level(to_spdlog(options.file_level));
        sinks.push_back(json);
    }
    process_sinks()->set_sinks(std::move(sinks));
    return Status();
}

void shutdown_logging() {
    process_sinks()->flush();
    process_sinks()->set_sinks({});
}

Logger::Logger(std::string component, LogFields fields)
    : component_(std::move(component)),
      fields_(std::move(fields)),
      impl_(std::make_shared<spdlog::logger>(component_, process_sinks())) {
    impl_->set_level(spdlog::level::trace);  // the sinks filter by level
    impl_->flush_on(spdlog::level::warn);
}

Logger Logger::with(const LogFields& extra) const {
    Logger copy = *this;
    if (!extra.node.empty()) copy.fields_.node = extra.node;
    if (!extra.job.empty()) copy.fields_.job = extra.job;
    if (!extra.actor.empty()) copy.fields_.actor = extra.actor;
    if (extra.version) copy.fields_.version = extra.version;
    return copy;
}

void Logger::log(LogLevel level, std::string_view message) const {
    if (level == LogLevel::kOff) return;
    const LogFields* saved = tl_fields;
    tl_fields = &fields_;
    impl_->log(to_spdlog(level), "{}", message);
    tl_fields = saved;
}

RateLimitedLogger::RateLimitedLogger(Logger logger, std::chrono::milliseconds interval,
                                     const Clock& clock)
    : logger_(std::move(logger)), interval_(interval), clock_(clock) {}

std::optional<uint64_t> RateLimitedLogger::admit() {
    std::lock_guard lock(mu_);
    const auto now = clock_.now();
    if (last_ && now - *last_ < interval_) {
        ++suppressed_;
        return std::nullopt;
    }
    last_ = now;
    const uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
}

void RateLimitedLogger::emit(LogLevel level, const std::string& message,
                             uint64_t suppressed) const {
    if (suppressed == 0) {
        logger_.log(level, message);
    } else {
        logger_.log(level, fmt::format("{} ({} similar lines suppressed)", message, suppressed));
    }
}

}  // namespace tandem
