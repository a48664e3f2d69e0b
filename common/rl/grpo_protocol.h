#pragma once

// What the GRPO actors of a job say to each other and how they find each other.
//
// Trajectory plane: each rollout actor PUSHes batches of scored trajectories to the trainer
// actor's PULL socket (ZeroMQ, msgpack-encoded); the trainer announces that socket as its
// `trajectories` endpoint and rollouts find it in the coordinator's job detail. Weight plane: the
// trainer announces every published version to the coordinator's version table (through its
// agent); rollouts read the newest descriptor there and fetch the bytes from the trainer.

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/agent/actor_context.h"
#include "common/model/trainer.h"
#include "common/status.h"
#include "common/weights/descriptor.h"

namespace tandem::rl {

// One rollout actor's contribution to one training step.
struct TrajectoryBatch {
    int64_t rollout = 0;            // rollout actor index
    int64_t batch = 0;              // the rollout's batch counter (the step it was generated for)
    int64_t version = 0;            // weight version used
    double rollout_s = 0;           // generation and scoring
    double weight_sync_wait_s = 0;  // blocked on a version's transfer the staleness bound required
    double trainer_wait_s = 0;      // blocked because the trainer had not published it yet
    double fetch_s = 0;             // last weight fetch (in the background unless waited for)
    int64_t generated_tokens = 0;
    std::vector<model::Trajectory> trajectories;

    std::string encode() const;  // msgpack
    static Result<TrajectoryBatch> decode(const std::string& bytes);
};

// What a published version means for training, announced with its descriptor (fields "step",
// "data_cursor", "trainer_attempt"). Versions increase across trainer restarts while steps go
// back to the checkpoint, so `version - step` (the epoch) changes exactly when a trainer restarts;
// rollouts restart their batch counter from `step` then.
struct VersionInfo {
    int64_t step = 0;          // training steps behind this version
    uint64_t data_cursor = 0;  // the first example index of the next step's prompts
    int64_t trainer_attempt = 0;
    int64_t epoch(int64_t version) const { return version - step; }
};

// Publishes weight-plane announcements as actor protocol lines (the agent forwards them to the
// coordinator's version table). Thread-safe.
class ChannelAnnouncer final : public weights::Announcer {
public:
    explicit ChannelAnnouncer(agent::ActorChannel& channel) : channel_(channel) {}
    // Call before publishing `version`: its announcement will carry `info`.
    void describe(Version version, const VersionInfo& info);
    Status announce(const weights::VersionDescriptor& shard_version) override;
    void retire(JobId job, Version version, uint32_t shard) override;

private:
    agent::ActorChannel& channel_;
    std::mutex mu_;
    std::map<Version, VersionInfo> info_;  // versions described and not yet announced
};

// A version as the coordinator's table holds it, with what its trainer said about it.
struct PublishedVersion {
    weights::VersionDescriptor descriptor;
    std::optional<VersionInfo> info;  // absent when the publisher did not describe it
};

// The coordinator's view of a job, as an actor sees it over HTTP.
class JobClient {
public:
    // `token`: the actor's bearer token (ActorContext::api_token).
    JobClient(std::string coordinator_http, JobId job, std::string token = "")
        : http_(std::move(coordinator_http)), job_(job), token_(std::move(token)) {}

    // The address an actor of this job announced under `name`, if it has yet.
    Result<std::optional<std::string>> endpoint(const std::string& actor,
                                                const std::string& name) const;
    // The newest available complete version, if any (GET .../versions/latest).
    Result<std::optional<PublishedVersion>> latest_version() const;
    // The highest version number the job's table holds, available or not (GET .../versions);
    // nullopt when it holds none. A restarted trainer numbers its versions above it.
    Result<std::optional<int64_t>> max_version() const;

private:
    std::string http_;
    JobId job_;
    std::string token_;
};

// UCX transports for the weight plane: shared memory when every actor of the job runs on one
// host (UCX's default picks TCP loopback for the active messages there, measured 7-8 ms per
// 376 KB fetch on a busy 2-core machine against 2-3 ms over shared memory); UCX's default ("")
// otherwise. The trainer's publisher and the rollouts' readers call it on the same placement
// (the actor context's), so they agree.
std::string weight_transports(const nlohmann::json& placement);

}  // namespace tandem::rl
