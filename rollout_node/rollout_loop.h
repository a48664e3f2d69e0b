#pragma once

// RolloutLoop: the GRPO rollout actor's step loop over the actor runtime. It follows the trainer
// run of the job's current fence (the runtime's view): on a new fence (the trainer restarted, or
// the first one started) it waits for that run's first version, fetches it, finds the run's
// trajectory socket and restarts its batch counter at that version's step. Batch k needs weights
// of the followed fence with step >= k - max_staleness: newer versions are fetched in the
// background while it generates on the one it holds, and it blocks only when the bound requires
// (on the transfer: weight-sync wait; on the trainer: trainer wait). Waiting is on the runtime's
// view and the fetch, never a sleep. What weights, generation and the trajectory socket do is the
// Weights', Generator's and TrajectoryOutbox's; all three are faked in tests/unit/runtime.
// Owned by the rollout thread.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/rl/grpo_protocol.h"
#include "common/runtime/job_runtime.h"

namespace tandem::rollout {

// The rollout's weights: one version current (generation reads it), one fetched in the background.
class Weights {
public:
    virtual ~Weights() = default;
    // Starts fetching `v` (one fetch at a time).
    virtual void start_fetch(const runtime::PublishedVersion& v) = 0;
    virtual bool fetching() const = 0;
    // Waits for the fetch until `deadline`: its status once it ended, nullopt while it runs.
    virtual std::optional<Status> wait_fetch(Clock::TimePoint deadline) = 0;
    // Step boundary: the newest fetched version becomes current. An error (the device could not
    // take it in) ends the rollout's step with it; current() then says what is left.
    virtual Status swap() = 0;
    virtual std::optional<Version> current() const = 0;
    virtual double last_fetch_s() const = 0;
};

// Generates and scores one batch on the current weights: the trajectories of the rollout's share
// of the prompts from data cursor `first_cursor`, for batch (step) `batch`.
class Generator {
public:
    virtual ~Generator() = default;
    virtual Result<rl::TrajectoryBatch> generate(int64_t batch, uint64_t first_cursor) = 0;
};

// The trainer's trajectory socket.
class TrajectoryOutbox {
public:
    virtual ~TrajectoryOutbox() = default;
    // Connects to a trainer run's socket (batches queued for an older one are dropped).
    virtual Status connect(const std::string& endpoint) = 0;
    virtual Status send(const rl::TrajectoryBatch& batch) = 0;
};

struct RolloutLoopOptions {
    int64_t max_staleness = 0;
    int prompts_per_step = 1;
    Clock::Duration poll = std::chrono::milliseconds(100);  // wait granularity on the view
    Clock::Duration endpoint_timeout = std::chrono::minutes(5);
};

class RolloutLoop {
public:
    RolloutLoop(runtime::JobRuntime& runtime, Weights& weights, Generator& generator,
                TrajectoryOutbox& outbox, RolloutLoopOptions options);

    // One batch; false once the job is cancelled.
    Result<bool> step();
    Status run();

    int64_t batch() const { return batch_; }
    const std::optional<runtime::Fence>& following() const { return following_; }
    // The version info of the current weights (nullopt before the first).
    std::optional<runtime::VersionInfo> current_info() const;

private:
    // Follows the view's fence: waits for its first version, fetches it, connects to its
    // trainer's socket. False when cancelled.
    Result<bool> resync();
    // Starts fetching the view's newest version if it is of the followed fence and newer than
    // what is held or fetched.
    void look_for_versions(const runtime::JobView& view);
    // Ends a finished fetch; swaps it in at this step boundary (a failed swap is returned).
    Status finish_fetch(const Status& s);
    // Blocks until the current version is of the followed fence with step >= min_step, or the
    // fence moves (false), or the job is cancelled (false).
    Result<bool> ensure(int64_t min_step, double* sync_wait_s, double* trainer_wait_s);
    uint64_t cursor_of(int64_t batch) const {
        return base_.data_cursor + static_cast<uint64_t>(batch - base_.step) *
                                       static_cast<uint64_t>(opt_.prompts_per_step);
    }

    runtime::JobRuntime& rt_;
    Weights& weights_;
    Generator& gen_;
    TrajectoryOutbox& out_;
    RolloutLoopOptions opt_;
    std::optional<runtime::Fence> following_;
    runtime::VersionInfo base_;  // the followed run's first version seen (maps batches to cursors)
    int64_t batch_ = 0;
    std::map<Version, runtime::VersionInfo> infos_;  // of versions fetched or being fetched
    std::optional<Version> fetching_;
    std::optional<Version> failed_;  // the last version whose fetch failed (not retried at once)
};

}  // namespace tandem::rollout
