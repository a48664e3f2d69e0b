#include "coordinator/metrics.h"

#include <algorithm>
#include <cmath>
#include <set>

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

std::string render_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", v);
}

std::string metric_name_part(const std::string& text, bool leading) {
    std::string out;
    out.reserve(text.size() + 1);
    if (leading && (text.empty() || (text[0] >= '0' && text[0] <= '9'))) out += '_';
    for (char c : text) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        out += ok ? c : '_';
    }
    return out;
}

namespace {
// HELP text: backslash and newline escaped.
std::string escape_help(const std::string& help) {
    std::string out;
    for (char c : help) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}
}  // namespace

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

void Metrics::collector(std::function<std::vector<Family>()> fn) {
    collectors_.push_back(std::move(fn));
}

std::string Metrics::render() const {
    std::string out;
    for (const auto& [name, g] : gauges_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, escape_help(g.help), name);
        for (const auto& [labels, v] : g.fn())
            out += fmt::format("{}{} {}\n", name, render_labels(labels), render_value(v));
    }
    for (const auto& [name, c] : counters_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", name, escape_help(c.help), name);
        for (const auto& [labels, v] : c.values)
            out += fmt::format("{}{} {}\n", name, labels, render_value(v));
    }
    for (const auto& [name, h] : histograms_) {
        out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, escape_help(h.help), name);
        uint64_t cum = 0;
        for (size_t i = 0; i < h.bounds.size(); ++i) {
            cum += h.counts[i];
            out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
        }
        out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, h.count,
                           name, render_value(h.sum), name, h.count);
    }
    // Described families keep their names; a collected family may not reuse one (nor a
    // histogram's _bucket/_sum/_count) or another collected family's.
    std::set<std::string> taken;
    for (const auto& [name, g] : gauges_) taken.insert(name);
    for (const auto& [name, c] : counters_) taken.insert(name);
    for (const auto& [name, h] : histograms_) {
        for (const char* suffix : {"", "_bucket", "_sum", "_count"}) taken.insert(name + suffix);
    }
    for (const auto& fn : collectors_) {
        for (const Family& f : fn()) {
            if (!taken.insert(f.name).second) continue;
            if (f.type == "histogram") {
                for (const char* suffix : {"_bucket", "_sum", "_count"})
                    taken.insert(f.name + suffix);
            }
            out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f.name, escape_help(f.help), f.name,
                               f.type);
            for (const auto& [labels, v] : f.samples)
                out += fmt::format("{}{} {}\n", f.name, render_labels(labels), render_value(v));
            for (const auto& s : f.suffixed) {
                out += fmt::format("{}{}{} {}\n", f.name, s.suffix, render_labels(s.labels),
                                   render_value(s.value));
            }
        }
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
