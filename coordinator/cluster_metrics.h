#pragma once

// Prometheus families computed from the managers' state when /metrics is rendered (names in
// docs/monitoring.md):
//   tandem_job_<metric>{job,name}      latest value of every numeric per-step metric of each job:
//                                      job_metric_family("timing_s/step") is
//                                      tandem_job_timing_seconds_step
//   tandem_job_info{job,name,kind,state} 1 per job; tandem_job_last_step{job,name}
//   tandem_job_versions{job,name,state}  weight versions in the version table by state
//   tandem_job_version_latest{job,name}  newest available version
//   tandem_job_relay_readers{job,name}   readers in the newest version's relay tree
//   tandem_actor_info{job,actor,node,phase} 1 per actor; tandem_actor_attempt{job,actor}
//   tandem_node_up{node,role}, tandem_node_heartbeat_age_seconds{node,role}
// and the weight plane, from what each actor reports in its progress under "weights"
// (rl::WeightTelemetry, common/rl/weight_telemetry.h), labelled {job,actor}:
//   tandem_weights_versions_published_total, tandem_weights_published_bytes_total,
//   tandem_weights_publish_seconds_total, tandem_weights_leases_held,
//   tandem_weights_lease_waits_total                          trainer (publisher) side
//   tandem_weights_served_bytes_total{source=publisher|relay} bytes read from this actor
//   tandem_weights_fetched_bytes_total{transport}, tandem_weights_fetch_seconds{transport}
//   (histogram), tandem_weights_fetch_bytes_per_second (the last fetch),
//   tandem_weights_checksum_failures_total                    rollout (reader) side
//   tandem_weights_trajectory_staleness_versions (histogram)  trajectories trained on, by how
//                                                             many versions behind they were
// Registered once; the managers must outlive `metrics`. Runs on the coordinator loop.

#include "common/clock.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/version_table.h"

namespace tandem::coord {

void register_cluster_metrics(Metrics& metrics, const Clock& clock, const JobManager& jobs,
                              const NodeRegistry& nodes, const VersionTable& versions);

// The family of the per-step metric `key`: "tandem_job_" + `key` lowercased, every character
// outside [a-z0-9_] mapped to `_`, and abbreviated units between underscores spelled out as
// Prometheus wants them (s -> seconds, or second after "per"; ms, us, ns, b, kb..pb, m, h, d):
// "throughput/rollout_tokens_per_s" -> tandem_job_throughput_rollout_tokens_per_second; a
// trailing "_total" is dropped (the families are gauges).
std::string job_metric_family(const std::string& key);

// The per-step families alone, for one job's latest metrics (tested on its own).
void append_job_step_families(const JobRecord& job, std::map<std::string, Metrics::Family>& out);
// The tandem_weights_* families of one job's actors (tested on its own). Malformed or missing
// fields are left out.
void append_weight_families(const JobRecord& job, std::map<std::string, Metrics::Family>& out);

}  // namespace tandem::coord
