#pragma once

// VersionTable: per job, the weight versions its trainers published, with the weight plane's
// descriptors (publisher address, remote address and packed rkey per shard and slot, bytes,
// manifest checksum, layout fingerprint). The bytes never pass through here. A version becomes
// unavailable when the node that published it dies. Owned by the coordinator loop; not
// thread-safe.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/records.h"
#include "coordinator/state_store.h"

namespace tandem::coord {

class VersionTable {
public:
    VersionTable(const Clock& clock, StateStore& store);

    void restore(JobId job, std::vector<VersionRecord> versions);
    // Records a version; a version may be announced once per shard: shards are merged.
    Status publish(JobId job, Version version, const Json& descriptor, const std::string& node);
    void on_node_dead(const std::string& node);

    std::vector<VersionRecord> list(JobId job) const;
    std::optional<VersionRecord> latest(JobId job) const;  // newest available
    size_t count(JobId job) const;

private:
    const Clock& clock_;
    StateStore& store_;
    Logger log_;
    std::map<JobId, std::map<Version, VersionRecord>> versions_;
};

}  // namespace tandem::coord
