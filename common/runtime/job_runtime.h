#pragma once

// JobRuntime: the one interface between an actor and the cluster. An actor (the built-in GRPO
// trainer and rollout, or a user's program through the Python SDK) learns who it is and what job
// it runs, publishes and finds weight versions, finds its peers' channels, joins relay trees,
// reports metrics, events and log lines, and learns that it is cancelled, only through this
// interface. It never polls the coordinator's HTTP API, never sleeps to wait for the cluster and
// writes nothing but logs on stdout.
//
// Served by the actor's node agent over a local ZeroMQ ipc socket in the run directory
// (AgentRuntime, common/runtime/agent_runtime.h) and relayed by the agent on its existing
// connection to the coordinator; the coordinator *pushes* each actor's job view (newest version,
// peers and their endpoints, the job's fence, cancellation) whenever it changes. Views are
// level-triggered: every push replaces the last one whole, so a lost push or a coordinator
// restart costs nothing but the time until the next one. Tests use FakeRuntime
// (tests/fakes/fake_runtime.h).
//
// Versions are numbered by the coordinator's version table, not by the trainer: the trainer asks
// for the number of its next version (assign_version), writes the weights into a slot under that
// number, then announces the slot (announce_version). Each assignment carries the job's fence
// {job attempt, trainer epoch}; the table refuses assignments and announcements from a fence older
// than the job's current one (a trainer that was replaced), and the fence travels with the
// version into every trajectory, where the trainer's TrajectoryGate refuses other fences.
//
// Threading: every method is thread-safe, unless it says otherwise. Blocking methods wait on a
// condition with a deadline (never a sleep) and return deadline_exceeded when it passes, or
// unavailable once the runtime is cancelled.

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/config/job_spec.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/status.h"
#include "common/weights/descriptor.h"
#include "common/wire/runtime_messages.h"

namespace tandem::runtime {

using Json = nlohmann::json;

// Which trainer may publish a job's versions: {job attempt, trainer epoch}, ordered
// lexicographically (common/wire/runtime_messages.h).
using Fence = wire::Fence;

// What the version table assigned to a version, and what the trainer said it means.
struct VersionInfo {
    Version version = 0;
    Fence fence;
    int64_t step = 0;          // training steps behind these weights
    uint64_t data_cursor = 0;  // the first example index of the next step's prompts

    Json to_json() const;
    static Result<VersionInfo> from_json(const Json& j);
};

// A complete, available version: what a reader needs to fetch it.
struct PublishedVersion {
    VersionInfo info;
    weights::VersionDescriptor descriptor;  // complete(): every shard
};

// Another actor of the job as the coordinator sees it.
struct Peer {
    ActorId actor;
    int64_t attempt = 0;
    std::string phase;  // starting | running | succeeded | failed | stopped | pending
    std::map<std::string, std::string> endpoints;  // announced by this attempt: name -> address

    bool alive() const { return phase == "starting" || phase == "running"; }
    // The address announced under `name`, if any.
    std::optional<std::string> endpoint(std::string_view name) const;
};

// The actor's picture of its job: the coordinator's last push plus what the runtime knows locally.
struct JobView {
    uint64_t generation = 0;  // rises by one with every change; compare with wait_change
    bool connected = false;   // the agent has a live coordinator connection now
    bool cancelled = false;   // the job ended or this actor is being stopped: finish and return
    Fence fence;              // the job's current fence
    std::optional<PublishedVersion> newest;  // newest available version of the job
    std::vector<Peer> peers;                 // every actor of the job, this one included
    int64_t metrics_step = -1;  // the highest metrics step the coordinator has recorded

    const Peer* peer(const ActorId& id) const;
    // Live actors of `role`, by index.
    std::vector<const Peer*> live(ActorRole role) const;
};

// Where a relaying reader reads a version from: another reader, or (nullopt) the publishers.
using RelayChoice = std::optional<weights::RelaySource>;

class JobRuntime {
public:
    virtual ~JobRuntime() = default;

    // ---- Identity and spec (fixed for the actor's life) ----
    virtual const ActorId& actor() const = 0;
    virtual int64_t attempt() const = 0;  // the coordinator's count of this actor's starts
    virtual const std::string& node() const = 0;
    virtual const config::JobSpec& spec() const = 0;
    // Where the job's actors run: {"actors": {actor id: {"node","host"}}, "hosts": [...]}.
    virtual const Json& placement() const = 0;
    virtual const std::string& run_dir() const = 0;
    // The host this actor binds its channels on (its node's address on the data network).
    virtual std::string bind_host() const = 0;
    virtual const Clock& clock() const = 0;

    // ---- Versions, trainer side ----
    // Asks the table for the number of the version holding the weights after `step` steps (data
    // cursor `data_cursor`), at least `at_least` (a resumed checkpoint's version, so numbering
    // continues from it). Asking again for the same step returns the same number; numbers rise
    // across trainer restarts and coordinator restarts. Waits out a coordinator restart until
    // `deadline`. unavailable when this trainer's fence has been superseded (fenced off).
    virtual Result<VersionInfo> assign_version(int64_t step, uint64_t data_cursor,
                                               Clock::TimePoint deadline, Version at_least = 0) = 0;
    // One shard of an assigned version is committed and readable. Returns at once; the runtime
    // repeats the announcement until the coordinator's view shows the version (lost messages,
    // coordinator restarts).
    virtual Status announce_version(const VersionInfo& info,
                                    const weights::VersionDescriptor& shard) = 0;
    // The slot holding `shard` of `version` was reclaimed: it can no longer be read there.
    virtual void retire_version(Version version, uint32_t shard) = 0;

    // ---- Versions, reader side ----
    // Newest available version whose info satisfies `accept` (for instance: of the fence being
    // followed and at least some step), waiting for one until `deadline`.
    virtual Result<PublishedVersion> wait_version(
        const std::function<bool(const VersionInfo&)>& accept, Clock::TimePoint deadline) = 0;

    // ---- Channels and peers ----
    // Announces an address this actor serves under `name` ("trajectories"); peers see it in
    // their views (Peer::endpoints). Repeated by the runtime until the view shows it.
    virtual Status announce_endpoint(std::string_view name, std::string_view address) = 0;
    // Waits until `peer` is alive and its current attempt has announced `name`; returns the
    // address (a restarted peer announces a new one).
    virtual Result<std::string> wait_endpoint(const ActorId& peer, std::string_view name,
                                              Clock::TimePoint deadline) = 0;

    // ---- Relay trees ----
    // A relaying reader (it serves what it fetches as `mine`) asks where to read `version`:
    // another reader's source, or nullopt for the publishers. Waits for the table's answer.
    virtual Result<RelayChoice> relay_source(Version version, const weights::RelaySource& mine,
                                             Clock::TimePoint deadline) = 0;

    // ---- The job view and waiting for it to change ----
    virtual JobView view() const = 0;
    // Blocks until the view's generation exceeds `seen`, the runtime is cancelled, or `deadline`;
    // returns the view then (check its generation to tell which).
    virtual JobView wait_change(uint64_t seen, Clock::TimePoint deadline) = 0;
    bool cancelled() const { return view().cancelled; }

    // ---- Telemetry (never block; delivered in order) ----
    // Phase-independent progress: {"step": N, "fraction": f, ...} (shown by `tandem status`).
    virtual void progress(const Json& progress) = 0;
    // Per-step metrics: flat name -> number (slash namespaces: "rollout/reward_mean"). Held and
    // repeated until the coordinator has recorded the step, so a coordinator restart loses none.
    virtual void metrics(int64_t step, const Json& values) = 0;
    // A job event (shown by `tandem job events`): kind in snake_case, message for people.
    virtual void event(std::string_view kind, std::string_view message) = 0;
    // A log line of the job (carries job and actor fields).
    virtual void log(LogLevel level, std::string_view message) = 0;
    // The reason this actor is about to fail; reported with its exit code.
    virtual void fail(std::string_view reason) = 0;
};

// weights::Announcer over a runtime: the Publisher announces and retires through it. Call
// expect() with a version's info before publishing it. Thread-safe.
class RuntimeAnnouncer final : public weights::Announcer {
public:
    explicit RuntimeAnnouncer(JobRuntime& runtime) : runtime_(runtime) {}
    void expect(const VersionInfo& info);
    Status announce(const weights::VersionDescriptor& shard_version) override;
    void retire(JobId job, Version version, uint32_t shard) override;

private:
    JobRuntime& runtime_;
    std::mutex mu_;
    std::map<Version, VersionInfo> expected_;  // assigned, not yet announced
};

}  // namespace tandem::runtime
