#pragma once

// `tandem up --slurm` inside a Slurm allocation: the cluster is the allocation's nodes
// (SLURM_JOB_NODELIST, expanded by `scontrol show hostnames`). The coordinator runs where `up`
// runs (the batch script's node, the allocation's first); the file's `slurm:` section maps the
// nodes to roles, and each node's agent is started with `srun` on its node (launcher: slurm).
// A node whose srun exits before it registers fails the launch with its name. In a heterogeneous
// job (slurm.hetjob) trainer nodes come from het group 0 and rollout nodes from group 1
// (SLURM_JOB_NODELIST_HET_GROUP_<k>), and each agent's srun names its group.

#include <string>
#include <vector>

#include "common/config/cluster_spec.h"
#include "common/status.h"

namespace tandem::cli {

// The allocation's host names, in order (`scontrol show hostnames NODELIST`).
Result<std::vector<std::string>> slurm_hosts(const std::string& nodelist);

// The cluster of an allocation: `file`'s coordinator on `coordinator_address` (the first host's
// address), trainer and rollout nodes per `file.slurm` on `hosts` (the first host included), each
// copied from the file's first node of its role, with launcher slurm. Pure.
Result<config::ClusterSpec> slurm_cluster(const config::ClusterSpec& file,
                                          const std::vector<std::string>& hosts,
                                          const std::string& coordinator_address);
// The same for a heterogeneous job: trainer nodes on the first file.slurm.trainer_nodes hosts of
// het group 0 (0: all), rollout nodes on the first rollout_nodes hosts of group 1 (0: all). Pure.
Result<config::ClusterSpec> slurm_het_cluster(const config::ClusterSpec& file,
                                              const std::vector<std::string>& trainer_hosts,
                                              const std::vector<std::string>& rollout_hosts,
                                              const std::string& coordinator_address);

// The het group of `role` in a heterogeneous job (trainer 0, rollout 1); -1 when `slurm` is not
// one.
int slurm_het_group(const config::SlurmSpec& slurm, ActorRole role);

// The `srun` argv prefix that runs one task on `host` of the current allocation (in het group
// `het_group` when it is not -1).
std::vector<std::string> srun_command(const config::NodeSpec& node, int het_group = -1);

// Reads the allocation from the environment, writes the resolved cluster file into `run_root`
// (cluster-slurm.yaml) and returns its path.
Result<std::string> write_slurm_cluster(const config::ClusterSpec& file,
                                        const std::string& run_root);

}  // namespace tandem::cli
