#include "common/runtime/actor_main.h"

#include <cstdio>

#include <fmt/format.h>

#include "common/runtime/agent_runtime.h"

namespace tandem::runtime {

Status run_diagnostic_actor(JobRuntime& rt) {
    const auto& d = rt.spec().diagnostic;
    const Clock& clock = rt.clock();
    const auto start = clock.now();
    const auto period = std::chrono::duration<double>(d.report_every_s);
    rt.log(LogLevel::kInfo, fmt::format("diagnostic actor {} (attempt {}) on {}: {} s",
                                        rt.actor().str(), rt.attempt(), rt.node(), d.duration_s));
    int64_t step = 0;
    uint64_t seen = 0;
    while (true) {
        const double elapsed = seconds_between(start, clock.now());
        if (d.fail_after_s && elapsed >= *d.fail_after_s) {
            return internal_error(
                fmt::format("diagnostic failure after {:.1f} s (fail_after_s)", elapsed));
        }
        const double fraction = d.duration_s > 0 ? std::min(1.0, elapsed / d.duration_s) : 1.0;
        rt.progress({{"step", step}, {"fraction", fraction}, {"elapsed_s", elapsed}});
        if (rt.actor().role == ActorRole::kTrainer && rt.actor().index == 0) {
            rt.metrics(step,
                       {{"diagnostic/elapsed_s", elapsed}, {"diagnostic/fraction", fraction}});
        }
        if (elapsed >= d.duration_s) break;
        ++step;
        const auto next =
            start + std::chrono::duration_cast<Clock::Duration>(period * static_cast<double>(step));
        // Wakes for view changes (cancellation) as well as the next report.
        while (clock.now() < next) {
            const JobView v = rt.wait_change(seen, next);
            seen = v.generation;
            if (v.cancelled) return Status();
        }
    }
    rt.log(LogLevel::kInfo, fmt::format("diagnostic actor {} done", rt.actor().str()));
    return Status();
}

int actor_main(const agent::ActorContext& ctx, const GrpoActor& grpo) {
    auto rt = AgentRuntime::connect(ctx, SystemClock::instance());
    if (!rt.ok()) {
        std::fprintf(stderr, "%s\n", rt.status().message().c_str());
        return 1;
    }
    Status s;
    switch (ctx.spec.kind) {
        case config::JobKind::kDiagnostic:
            s = run_diagnostic_actor(**rt);
            break;
        case config::JobKind::kGrpo:
            s = grpo ? grpo(**rt) : internal_error("this build has no GRPO actor");
            break;
    }
    if (s.ok()) return 0;
    (*rt)->fail(s.message());
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
}

}  // namespace tandem::runtime
