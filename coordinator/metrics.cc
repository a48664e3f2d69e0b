#include "coordinator/metrics.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::coord {

std::string render_labels(const Metrics::Labels& labels) {
    if (labels.empty()) return "";
    std::string s = "{";
    bool first = true;
    for (const auto& [k, v] : labels) {
        std::string esc;
        for (char c : v) {
            if (c == '\\' || c == '"') esc += '\\';
            if (c == '\n') {
                esc += "\\n";
                continue;
            }
            esc += c;
        }
        s += fmt::format("{}{}=\"{}\"", first ? "" : ",", k, esc);
        first = false;
    }
    return s + "}";
}

void Metrics::describe_counter(const std::string& name, const std::string& help) {
    counters_[name].help = help;
}

void Metrics::describe_histogram(const std::string& name, const std::string& help,
                                 std::vector<double> bounds) {
    Histogram& h = histograms_[name];
    h.help = help;
    std::sort(bounds.begin(), bounds.end());
    h.bounds = std::move(bounds);
    h.counts.assign(h.bounds.size(), 0);
}

void Metrics::inc(const std::string& name, const Labels& labels, double by) {
    counters_[name].values[render_labels(labels)] += by;
}

double* Metrics::counter_cell(const std::string& name, const Labels& labels) {
    return &counters_[name].values[render_labels(labels)];  // std::map nodes never move
}

void Metrics::observe(const std::string& name, double value) {
    Histogram& h = histograms_[name];
    auto it = std::lower_bound(h.bounds.begin(), h.bounds.end(), value);
    if (it != h.bounds.end()) h.counts[static_cast<size_t>(it - h.bounds.begin())] += 1;
    h.count += 1;
    h.sum += value;
}

void Metrics::gauge(const std::string& name, const std::string& help,
                    std::function<std::vector<std::pair<Labels, double>>()> fn) {
    gauges_[name] = Gauge{help, std::move(fn)};
}

std::string Metrics::render() const {
    std::string out;
    for (const auto& [name, g] : gauges_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, g.help, name);
        for (const auto& [labels, v] : g.fn())
            out += fmt::format("{}{} {}\n", name, render_labels(labels), v);
    }
    for (const auto& [name, c] : counters_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", name, c.help, name);
        for (const auto& [labels, v] : c.values) out += fmt::format("{}{} {}\n", name, labels, v);
    }
    for (const auto& [name, h] : histograms_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, h.help, name);
        uint64_t cum = 0;
        for (size_t i = 0; i < h.bounds.size(); ++i) {
            cum += h.counts[i];
            out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
        }
        out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, h.count,
                           name, h.sum, name, h.count);
    }
    return out;
}

double Metrics::counter_value(const std::string& name, const Labels& labels) const {
    auto it = counters_.find(name);
    if (it == counters_.end()) return 0;
    auto v = it->second.values.find(render_labels(labels));
    return v == it->second.values.end() ? 0 : v->second;
}

uint64_t Metrics::histogram_count(const std::string& name) const {
    auto it = histograms_.find(name);
    return it == histograms_.end() ? 0 : it->second.count;
}

}  // namespace tandem::coord
