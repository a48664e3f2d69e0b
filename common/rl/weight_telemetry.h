#pragma once

// WeightTelemetry: an actor's weight-plane counters since it started, reported in its progress
// (JobRuntime::progress) under "weights". The coordinator renders them as the tandem_weights_*
// Prometheus families (coordinator/cluster_metrics.h) and the dashboard shows the fetch rows in
// its version timeline. The JSON it writes (every field optional to readers):
//   published_versions, published_bytes, publish_seconds     trainer: versions written, their sum
//   leases_held, lease_waits                                  trainer: live leases now; publishes
//                                                             that waited for a lease to end
//   served_bytes: {"publisher"|"relay": bytes}               bytes other readers read from here
//   fetched_bytes: {transport: bytes}                         reader: bytes fetched, by read path
//   fetch_seconds: {"bounds": [s...], "by_transport": {transport: {"counts": [n per bucket, the
//                  last one above the last bound], "sum": s}}}
//   last_fetch_bytes_per_second, checksum_failures (chunks read again after a bad checksum)
//   staleness: {"<versions behind>": trajectories}            trainer: what it trained on
//   fetches: [{version, start_ns, seconds, bytes, transport, source, rereads}]  the newest
//            kFetchRows fetches, oldest first; source is "publisher" or the relaying reader.
// Threading: not thread-safe; one owner (the actor's loop) calls it.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem::rl {

class WeightTelemetry {
public:
    static constexpr size_t kFetchRows = 16;
    // Upper bounds (seconds) of the fetch-duration buckets.
    static const std::vector<double>& fetch_bounds();

    struct Fetch {
        int64_t version = 0;
        int64_t start_ns = 0;  // wall clock
        double seconds = 0;
        uint64_t bytes = 0;
        std::string transport;  // the read path: "get", "am"
        std::string source;     // "publisher" or the relaying reader's id
        uint64_t rereads = 0;
    };
    void on_fetch(const Fetch& f);
    void set_relay_served_bytes(uint64_t bytes) { relay_served_bytes_ = bytes; }

    struct Publisher {
        uint64_t versions = 0, bytes = 0, lease_waits = 0, live_leases = 0, served_bytes = 0;
        double seconds = 0;
    };
    void set_publisher(const Publisher& p) { publisher_ = p; }
    // Trajectories trained on, by how many versions behind the trainer they were (one step's
    // counts; added to the totals).
    void add_staleness(const nlohmann::json& hist);

    nlohmann::json to_json() const;

private:
    struct Histogram {
        std::vector<uint64_t> counts;  // fetch_bounds().size() + 1
        double sum = 0;
    };
    std::map<std::string, uint64_t> fetched_bytes_;
    std::map<std::string, Histogram> fetch_seconds_;
    std::deque<Fetch> fetches_;
    uint64_t checksum_failures_ = 0;
    uint64_t relay_served_bytes_ = 0;
    double last_bytes_per_second_ = 0;
    bool reader_ = false;
    std::optional<Publisher> publisher_;
    std::map<int64_t, uint64_t> staleness_;
};

}  // namespace tandem::rl
