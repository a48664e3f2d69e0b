#pragma once

// Messages of the actor runtime (common/runtime/job_runtime.h). An actor's runtime client talks
// to its node agent over a local socket with the same envelopes as the agent's control
// connection; the agent relays them to the coordinator and routes the answers back by actor id.
//
//   actor -> agent:              RuntimeHello (who is on this connection)
//   actor -> agent -> coord:     VersionAssign, JobEvent, and the control-plane messages actors
//                                already produce (ActorState progress, LogLines, JobMetrics,
//                                VersionPublished with `info`, VersionRetired, RelayJoin,
//                                ActorEndpoint)
//   coord -> agent -> actor:     VersionAssigned, RelayAssigned, JobView
//
// Each struct lists its fields once, in visit(); JSON encoding and validation follow from it.

#include <compare>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tandem::wire {

using Json = nlohmann::json;

// Field roles for visit(): required or optional when decoding.
enum class Need { kRequired, kOptional };

// Which trainer may publish a job's versions, ordered lexicographically: job_attempt is the job's
// run (1: Tandem restarts actors, not whole jobs), trainer_epoch the trainer actor's attempt (the
// coordinator's count of its starts). The version table refuses a fence below the job's current
// one. Also runtime::Fence.
struct Fence {
    int64_t job_attempt = 0;
    int64_t trainer_epoch = 0;

    auto operator<=>(const Fence&) const = default;
    bool valid() const { return job_attempt > 0 && trainer_epoch > 0; }
    std::string str() const;  // "1.3"
    Json to_json() const;
    static Result<Fence> from_json(const Json& j);
};

// The first message on an actor's runtime connection (and repeated when the actor reconnects).
struct RuntimeHello {
    static constexpr const char* kType = "runtime_hello";
    std::string actor;
    int64_t attempt = 0;
    template <typename V>
    void visit(V& v) {
        v("actor", actor, Need::kRequired);
        v("attempt", attempt, Need::kRequired);
    }
    Json to_json() const;
    static Result<RuntimeHello> from_json(const Json& j);
};

// A trainer asks the version table for the number of the version after `step` steps.
struct VersionAssign {
    static constexpr const char* kType = "version_assign";
    std::string job;
    std::string actor;  // the trainer actor id
    int64_t attempt = 0;
    int64_t step = 0;
    uint64_t data_cursor = 0;
    int64_t after = -1;  // the highest version this trainer already holds (-1: none)
    template <typename V>
    void visit(V& v) {
        v("job", job, Need::kRequired);
        v("actor", actor, Need::kRequired);
        v("attempt", attempt, Need::kRequired);
        v("step", step, Need::kRequired);
        v("data_cursor", data_cursor, Need::kOptional);
        v("after", after, Need::kOptional);
    }
    Json to_json() const;
    static Result<VersionAssign> from_json(const Json& j);
};

// The table's answer: `info` (runtime::VersionInfo JSON) or an error (status code name).
struct VersionAssigned {
    static constexpr const char* kType = "version_assigned";
    std::string job;
    std::string actor;
    int64_t step = 0;
    Json info = nullptr;
    std::string error_code;  // empty on success
    std::string error;
    template <typename V>
    void visit(V& v) {
        v("job", job, Need::kRequired);
        v("actor", actor, Need::kRequired);
        v("step", step, Need::kRequired);
        v("info", info, Need::kOptional);
        v("error_code", error_code, Need::kOptional);
        v("error", error, Need::kOptional);
    }
    Json to_json() const;
    static Result<VersionAssigned> from_json(const Json& j);
};

// Where a relaying reader reads a version: `source` (weights::RelaySource JSON) or null for the
// publishers; or an error.
struct RelayAssigned {
    static constexpr const char* kType = "relay_assigned";
    std::string job;
    std::string actor;  // the reader
    uint64_t version = 0;
    Json source = nullptr;
    std::string error;  // empty on success
    template <typename V>
    void visit(V& v) {
        v("job", job, Need::kRequired);
        v("actor", actor, Need::kRequired);
        v("version", version, Need::kRequired);
        v("source", source, Need::kOptional);
        v("error", error, Need::kOptional);
    }
    Json to_json() const;
    static Result<RelayAssigned> from_json(const Json& j);
};

// A job as its actors see it, pushed whole whenever it changes. `newest`: {"info": VersionInfo,
// "descriptor": weights JSON} or null; `peers`: [{"actor","attempt","phase","endpoints"}].
struct JobView {
    static constexpr const char* kType = "job_view";
    std::string job;
    Json fence = nullptr;  // runtime::Fence JSON; null before the trainer started
    Json newest = nullptr;
    Json peers = Json::array();
    bool cancelled = false;  // the job is final (succeeded, failed, cancelled)
    int64_t metrics_step = -1;
    bool connected = true;  // set by the agent: false while it has no coordinator connection
    template <typename V>
    void visit(V& v) {
        v("job", job, Need::kRequired);
        v("fence", fence, Need::kOptional);
        v("newest", newest, Need::kOptional);
        v("peers", peers, Need::kRequired);
        v("cancelled", cancelled, Need::kOptional);
        v("metrics_step", metrics_step, Need::kOptional);
        v("connected", connected, Need::kOptional);
    }
    Json to_json() const;
    static Result<JobView> from_json(const Json& j);
};

// An actor's job event (kind in snake_case).
struct JobEvent {
    static constexpr const char* kType = "job_event";
    std::string job;
    std::string actor;
    std::string kind;
    std::string message;
    template <typename V>
    void visit(V& v) {
        v("job", job, Need::kRequired);
        v("actor", actor, Need::kRequired);
        v("kind", kind, Need::kRequired);
        v("message", message, Need::kOptional);
    }
    Json to_json() const;
    static Result<JobEvent> from_json(const Json& j);
};

// Validates the body of a runtime message of `type`; not_found for a type not listed here.
Status validate_runtime_body(std::string_view type, const Json& body);

}  // namespace tandem::wire
