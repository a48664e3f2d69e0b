#include "coordinator/cluster_metrics.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace tandem::coord {

namespace {

using Family = Metrics::Family;
using Families = std::map<std::string, Family>;

// Families this file names itself; a per-step metric that maps onto one is left out.
constexpr const char* kReserved[] = {"tandem_job_info", "tandem_job_last_step",
                                     "tandem_job_versions", "tandem_job_version_latest",
                                     "tandem_job_relay_readers"};

Family& family(Families& out, const std::string& name, const std::string& help) {
    Family& f = out[name];
    if (f.name.empty()) {
        f.name = name;
        f.help = help;
    }
    return f;
}

Metrics::Labels job_labels(const JobRecord& j) {
    return {{"job", j.id.str()}, {"name", j.spec.name}};
}

void append_job_families(const JobRecord& j, const VersionTable& versions, Families& out) {
    Metrics::Labels info = job_labels(j);
    info["kind"] = std::string(config::enum_name(j.spec.kind));
    info["state"] = std::string(job_state_name(j.state));
    family(out, "tandem_job_info", "One sample per job: its kind and state")
        .samples.push_back({info, 1});
    family(out, "tandem_job_last_step", "The latest step a job reported metrics for")
        .samples.push_back({job_labels(j), static_cast<double>(j.step)});
    std::map<std::string, double> by_state;
    for (auto s : {VersionState::kAvailable, VersionState::kRetired, VersionState::kUnavailable})
        by_state[std::string(version_state_name(s))] = 0;
    const auto list = versions.list(j.id);
    for (const auto& v : list) by_state[std::string(version_state_name(v.state))] += 1;
    Family& vf = family(out, "tandem_job_versions",
                        "Weight versions a job published, by state in the version table");
    for (const auto& [state, n] : by_state) {
        Metrics::Labels l = job_labels(j);
        l["state"] = state;
        vf.samples.push_back({l, n});
    }
    if (const auto latest = versions.latest(j.id)) {
        family(out, "tandem_job_version_latest", "The newest available weight version of a job")
            .samples.push_back({job_labels(j), static_cast<double>(latest->version)});
    }
    if (!list.empty()) {
        family(out, "tandem_job_relay_readers",
               "Readers in the relay tree of a job's newest published version")
            .samples.push_back({job_labels(j), static_cast<double>(list.back().relays.size())});
    }
    append_job_step_families(j, out);
}

}  // namespace

std::string job_metric_family(const std::string& key) {
    // Units spelled out as Prometheus' naming rules (and `promtool check metrics`) want them.
    static const std::map<std::string, std::pair<const char*, const char*>> kUnits = {
        // abbreviation -> (plural, after "per")
        {"s", {"seconds", "second"}},
        {"sec", {"seconds", "second"}},
        {"ms", {"milliseconds", "millisecond"}},
        {"us", {"microseconds", "microsecond"}},
        {"ns", {"nanoseconds", "nanosecond"}},
        {"b", {"bytes", "byte"}},
        {"kb", {"kilobytes", "kilobyte"}},
        {"mb", {"megabytes", "megabyte"}},
        {"gb", {"gigabytes", "gigabyte"}},
        {"tb", {"terabytes", "terabyte"}},
        {"pb", {"petabytes", "petabyte"}},
        {"m", {"minutes", "minute"}},
        {"h", {"hours", "hour"}},
        {"d", {"days", "day"}}};
    std::string part = metric_name_part(key);
    for (char& c : part) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string out = "tandem_job";
    std::string previous;
    size_t start = 0;
    while (start <= part.size()) {
        const size_t end = std::min(part.find('_', start), part.size());
        std::string token = part.substr(start, end - start);
        if (auto it = kUnits.find(token); it != kUnits.end())
            token = previous == "per" ? it->second.second : it->second.first;
        out += "_" + token;
        previous = token;
        start = end + 1;
    }
    return out;
}

void append_job_step_families(const JobRecord& job, Families& out) {
    if (!job.last_metrics.is_object()) return;
    for (auto it = job.last_metrics.begin(); it != job.last_metrics.end(); ++it) {
        const Json& v = it.value();
        if (!v.is_number() && !v.is_boolean()) continue;  // histograms and text stay out
        const std::string name = job_metric_family(it.key());
        if (std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved))
            continue;
        family(out, name, fmt::format("Latest value of the per-step job metric {}", it.key()))
            .samples.push_back(
                {job_labels(job), v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>()});
    }
}

void register_cluster_metrics(Metrics& metrics, const Clock& clock, const JobManager& jobs,
                              const NodeRegistry& nodes, const VersionTable& versions) {
    metrics.collector([&jobs, &versions] {
        Families out;
        for (const auto& [id, j] : jobs.jobs()) append_job_families(j, versions, out);
        // Actors of jobs that have not ended: their phase on their node.
        for (const auto& [id, j] : jobs.jobs()) {
            if (is_final(j.state)) continue;
            for (const auto& a : j.actors) {
                family(out, "tandem_actor_info", "One sample per actor of an unfinished job")
                    .samples.push_back({{{"job", j.id.str()},
                                         {"actor", a.name()},
                                         {"node", a.node},
                                         {"phase", std::string(wire::actor_phase_name(a.phase))}},
                                        1});
                family(out, "tandem_actor_attempt", "The attempt an actor runs (0: the first)")
                    .samples.push_back({{{"job", j.id.str()}, {"actor", a.name()}},
                                        static_cast<double>(a.attempt)});
            }
        }
        std::vector<Family> list;
        for (auto& [name, f] : out) list.push_back(std::move(f));
        return list;
    });
    metrics.collector([&clock, &nodes] {
        Family up{
            "tandem_node_up", "1 while a node agent is alive, 0 once it is dead", "gauge", {}};
        Family age{"tandem_node_heartbeat_age_seconds",
                   "Seconds since the coordinator last heard from a node agent",
                   "gauge",
                   {}};
        const int64_t now = clock.wall_ns();
        for (const auto& [id, e] : nodes.entries()) {
            const Metrics::Labels l = {{"node", id}, {"role", e.record.role}};
            up.samples.push_back({l, e.record.state == NodeState::kAlive ? 1.0 : 0.0});
            if (e.record.last_seen_ns > 0) {
                age.samples.push_back({l, static_cast<double>(now - e.record.last_seen_ns) / 1e9});
            }
        }
        return std::vector<Family>{std::move(up), std::move(age)};
    });
}

}  // namespace tandem::coord
