#pragma once

// Scheduler: gang placement of a job's actors onto nodes (all or none), with the `pack` and
// `spread` strategies and the `colocate` option. With either strategy a job's replicas of one
// role go to distinct nodes while a node with room holds none of them (anti-affinity, like Ray's
// SPREAD): the strategy decides among the remaining candidates. Pure: takes the nodes' free
// capacity, returns a placement or a human-readable reason why there is none. The pending queue's
// order (priority, then submission) is the JobManager's.

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/config/job_spec.h"
#include "common/ids.h"
#include "common/status.h"

namespace tandem::coord {

struct NodeCapacity {
    std::string id;
    ActorRole role = ActorRole::kRollout;
    bool alive = true;
    double free_cpus = 0;
    int64_t free_memory_mb = 0;
    double free_gpus = 0;  // GPUs not taken (an actor sharing its GPU takes a fraction)
    int actors = 0;        // actors of any job already on the node
};

struct ActorDemand {
    ActorId actor;
    config::ActorResources resources;
};

struct PlacementRequest {
    std::vector<ActorDemand> actors;
    config::PlacementSpec placement;
    std::set<std::string> avoid;               // nodes not to use (where an actor just failed)
    std::map<std::string, std::string> fixed;  // actor -> node already placed (colocate anchors)
};

// actor id string -> node id
using Placement = std::map<std::string, std::string>;

// GPU slots (0..node_gpus-1; the agent maps slot k to its k-th device) for an actor that needs
// `want`: the lowest slots not in `used`, so two actors never share a GPU. The placement above
// only counts GPUs; this picks which. Error (unavailable) names the node when too few are free.
Result<std::vector<int>> assign_gpus(const std::string& node, int64_t node_gpus,
                                     const std::set<int>& used, int64_t want);
// The same with sharing: `load` is the part of each slot in use (an actor holding a slot with
// actors_per_gpu k uses 1/k of it). An actor with actors_per_gpu 1 takes only unused slots; one
// with k > 1 takes slots with 1/k left, those already partly used first, so k such actors fill
// one GPU before the next is used.
Result<std::vector<int>> assign_gpus(const std::string& node, int64_t node_gpus,
                                     const std::map<int, double>& load, int64_t want,
                                     int actors_per_gpu);

// Places every actor or none. The error (unavailable) reads like "needs 2 rollout actors with
// 1 gpu, 1 cpu, 512 MiB each; rollout nodes can take 1 (rollout-0: 0 free gpus; rollout-1 dead)".
Result<Placement> place(const PlacementRequest& request, std::vector<NodeCapacity> nodes);

}  // namespace tandem::coord
