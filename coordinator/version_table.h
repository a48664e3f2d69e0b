#pragma once

// VersionTable: per job, the weight versions its trainers published, with the weight plane's
// descriptors (publisher address, remote address and packed rkey per shard and slot, bytes,
// manifest checksum, layout fingerprint), who published each shard, and the relay tree readers
// form per version. The bytes never pass through here. A version is available until a publisher
// retires it (its slot was reclaimed) or a publisher is gone (actor exited, node lost): then it is
// retired or unavailable, with the reason, and readers asking for it get that reason.
// Owned by the coordinator loop; not thread-safe.

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/wire/runtime_messages.h"
#include "coordinator/records.h"
#include "coordinator/state_store.h"

namespace tandem::coord {

class VersionTable {
public:
    VersionTable(const Clock& clock, StateStore& store);

    void restore(JobId job, std::vector<VersionRecord> versions);

    // Version numbers and fencing. The table assigns every version number of a job: a trainer of
    // fence `fence` asks for the version after `step` steps. Numbers rise per job across
    // trainers and coordinator restarts: above every number assigned or recorded and above
    // `after` (the highest this trainer holds, which covers numbers assigned by a coordinator
    // that died before recording them). Asking again with the same fence and step returns the
    // same number. A fence above the job's current one becomes current; one below it is refused
    // (unavailable, naming both fences).
    Result<Version> assign(JobId job, const wire::Fence& fence, int64_t step, int64_t after);
    // Raises the job's fence (the coordinator started a new trainer attempt); never lowers it.
    void advance_fence(JobId job, const wire::Fence& fence);
    // The job's current fence (invalid before any trainer asked).
    wire::Fence fence(JobId job) const;

    // Records a version; a version may be announced once per shard: shards are merged.
    // `publisher` names the actor and attempt that announced it (attempt -1 if unknown). A
    // descriptor with an "info" object (runtime::VersionInfo: number, fence, step, data cursor)
    // from a fence below the job's current one is refused (unavailable): its trainer was replaced.
    Status publish(JobId job, Version version, const Json& descriptor, const std::string& node,
                   const VersionPublisher& publisher = {});
    // A publisher released the slot that held `shard` of `version` (reclaimed it for a newer
    // version, or shut down cleanly): the version is retired.
    Status retire(JobId job, Version version, uint32_t shard, const std::string& publisher);
    // Every available version with a shard published on `node` becomes unavailable.
    void on_node_dead(const std::string& node, const std::string& reason = "");
    // The versions `actor` published in `attempt` become unavailable (it exited).
    void on_publisher_gone(JobId job, const std::string& actor, int64_t attempt,
                           const std::string& reason);
    // Why a publisher can no longer serve its versions, or nullopt while it can.
    using PublisherGone =
        std::function<std::optional<std::string>(JobId job, const VersionPublisher& publisher)>;
    // Asks `gone` about every publisher that still has available versions and marks the versions
    // of those that are gone unavailable. Cheap: one call per distinct publisher.
    void check_publishers(const PublisherGone& gone);

    // The version if readers can use it; not_found if it was never published, unavailable naming
    // the reason if it is retired or its publisher is gone.
    Result<VersionRecord> get(JobId job, Version version) const;
    // A reader (which serves what it fetches when `relay_source` is not null) asks where to read
    // `version` from. The first `fan_out` readers read the publishers; each later one reads the
    // earliest-joined relaying reader with fewer than `fan_out` children (a breadth-first tree).
    // Joining again returns the same link.
    Result<RelayLink> join_relay(JobId job, Version version, const std::string& reader,
                                 const Json& relay_source, uint32_t fan_out);
    // The reader's link, with the parent's relay source (null for the publishers).
    struct Assignment {
        RelayLink link;
        Json source = nullptr;
    };
    Result<Assignment> relay_assignment(JobId job, Version version,
                                        const std::string& reader) const;

    std::vector<VersionRecord> list(JobId job) const;
    std::optional<VersionRecord> latest(JobId job) const;  // newest available
    size_t count(JobId job) const;

private:
    using PublisherKey = std::tuple<JobId, std::string, int64_t>;  // job, actor, attempt
    VersionRecord* find(JobId job, Version version);
    void save(JobId job, const VersionRecord& rec);
    // Marks an available version retired or unavailable and forgets it in by_publisher_.
    void mark(JobId job, VersionRecord& rec, VersionState state, const std::string& reason);

    const Clock& clock_;
    StateStore& store_;
    Logger log_;
    struct Numbering {
        wire::Fence fence;                                            // current
        Version next = 0;                                             // lowest number not yet used
        std::map<std::pair<wire::Fence, int64_t>, Version> assigned;  // (fence, step) -> number
    };
    Numbering& numbering(JobId job);

    std::map<JobId, std::map<Version, VersionRecord>> versions_;
    std::map<JobId, Numbering> numbering_;
    std::map<PublisherKey, std::set<Version>> by_publisher_;  // available versions only
};

// JSON for the API and the CLI: version, published_ns, state, available, reason, publishers,
// relays and the descriptor.
Json version_json(const VersionRecord& v);

}  // namespace tandem::coord
