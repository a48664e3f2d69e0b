#pragma once

// Metrics: counters, histograms and computed gauges rendered in the Prometheus text format for
// GET /metrics. Names use the `tandem_` prefix and underscores. Owned by the coordinator loop; not
// thread-safe.

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace tandem::coord {

class Metrics {
public:
    using Labels = std::map<std::string, std::string>;

    void describe_counter(const std::string& name, const std::string& help);
    void describe_histogram(const std::string& name, const std::string& help,
                            std::vector<double> bounds);
    void inc(const std::string& name, const Labels& labels = {}, double by = 1.0);
    // The cell of one labelled counter, for hot paths that bump it without building labels; stays
    // valid for the Metrics' lifetime.
    double* counter_cell(const std::string& name, const Labels& labels = {});
    void observe(const std::string& name, double value);
    // A gauge family computed when rendered: the function returns label sets and values.
    void gauge(const std::string& name, const std::string& help,
               std::function<std::vector<std::pair<Labels, double>>()> fn);
    // Families whose names are only known when rendered (one per job metric): the function
    // returns them, each family's samples together. A family named like a described one is
    // skipped (the described one wins).
    struct Family {
        std::string name;
        std::string help;
        std::string type = "gauge";
        std::vector<std::pair<Labels, double>> samples;
        // Samples named `name` + suffix (a histogram's _bucket, _sum and _count), after `samples`.
        struct Suffixed {
            std::string suffix;
            Labels labels;
            double value = 0;
        };
        std::vector<Suffixed> suffixed;
    };
    void collector(std::function<std::vector<Family>()> fn);

    std::string render() const;
    double counter_value(const std::string& name, const Labels& labels = {}) const;
    uint64_t histogram_count(const std::string& name) const;

private:
    struct Counter {
        std::string help;
        std::map<std::string, double> values;  // rendered label set -> value
    };
    struct Histogram {
        std::string help;
        std::vector<double> bounds;
        std::vector<uint64_t> counts;  // per bound, not cumulative
        uint64_t count = 0;
        double sum = 0;
    };
    struct Gauge {
        std::string help;
        std::function<std::vector<std::pair<Labels, double>>()> fn;
    };
    std::map<std::string, Counter> counters_;
    std::map<std::string, Histogram> histograms_;
    std::map<std::string, Gauge> gauges_;
    std::vector<std::function<std::vector<Family>()>> collectors_;
};

std::string render_labels(const Metrics::Labels& labels);
// A sample value as the text format writes it: NaN, +Inf, -Inf or the shortest exact decimal.
std::string render_value(double v);
// `text` as a metric name part: every character outside [a-zA-Z0-9_] becomes `_` ("timing_s/step"
// -> "timing_s_step"; a leading digit gets a `_` in front when `leading` is set).
std::string metric_name_part(const std::string& text, bool leading = false);

}  // namespace tandem::coord
