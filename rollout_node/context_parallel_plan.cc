#include "rollout_node/context_parallel_plan.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::rollout {

std::string ContextParallelPlan::describe() const {
    std::string gpus, devices;
    for (const ContextParallelRankPlan& r : ranks) {
        gpus += (gpus.empty() ? "" : ",") + std::to_string(r.placement.gpu);
        devices += (devices.empty() ? "" : ", ") + std::to_string(r.cuda_device);
    }
    const std::string host = ranks.empty() ? std::string("?") : ranks[0].placement.host;
    return fmt::format("{} ranks on GPUs {} of host {} (CUDA devices {}): {}{} ({})", ranks.size(),
                       gpus, host, devices, kernels::ring_backend_name(ring.backend),
                       ring.host_staging ? " with host staging" : "", ring.reason);
}

Result<std::vector<int>> parse_assigned_gpus(std::string_view assigned, std::string_view job) {
    std::vector<int> out;
    size_t at = 0;
    while (at <= assigned.size() && !assigned.empty()) {
        const size_t comma = std::min(assigned.find(',', at), assigned.size());
        const std::string_view item = assigned.substr(at, comma - at);
        int v = 0;
        bool ok = !item.empty() && item.size() <= 6;
        for (const char ch : item) {
            ok = ok && ch >= '0' && ch <= '9';
            if (ok) v = v * 10 + (ch - '0');
        }
        if (!ok) {
            return invalid_argument(fmt::format(
                "job {}: the actor's GPU list \"{}\" (CUDA_VISIBLE_DEVICES) has \"{}\", which is "
                "not a device index",
                job, assigned, item));
        }
        if (std::find(out.begin(), out.end(), v) != out.end()) {
            return invalid_argument(fmt::format(
                "job {}: the actor's GPU list \"{}\" (CUDA_VISIBLE_DEVICES) names GPU {} twice",
                job, assigned, v));
        }
        out.push_back(v);
        at = comma + 1;
    }
    return out;
}

std::string context_parallel_gpu_shortfall(const config::JobSpec& job,
                                           const gpu::DeviceFacts& facts) {
    const int P = job.rollout.context_parallel;
    if (P <= 1) return "";
    auto gpus = parse_assigned_gpus(facts.assigned, job.name);
    if (!gpus.ok()) return std::string(gpus.status().message());
    const int assigned = static_cast<int>(gpus->size());
    if (assigned < P) {
        return fmt::format(
            "rollout.context_parallel {} needs {} GPUs, one per rank, but the scheduler assigned "
            "the actor {}{} (set rollout.resources.gpus >= {})",
            P, P, assigned, assigned > 0 ? " (" + facts.assigned + ")" : std::string(), P);
    }
    if (facts.visible_devices < P) {
        return fmt::format(
            "rollout.context_parallel {} needs {} GPUs, one per rank, but the actor sees {} CUDA "
            "device(s) (CUDA_VISIBLE_DEVICES={})",
            P, P, facts.visible_devices, facts.assigned);
    }
    return "";
}

Result<ContextParallelPlan> plan_context_parallel(const config::JobSpec& job,
                                                  const gpu::DeviceFacts& facts,
                                                  std::string_view host, std::string_view job_name,
                                                  const kernels::RingSelectOptions& select) {
    const int P = job.rollout.context_parallel;
    if (P < 1) {
        return invalid_argument(
            fmt::format("job {}: rollout.context_parallel must be >= 1, got {}", job_name, P));
    }
    if (const std::string why = context_parallel_gpu_shortfall(job, facts); !why.empty()) {
        return invalid_argument(fmt::format("job {}: {}", job_name, why));
    }
    TANDEM_ASSIGN_OR_RETURN(std::vector<int> gpus, parse_assigned_gpus(facts.assigned, job_name));
    ContextParallelPlan plan;
    std::vector<kernels::RingRankPlacement> placements;
    for (int r = 0; r < P; ++r) {
        ContextParallelRankPlan rank;
        rank.rank = r;
        rank.cuda_device = r;
        rank.placement.host = std::string(host);
        rank.placement.process = r;
        rank.placement.gpu = gpus[static_cast<size_t>(r)];
        placements.push_back(rank.placement);
        plan.ranks.push_back(std::move(rank));
    }
    auto choice = kernels::choose_ring_transport(placements, select);
    if (!choice.ok()) {
        return choice.status().with_context(
            fmt::format("job {}: rollout.context_parallel", job_name));
    }
    plan.ring = std::move(*choice);
    return plan;
}

Result<ContextParallelSplit> split_context_parallel(std::span<const std::vector<int32_t>> prompts,
                                                    int64_t max_new_tokens,
                                                    int64_t max_tokens_per_device, int ranks,
                                                    std::string_view job) {
    ContextParallelSplit split;
    const int64_t M = max_tokens_per_device;
    for (size_t p = 0; p < prompts.size(); ++p) {
        const int64_t n = static_cast<int64_t>(prompts[p].size());
        const int64_t need = n + max_new_tokens;
        if (M <= 0 || need <= M) {
            split.single.push_back(static_cast<int>(p));
            continue;
        }
        if (need > M * ranks) {
            return invalid_argument(fmt::format(
                "job {}: prompt {} has {} tokens; with max_new_tokens {} its context ({}) exceeds "
                "rollout.context_parallel ({}) x rollout.max_tokens_per_device ({}) = {}",
                job, p, n, max_new_tokens, need, ranks, M, M * ranks));
        }
        split.sharded.push_back(static_cast<int>(p));
    }
    return split;
}

}  // namespace tandem::rollout
