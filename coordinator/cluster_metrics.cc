#include "coordinator/cluster_metrics.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <tuple>

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
    append_weight_families(j, out);
}

// A non-negative number at `key` of `obj`, if there is one.
std::optional<double> number_at(const Json& obj, const char* key) {
    if (!obj.is_object()) return std::nullopt;
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_number() || it->get<double>() < 0) return std::nullopt;
    return it->get<double>();
}

// One histogram's series from per-bucket (not cumulative) counts; counts has one more entry than
// bounds (above the last bound).
void append_histogram(Family& f, const Metrics::Labels& labels, const std::vector<double>& bounds,
                      const std::vector<double>& counts, double sum) {
    double cum = 0;
    for (size_t i = 0; i < bounds.size(); ++i) {
        cum += counts[i];
        Metrics::Labels l = labels;
        l["le"] = render_value(bounds[i]);
        f.suffixed.push_back({"_bucket", l, cum});
    }
    cum += counts.back();
    Metrics::Labels l = labels;
    l["le"] = "+Inf";
    f.suffixed.push_back({"_bucket", l, cum});
    f.suffixed.push_back({"_sum", labels, sum});
    f.suffixed.push_back({"_count", labels, cum});
}

}  // namespace

void append_weight_families(const JobRecord& job, Families& out) {
    struct Scalar {
        const char* key;
        const char* family;
        const char* type;
        const char* help;
    };
    static constexpr Scalar kScalars[] = {
        {"published_versions", "tandem_weights_versions_published_total", "counter",
         "Weight versions an actor published"},
        {"published_bytes", "tandem_weights_published_bytes_total", "counter",
         "Bytes of the weight versions an actor published"},
        {"publish_seconds", "tandem_weights_publish_seconds_total", "counter",
         "Seconds an actor spent publishing weight versions (copy, checksums, announce)"},
        {"leases_held", "tandem_weights_leases_held", "gauge",
         "Readers' leases on an actor's published versions, now"},
        {"lease_waits", "tandem_weights_lease_waits_total", "counter",
         "Publishes that waited for a reader's lease to end before reusing a slot"},
        {"last_fetch_bytes_per_second", "tandem_weights_fetch_bytes_per_second", "gauge",
         "Bytes per second of an actor's last weight fetch"},
        {"checksum_failures", "tandem_weights_checksum_failures_total", "counter",
         "Weight chunks read again after a bad checksum"},
    };
    for (const ActorRecord& a : job.actors) {
        const Json& w = a.progress.is_object() && a.progress.contains("weights")
                            ? a.progress["weights"]
                            : Json();
        if (!w.is_object()) continue;
        const Metrics::Labels labels = {{"job", job.id.str()}, {"actor", a.name()}};
        for (const Scalar& s : kScalars) {
            if (auto v = number_at(w, s.key)) {
                Family& f = family(out, s.family, s.help);
                f.type = s.type;
                f.samples.push_back({labels, *v});
            }
        }
        // {label value: bytes} maps.
        for (const auto& [key, fam, label, help] :
             {std::tuple{"served_bytes", "tandem_weights_served_bytes_total", "source",
                         "Bytes other readers read from an actor (publisher or relay)"},
              std::tuple{"fetched_bytes", "tandem_weights_fetched_bytes_total", "transport",
                         "Bytes of weight versions an actor fetched, by read path"}}) {
            const auto it = w.find(key);
            if (it == w.end() || !it->is_object()) continue;
            for (auto e = it->begin(); e != it->end(); ++e) {
                if (!e.value().is_number()) continue;
                Family& f = family(out, fam, help);
                f.type = "counter";
                Metrics::Labels l = labels;
                l[label] = e.key();
                f.samples.push_back({l, e.value().get<double>()});
            }
        }
        // Fetch durations: {bounds, by_transport: {t: {counts, sum}}}.
        if (auto fs = w.find("fetch_seconds"); fs != w.end() && fs->is_object()) {
            const Json& b = fs->value("bounds", Json());
            const Json& by = fs->value("by_transport", Json());
            std::vector<double> bounds;
            bool ok = b.is_array() && by.is_object();
            if (ok) {
                for (const Json& x : b) {
                    ok = ok && x.is_number() && (bounds.empty() || x.get<double>() > bounds.back());
                    if (ok) bounds.push_back(x.get<double>());
                }
            }
            for (auto t = by.begin(); ok && t != by.end(); ++t) {
                const Json& counts = t.value().value("counts", Json());
                const auto sum = number_at(t.value(), "sum");
                if (!counts.is_array() || counts.size() != bounds.size() + 1 || !sum) continue;
                std::vector<double> c;
                for (const Json& x : counts) c.push_back(x.is_number() ? x.get<double>() : 0.0);
                Family& f =
                    family(out, "tandem_weights_fetch_seconds",
                           "Seconds per weight fetch (lease to verified copy), by read path");
                f.type = "histogram";
                Metrics::Labels l = labels;
                l["transport"] = t.key();
                append_histogram(f, l, bounds, c, *sum);
            }
        }
        // Staleness: {"<versions behind>": trajectories}; one bucket per distance up to the
        // largest seen.
        if (auto st = w.find("staleness"); st != w.end() && st->is_object() && !st->empty()) {
            std::map<int64_t, double> by;
            for (auto e = st->begin(); e != st->end(); ++e) {
                char* end = nullptr;
                const long long behind = std::strtoll(e.key().c_str(), &end, 10);
                if (end == e.key().c_str() || *end != '\0' || behind < 0 || behind > 1000000 ||
                    !e.value().is_number())
                    continue;
                by[behind] += e.value().get<double>();
            }
            if (!by.empty()) {
                std::vector<double> bounds, counts;
                double sum = 0;
                for (int64_t k = 0; k <= by.rbegin()->first && k < 64; ++k) {
                    bounds.push_back(static_cast<double>(k));
                    counts.push_back(by.count(k) ? by[k] : 0.0);
                }
                double above = 0;
                for (const auto& [k, n] : by) {
                    sum += static_cast<double>(k) * n;
                    if (k >= 64) above += n;
                }
                counts.push_back(above);
                Family& f = family(out, "tandem_weights_trajectory_staleness_versions",
                                   "Trajectories a trainer trained on, by how many versions behind "
                                   "its own they were generated");
                f.type = "histogram";
                append_histogram(f, labels, bounds, counts, sum);
            }
        }
    }
}

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
    // A gauge may not end in _total (Prometheus keeps that for counters; promtool refuses it):
    // "trajectories/refused_total" -> tandem_job_trajectories_refused.
    if (out.size() > 6 && out.ends_with("_total") && out != "tandem_job_total")
        out.resize(out.size() - 6);
    return out;
}

void append_job_step_families(const JobRecord& job, Families& out) {
    if (!job.last_metrics.is_object()) return;
    for (auto it = job.last_metrics.begin(); it != job.last_metrics.end(); ++it) {
        const Json& v = it.value();
        if (!v.is_number() && !v.is_boolean()) continue;  // histograms and text stay out
        // One step's staleness counts (weights/staleness_hist/<behind>): the trainer's
        // tandem_weights_trajectory_staleness_versions histogram carries them.
        if (it.key().rfind("weights/staleness_hist/", 0) == 0) continue;
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
