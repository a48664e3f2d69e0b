#pragma once

// How the built-in rollout runs rollout.context_parallel > 1 on CUDA devices: which GPU each rank
// takes, which ring transport joins them, and which prompts of a batch are sharded. One rollout
// actor holds the whole group (as on the CPU, where the ranks are threads of the actor): rank r is
// a thread of the actor on CUDA device r of its CUDA_VISIBLE_DEVICES, i.e. the r-th GPU the
// scheduler assigned it (rollout.resources.gpus >= context_parallel). Each rank thread is its own
// ring process (it owns its device and reaches the others only through the ring), so
// kernels::make_ring_endpoint chooses the transport from the placements as for ranks in separate
// processes: NCCL between the GPUs of one host, UCX with host staging otherwise (no NCCL in the
// build, or two ranks on one GPU). Host code, in every build, so CI tests the wiring.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/job_spec.h"
#include "common/gpu/device_choice.h"
#include "common/status.h"
#include "kernels/ring/ring_select.h"

namespace tandem::rollout {

struct ContextParallelRankPlan {
    int rank = 0;
    int cuda_device = 0;  // the process's CUDA device (index into CUDA_VISIBLE_DEVICES)
    // host: the actor's; process: the rank (each rank thread is a ring process of its own); gpu:
    // the host's device index the scheduler assigned.
    kernels::RingRankPlacement placement;
};

struct ContextParallelPlan {
    std::vector<ContextParallelRankPlan> ranks;  // by rank
    kernels::RingChoice ring;                    // what make_ring_endpoint will choose
    // For the actor's log line: "2 ranks on GPUs 0,1 of host h1 (CUDA devices 0, 1): nccl (2 ranks
    // on 2 GPUs of host h1)".
    std::string describe() const;
};

// The device indices in an assigned GPU list ("3" or "0,1"), in order. Errors name the job and
// the list: an entry that is not a device index, or a device listed twice.
Result<std::vector<int>> parse_assigned_gpus(std::string_view assigned, std::string_view job);

// Why this process cannot run job.rollout.context_parallel ranks on GPUs of their own (fewer GPUs
// assigned or visible than ranks, a bad list), empty when it can or when context_parallel is 1.
// Names the job's fields, e.g. "rollout.context_parallel 4 needs 4 GPUs, but the scheduler
// assigned the actor 2 (0,1; set rollout.resources.gpus >= 4)".
std::string context_parallel_gpu_shortfall(const config::JobSpec& job,
                                           const gpu::DeviceFacts& facts);

// Rank r on CUDA device r (the r-th assigned GPU), on `host`; the ring choice by
// kernels::choose_ring_transport with `select`. invalid_argument naming the job when
// context_parallel_gpu_shortfall is not empty.
Result<ContextParallelPlan> plan_context_parallel(const config::JobSpec& job,
                                                  const gpu::DeviceFacts& facts,
                                                  std::string_view host, std::string_view job_name,
                                                  const kernels::RingSelectOptions& select);

// Which prompts of a batch take the context-parallel ranks: those whose context (prompt +
// max_new_tokens) exceeds max_tokens_per_device (0: none), as model::GroupGenerator chooses on
// the CPU. A context over ranks x max_tokens_per_device is invalid_argument naming the job, the
// prompt and both fields (the CPU generator's message).
struct ContextParallelSplit {
    std::vector<int> single;   // prompts generated on one device, in batch order
    std::vector<int> sharded;  // prompts sharded over the ranks, in batch order
};
Result<ContextParallelSplit> split_context_parallel(std::span<const std::vector<int32_t>> prompts,
                                                    int64_t max_new_tokens,
                                                    int64_t max_tokens_per_device, int ranks,
                                                    std::string_view job);

}  // namespace tandem::rollout
