#pragma once

// What the GRPO actors of a job say to each other.
//
// Trajectory plane: each rollout actor PUSHes batches of scored trajectories to the trainer
// actor's PULL socket (ZeroMQ, msgpack-encoded); the trainer announces that socket as its
// `trajectories` endpoint through the actor runtime and rollouts find it in their job view. Weight
// plane: versions are numbered by the coordinator's version table and announced through the
// runtime (common/runtime/job_runtime.h); rollouts fetch the bytes from the trainer.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/model/trainer.h"
#include "common/status.h"
#include "common/weights/descriptor.h"
#include "common/wire/runtime_messages.h"

namespace tandem::rl {

// The KV cache of one rollout batch (model::GenerateStats; docs/kv-cache.md). The trainer turns
// them into the step's kv/* metrics.
struct RolloutKvStats {
    int64_t bytes_in_use = 0;       // the most the cache held during the batch (prefix included)
    int64_t budget_bytes = 0;       // rollout.kv_cache.budget_bytes (0: none)
    int64_t prefix_bytes = 0;       // the pinned system-prompt prefix
    int64_t prefix_hits = 0;        // prompts that reused the prefix (forked or re-rotated)
    int64_t admission_waits = 0;    // prompts that waited for an earlier admission wave
    int64_t evictions = 0;          // cached prefixes dropped
    int64_t compressed_blocks = 0;  // blocks the background compressor requantized
    double bytes_per_token = 0;     // at the peak
    double compression = 0;         // bytes per position against f32, at the peak
};

// One rollout actor's contribution to one training step.
struct TrajectoryBatch {
    int64_t rollout = 0;            // rollout actor index
    int64_t batch = 0;              // the rollout's batch counter (the step it was generated for)
    int64_t version = 0;            // weight version used
    wire::Fence fence;              // the fence of that version (the trainer run it belongs to)
    double rollout_s = 0;           // generation and scoring
    double weight_sync_wait_s = 0;  // blocked on a version's transfer the staleness bound required
    double trainer_wait_s = 0;      // blocked because the trainer had not published it yet
    double fetch_s = 0;             // last weight fetch (in the background unless waited for)
    int64_t generated_tokens = 0;
    RolloutKvStats kv;
    std::vector<model::Trajectory> trajectories;

    std::string encode() const;  // msgpack
    static Result<TrajectoryBatch> decode(const std::string& bytes);
};

// UCX transports for the weight plane: shared memory when every actor of the job runs on one
// host (UCX's default picks TCP loopback for the active messages there, measured 7-8 ms per
// 376 KB fetch on a busy 2-core machine against 2-3 ms over shared memory); UCX's default ("")
// otherwise. The trainer's publisher and the rollouts' readers call it on the same placement
// (the actor context's), so they agree.
std::string weight_transports(const nlohmann::json& placement);

}  // namespace tandem::rl
