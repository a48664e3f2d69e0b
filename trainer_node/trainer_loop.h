#pragma once

// TrainerLoop: the GRPO trainer's step loop over the actor runtime. Each step takes
// prompts_per_step whole groups of trajectories that the TrajectoryGate accepts (this trainer's
// fence, versions it published, within the staleness bound), trains on them, asks the version table
// for the next version's number and publishes it. While some rollout actor is not alive (the
// runtime's view of its peers) a step takes the live ones' share: rollout k owns prompts k, k + R,
// ... of every step, the others' prompts of that step are skipped and the data cursor still moves
// prompts_per_step a step. What the model does is the Learner's; where trajectories come from is
// the TrajectoryInbox's; both are faked in tests/unit/runtime. Owned by the trainer thread.

#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/model/trainer.h"
#include "common/model/trajectory.h"
#include "common/rl/grpo_protocol.h"
#include "common/rl/trajectory_gate.h"
#include "common/runtime/job_runtime.h"

namespace tandem::trainer {

using Json = nlohmann::json;

// One finished step, for the Learner to report and checkpoint.
struct StepReport {
    int64_t step = 0;           // steps taken, this one included
    runtime::VersionInfo info;  // the version published after it
    model::TrainStats train;
    Json rollout_stats;  // what collect() saw: timings, staleness, versions, live rollouts
    double step_s = 0, train_s = 0, publish_s = 0, wait_s = 0;
};

// The model side of the trainer.
class Learner {
public:
    virtual ~Learner() = default;
    // One optimizer step on `batch`.
    virtual Result<model::TrainStats> train(std::vector<model::Trajectory>& batch) = 0;
    // Writes the current weights as version `info` and announces it (through the runtime).
    virtual Status publish(const runtime::VersionInfo& info) = 0;
    // After a step: metrics, checkpoints.
    virtual Status finished(const StepReport& report) = 0;
};

// Where the trainer's trajectories arrive (its PULL socket).
class TrajectoryInbox {
public:
    virtual ~TrajectoryInbox() = default;
    // The next batch, waiting until `deadline`; nullopt when none came.
    virtual Result<std::optional<rl::TrajectoryBatch>> next(Clock::TimePoint deadline) = 0;
};

struct TrainerLoopOptions {
    int64_t start_step = 0;     // steps behind the starting weights (a resumed checkpoint's)
    uint64_t start_cursor = 0;  // data cursor at start_step
    Version first_version = 0;  // the lowest number to ask for (a resumed checkpoint's version)
    int64_t steps = 0;          // the job's total
    int prompts_per_step = 1;
    int group_size = 1;
    int replicas = 1;  // rollout actors
    int64_t max_staleness = 0;
    Clock::Duration assign_timeout = std::chrono::minutes(10);  // a coordinator that stays away
    Clock::Duration poll =
        std::chrono::milliseconds(50);  // how often a waiting step looks at peers
};

class TrainerLoop {
public:
    TrainerLoop(runtime::JobRuntime& runtime, Learner& learner, TrajectoryInbox& inbox,
                TrainerLoopOptions options);

    // Publishes the starting weights (the version of start_step).
    Status start();
    // One step; false once every step is done (or the job was cancelled).
    Result<bool> step();
    Status run();

    int64_t steps_done() const { return step_; }
    const runtime::VersionInfo& current() const { return current_; }
    const rl::TrajectoryGate& gate() const { return gate_; }
    // Trajectories per step from the live rollouts (all of them when every rollout is alive).
    size_t live_share(const runtime::JobView& view) const;
    uint64_t cursor_of(int64_t step) const {
        return opt_.start_cursor + static_cast<uint64_t>(step - opt_.start_step) *
                                       static_cast<uint64_t>(opt_.prompts_per_step);
    }

private:
    Status publish(int64_t step);
    Status collect(std::vector<model::Trajectory>& batch, Json& stats);

    runtime::JobRuntime& rt_;
    Learner& learner_;
    TrajectoryInbox& inbox_;
    TrainerLoopOptions opt_;
    rl::TrajectoryGate gate_;
    runtime::VersionInfo current_;
    int64_t step_;
    int live_logged_ = -1;                  // live rollouts when last logged
    std::vector<model::Trajectory> carry_;  // accepted beyond the last batch
};

}  // namespace tandem::trainer
