#include "common/agent/actor_context.h"

#include <chrono>
#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "common/config/loader.h"
#include "common/run_dir.h"

namespace tandem::agent {

Json ActorContext::to_json() const {
    return {{"actor", actor.str()},   {"attempt", attempt},
            {"node", node},           {"spec_yaml", spec_yaml},
            {"placement", placement}, {"coordinator_http", coordinator_http},
            {"run_dir", run_dir},     {"api_token", api_token}};
}

Result<ActorContext> ActorContext::from_json(const Json& j) {
    if (!j.is_object()) return invalid_argument("actor context: expected a JSON object");
    ActorContext c;
    try {
        TANDEM_ASSIGN_OR_RETURN(c.actor, ActorId::parse(j.at("actor").get<std::string>()));
        c.attempt = j.at("attempt").get<int64_t>();
        c.node = j.at("node").get<std::string>();
        c.spec_yaml = j.at("spec_yaml").get<std::string>();
        c.placement = j.value("placement", Json::object());
        c.coordinator_http = j.value("coordinator_http", std::string());
        c.run_dir = j.value("run_dir", std::string());
        c.api_token = j.value("api_token", std::string());
    } catch (const Json::exception& e) {
        return invalid_argument(fmt::format("actor context: {}", e.what()));
    }
    TANDEM_ASSIGN_OR_RETURN(c.spec,
                            config::parse_job_text(c.spec_yaml, "spec of " + c.actor.str()));
    return c;
}

Result<ActorContext> ActorContext::load(const std::string& path) {
    TANDEM_ASSIGN_OR_RETURN(std::string text, read_file(path));
    auto j = Json::parse(text, nullptr, false);
    if (j.is_discarded()) return invalid_argument(fmt::format("{}: not JSON", path));
    auto c = from_json(j);
    if (!c.ok()) return c.status().with_context(path);
    return c;
}

void ActorChannel::write(const Json& line) {
    std::lock_guard lock(mu_);
    const std::string s = line.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
}

void ActorChannel::progress(const Json& progress) {
    write({{"type", "progress"}, {"progress", progress}});
}
void ActorChannel::log(std::string_view level, std::string_view msg) {
    write({{"type", "log"}, {"level", level}, {"msg", msg}});
}
void ActorChannel::metrics(int64_t step, const Json& values) {
    write({{"type", "metrics"}, {"step", step}, {"values", values}});
}
void ActorChannel::version(uint64_t version, const Json& descriptor) {
    write({{"type", "version"}, {"version", version}, {"descriptor", descriptor}});
}
void ActorChannel::retire(uint64_t version, uint32_t shard) {
    write({{"type", "retire"}, {"version", version}, {"shard", shard}});
}
void ActorChannel::relay_join(uint64_t version, const Json& relay_source) {
    write({{"type", "relay_join"}, {"version", version}, {"relay_source", relay_source}});
}
void ActorChannel::endpoint(std::string_view name, std::string_view address) {
    write({{"type", "endpoint"}, {"name", name}, {"address", address}});
}
void ActorChannel::error(std::string_view msg) { write({{"type", "error"}, {"msg", msg}}); }

int run_diagnostic_actor(const ActorContext& ctx, ActorChannel& channel) {
    const auto& d = ctx.spec.diagnostic;
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto period = std::chrono::duration<double>(d.report_every_s);
    channel.log("info", fmt::format("diagnostic actor {} (attempt {}) on {}: {} s", ctx.actor.str(),
                                    ctx.attempt, ctx.node, d.duration_s));
    int64_t step = 0;
    while (true) {
        const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
        if (d.fail_after_s && elapsed >= *d.fail_after_s) {
            const std::string msg =
                fmt::format("diagnostic failure after {:.1f} s (fail_after_s)", elapsed);
            channel.error(msg);
            return 1;
        }
        const double fraction = d.duration_s > 0 ? std::min(1.0, elapsed / d.duration_s) : 1.0;
        channel.progress({{"step", step}, {"fraction", fraction}, {"elapsed_s", elapsed}});
        if (ctx.actor.role == ActorRole::kTrainer && ctx.actor.index == 0) {
            channel.metrics(step,
                            {{"diagnostic/elapsed_s", elapsed}, {"diagnostic/fraction", fraction}});
        }
        if (elapsed >= d.duration_s) break;
        ++step;
        std::this_thread::sleep_until(start +
                                      std::chrono::duration_cast<clock::duration>(period * step));
    }
    channel.log("info", fmt::format("diagnostic actor {} done", ctx.actor.str()));
    return 0;
}

}  // namespace tandem::agent
