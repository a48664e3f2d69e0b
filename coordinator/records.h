#pragma once

// The coordinator's records: what the managers own in memory and the state store persists.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config/job_spec.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/wire/messages.h"

namespace tandem::coord {

using Json = nlohmann::json;

enum class JobState { kPending, kRunning, kSucceeded, kFailed, kCancelled };
std::string_view job_state_name(JobState s);
Result<JobState> parse_job_state(std::string_view s);
inline bool is_final(JobState s) {
    return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

enum class NodeState { kAlive, kDead };
std::string_view node_state_name(NodeState s);

struct NodeRecord {
    std::string id;
    std::string role;
    std::string host;
    std::string agent_version;
    wire::Resources resources;  // what the node offers in total
    std::map<std::string, std::string> labels;
    NodeState state = NodeState::kAlive;
    int64_t first_seen_ns = 0;  // wall clock
    int64_t last_seen_ns = 0;
    std::string dead_reason;
};

struct ActorRecord {
    ActorId id;
    std::string node;  // empty while unplaced
    int64_t attempt = 0;
    wire::ActorPhase phase = wire::ActorPhase::kStarting;
    int64_t exit_code = 0;
    std::string last_error;
    Json progress = Json::object();
    Json endpoints = Json::object();  // name -> address, for this attempt
    std::vector<int> gpus;            // GPU slots of this attempt on its node

    std::string name() const { return id.str(); }
};

struct JobRecord {
    JobId id;
    std::string spec_yaml;  // resolved; the source of truth for `spec`
    config::JobSpec spec;   // parsed from spec_yaml
    JobState state = JobState::kPending;
    std::string reason;  // why pending, why failed, why cancelled
    int restarts_used = 0;
    int64_t submitted_ns = 0;
    int64_t started_ns = 0;
    int64_t finished_ns = 0;
    std::vector<ActorRecord> actors;
    int64_t step = 0;  // latest metrics step
    Json last_metrics = Json::object();
};

struct EventRecord {
    int64_t seq = 0;  // assigned by the StateStore
    int64_t ts_ns = 0;
    std::string kind;  // submitted, placed, actor_started, actor_exited, ...
    std::string message;
};

struct LogRecord {
    int64_t seq = 0;  // assigned by the StateStore
    int64_t ts_ns = 0;
    std::string actor;
    std::string level;
    std::string msg;
};

// What readers can do with a version. Available: every shard can be leased from its publisher.
// Retired: a publisher reclaimed a shard's slot (newer versions took it). Unavailable: a publisher
// is gone (its actor exited or its node was lost).
enum class VersionState { kAvailable, kRetired, kUnavailable };
std::string_view version_state_name(VersionState s);
Result<VersionState> parse_version_state(std::string_view s);

// The trainer actor (attempt) that published a shard of a version, and the node it ran on.
struct VersionPublisher {
    std::string actor;     // "job-000001/trainer-0"; empty if the descriptor named none
    int64_t attempt = -1;  // -1: unknown (not a running actor of the job when it announced)
    std::string node;
};

// One reader's place in a version's relay tree: it reads from `parent` (a reader of the same
// version) or, when `parent` is empty, from the publishers.
struct RelayLink {
    std::string reader;
    Json relay_source = nullptr;  // what the reader serves others with (weights::RelaySource JSON)
    std::string parent;           // empty: the publishers
    uint32_t depth = 1;           // 1: reads from the publishers
};

struct VersionRecord {
    Version version = 0;
    int64_t published_ns = 0;
    bool available = true;  // state == kAvailable
    Json descriptor = Json::object();
    VersionState state = VersionState::kAvailable;
    std::string reason;  // why retired or unavailable
    std::vector<VersionPublisher> publishers;
    std::vector<RelayLink> relays;  // in the order the readers joined
};

}  // namespace tandem::coord
