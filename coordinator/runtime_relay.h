#pragma once

// RuntimeRelay: the coordinator's side of the actor runtime's pushes. For every job it builds the
// view its actors see (wire::JobView: the job's fence, its newest available version with what the
// trainer said about it, every actor with its phase and endpoints, whether the job is over, the
// last recorded metrics step) and sends it to each node that runs an actor of the job whenever it
// differs from what that node was last sent. Level-triggered: push(job) after a message that may
// change a job, push_all() on the sweep (catches what the JobManager changed on its own), and
// forget(node) when a node (re)registers so it gets every view again.
// Owned by the coordinator loop; not thread-safe.

#include <map>
#include <set>
#include <string>

#include "common/ids.h"
#include "common/wire/runtime_messages.h"
#include "coordinator/job_manager.h"
#include "coordinator/version_table.h"

namespace tandem::coord {

class RuntimeRelay {
public:
    RuntimeRelay(const JobManager& jobs, const VersionTable& versions, AgentLink& link)
        : jobs_(jobs), versions_(versions), link_(link) {}
    RuntimeRelay(const RuntimeRelay&) = delete;
    RuntimeRelay& operator=(const RuntimeRelay&) = delete;

    void push(JobId job);
    void push_all();
    void forget(const std::string& node);

    // The view of `job` as its actors get it (tests).
    wire::JobView view(const JobRecord& job) const;

private:
    const JobManager& jobs_;
    const VersionTable& versions_;
    AgentLink& link_;
    std::map<std::pair<std::string, JobId>, std::string> sent_;  // (node, job) -> last body
    std::set<JobId> final_pushed_;  // final jobs whose last view went out: not built again
};

}  // namespace tandem::coord
