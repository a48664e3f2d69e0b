#pragma once

// Control-plane messages between node agents and the coordinator. Each has a `kType` (the
// envelope type), `to_json()` and a validating `from_json()`. Agent -> coordinator: Register,
// Heartbeat, ActorState, LogLines, ActorEndpoint, JobMetrics, and for the weight-version table
// VersionPublished, VersionRetired, RelayJoin. Coordinator -> agent: RegisterAck, HeartbeatAck,
// StartActor, StopActor. Both ways: Error.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "common/wire/envelope.h"

namespace tandem::wire {

using Json = nlohmann::json;

struct Resources {
    double cpus = 0;
    int64_t memory_mb = 0;
    int64_t gpus = 0;

    Json to_json() const;
    static Result<Resources> from_json(const Json& j);
};

// Where an actor is in its life on a node. kPending is the coordinator's only: an actor that
// failed and waits for a node with room (agents never report it).
enum class ActorPhase { kStarting, kRunning, kSucceeded, kFailed, kStopped, kPending };
std::string_view actor_phase_name(ActorPhase p);
Result<ActorPhase> parse_actor_phase(std::string_view s);
inline bool is_terminal(ActorPhase p) {
    return p == ActorPhase::kSucceeded || p == ActorPhase::kFailed || p == ActorPhase::kStopped;
}

// An agent's view of one actor, sent with every heartbeat and registration. Heartbeats are the
// level-triggered source of truth: an exit the coordinator missed (it was restarting) is seen here.
struct ActorReport {
    std::string actor;  // "job-000001/rollout-0"
    int64_t attempt = 0;
    ActorPhase phase = ActorPhase::kRunning;
    int64_t exit_code = 0;
    std::string error;  // last error line of a failed actor

    Json to_json() const;
    static Result<ActorReport> from_json(const Json& j);
};

struct Register {
    static constexpr const char* kType = "register";
    std::string node_id;
    std::string role;  // trainer | rollout
    std::string host;
    std::string secret;
    std::string instance;  // random per agent process: the same agent re-registering after a
                           // reconnect is recognised, a second agent with the same id is not
    std::string agent_version;
    Resources resources;
    std::map<std::string, std::string> labels;
    std::vector<ActorReport> actors;  // actors already running (after a coordinator restart)

    Json to_json() const;
    static Result<Register> from_json(const Json& j);
};

struct RegisterAck {
    static constexpr const char* kType = "register_ack";
    std::string node_id;
    int64_t heartbeat_ms = 1000;
    uint64_t epoch = 0;                    // changes when the coordinator restarts
    std::vector<std::string> stop_actors;  // actors the agent reported that must not run
    std::string actor_token;  // HTTP API token (role actor) the agent hands its actors; optional
    std::string coordinator_version;  // the coordinator's release (kVersion); "" from older ones

    Json to_json() const;
    static Result<RegisterAck> from_json(const Json& j);
};

struct Heartbeat {
    static constexpr const char* kType = "heartbeat";
    std::string node_id;
    int64_t sent_ns = 0;       // agent's steady clock, echoed back for round-trip time
    uint64_t epoch = 0;        // the coordinator epoch the agent registered with
    int64_t last_rtt_us = -1;  // round trip of the previous heartbeat as the agent measured it
    std::vector<ActorReport> actors;

    Json to_json() const;
    static Result<Heartbeat> from_json(const Json& j);
};

struct HeartbeatAck {
    static constexpr const char* kType = "heartbeat_ack";
    int64_t sent_ns = 0;
    uint64_t epoch = 0;

    Json to_json() const;
    static Result<HeartbeatAck> from_json(const Json& j);
};

struct StartActor {
    static constexpr const char* kType = "start_actor";
    std::string actor;
    std::string job;
    int64_t attempt = 0;
    std::string spec_yaml;            // the resolved job spec
    Json placement = Json::object();  // where the job's other actors run (trainer address...)
    uint64_t epoch = 0;  // the sending coordinator's epoch; agents refuse older ones (0: unset)

    Json to_json() const;
    static Result<StartActor> from_json(const Json& j);
};

struct StopActor {
    static constexpr const char* kType = "stop_actor";
    std::string actor;
    std::string reason;
    uint64_t epoch = 0;  // as in StartActor

    Json to_json() const;
    static Result<StopActor> from_json(const Json& j);
};

struct ActorState {
    static constexpr const char* kType = "actor_state";
    std::string actor;
    int64_t attempt = 0;
    ActorPhase phase = ActorPhase::kRunning;
    int64_t exit_code = 0;
    std::string error;  // the last error line, for failed actors
    Json progress;      // optional: {"step": .., "fraction": .., metrics ...}

    Json to_json() const;
    static Result<ActorState> from_json(const Json& j);
};

struct LogLine {
    std::string actor;
    int64_t ts_ns = 0;  // wall clock
    std::string level;
    std::string msg;

    Json to_json() const;
    static Result<LogLine> from_json(const Json& j);
};

struct LogLines {
    static constexpr const char* kType = "log_lines";
    std::string job;
    std::vector<LogLine> lines;

    Json to_json() const;
    static Result<LogLines> from_json(const Json& j);
};

struct Error {
    static constexpr const char* kType = "error";
    std::string code;  // status code name
    std::string message;
    uint64_t in_reply_to = 0;         // seq of the offending message, 0 if unknown
    std::string coordinator_version;  // its release, on refusals of another protocol major; opt.

    Json to_json() const;
    static Result<Error> from_json(const Json& j);
};

// A trainer actor published a weight version (the descriptor is the weight plane's JSON).
struct VersionPublished {
    static constexpr const char* kType = "version_published";
    std::string job;
    uint64_t version = 0;
    Json descriptor = Json::object();
    Json info = nullptr;  // runtime::VersionInfo JSON (number, fence, step, data cursor); optional

    Json to_json() const;
    static Result<VersionPublished> from_json(const Json& j);
};

// A publisher reclaimed the slot that held one shard of a version: that version can no longer be
// read from it (the version table shows it as retired).
struct VersionRetired {
    static constexpr const char* kType = "version_retired";
    std::string job;
    uint64_t version = 0;
    uint64_t shard = 0;
    std::string publisher;  // actor id

    Json to_json() const;
    static Result<VersionRetired> from_json(const Json& j);
};

// A reader is about to fetch a version and can serve what it fetches to other readers: the
// version table assigns it a source (a publisher or an earlier reader) in a tree of the job's
// relay fan-out. The reader finds its assignment at GET /api/v1/jobs/JOB/versions/V/source.
struct RelayJoin {
    static constexpr const char* kType = "relay_join";
    std::string job;
    uint64_t version = 0;
    std::string reader;           // actor id
    Json relay_source = nullptr;  // weights::RelaySource JSON; null: the reader does not relay

    Json to_json() const;
    static Result<RelayJoin> from_json(const Json& j);
};

// An actor serves something at an address (the trainer's trajectory socket, say); others of its
// job find it in the job's actor list.
struct ActorEndpoint {
    static constexpr const char* kType = "actor_endpoint";
    std::string actor;
    int64_t attempt = 0;
    std::string name;     // "trajectories"
    std::string address;  // "tcp://127.0.0.1:40123"

    Json to_json() const;
    static Result<ActorEndpoint> from_json(const Json& j);
};

// Per-step metrics of a job (JSON object of name -> number), from its trainer actor.
struct JobMetrics {
    static constexpr const char* kType = "job_metrics";
    std::string job;
    int64_t step = 0;
    Json values = Json::object();

    Json to_json() const;
    static Result<JobMetrics> from_json(const Json& j);
};

// Releases (the project version, kVersion) travel both ways: Register.agent_version and
// RegisterAck.coordinator_version. Another control-protocol major is refused (neither side can
// read the other); another release on the same major joins with a warning on both sides, as in a
// rolling upgrade.
//
// The refusal of another protocol major, naming the node, both releases and both protocols.
std::string protocol_mismatch_message(std::string_view node, std::string_view agent_release,
                                      std::string_view agent_protocol,
                                      std::string_view coordinator_release,
                                      std::string_view coordinator_protocol);
// The warning for releases that differ on the same protocol major; "" when they are equal or one
// is unknown (empty).
std::string release_skew_message(std::string_view node, std::string_view agent_release,
                                 std::string_view coordinator_release);
// A string field of a body that could not be decoded (another protocol major): "" when the body
// is not a JSON object or the field is not a string.
std::string string_field_of(std::string_view body, const char* key);

// Validates the body of a message of `type`; not_found for an unknown type.
Status validate_body(std::string_view type, const Json& body);

// Builds an envelope for a message.
template <typename M>
Envelope make_envelope(const M& m, uint64_t seq) {
    Envelope e;
    e.type = M::kType;
    e.seq = seq;
    e.body = m.to_json();
    return e;
}

// Decodes the body of an envelope already known to be of type M.
template <typename M>
Result<M> body_as(const Envelope& e) {
    if (e.type != M::kType) {
        return invalid_argument("expected a " + std::string(M::kType) + " message, got " + e.type);
    }
    return M::from_json(e.body);
}

}  // namespace tandem::wire
