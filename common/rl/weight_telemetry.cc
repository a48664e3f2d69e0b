#include "common/rl/weight_telemetry.h"

#include <algorithm>
#include <string>

namespace tandem::rl {

using Json = nlohmann::json;

const std::vector<double>& WeightTelemetry::fetch_bounds() {
    static const std::vector<double> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25,  0.5,    1,     2.5,  5,     10,   30};
    return kBounds;
}

void WeightTelemetry::on_fetch(const Fetch& f) {
    reader_ = true;
    const std::string transport = f.transport.empty() ? "auto" : f.transport;
    fetched_bytes_[transport] += f.bytes;
    Histogram& h = fetch_seconds_[transport];
    const auto& bounds = fetch_bounds();
    if (h.counts.empty()) h.counts.assign(bounds.size() + 1, 0);
    h.counts[static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), f.seconds) -
                                 bounds.begin())] += 1;
    h.sum += f.seconds;
    checksum_failures_ += f.rereads;
    if (f.seconds > 0) last_bytes_per_second_ = static_cast<double>(f.bytes) / f.seconds;
    fetches_.push_back(f);
    fetches_.back().transport = transport;
    while (fetches_.size() > kFetchRows) fetches_.pop_front();
}

void WeightTelemetry::add_staleness(const Json& hist) {
    if (!hist.is_object()) return;
    for (auto it = hist.begin(); it != hist.end(); ++it) {
        if (!it.value().is_number()) continue;
        try {
            const int64_t behind = std::stoll(it.key());
            const double n = it.value().get<double>();
            if (behind >= 0 && n > 0) staleness_[behind] += static_cast<uint64_t>(n);
        } catch (const std::exception&) {  // not a number of versions: not ours to count
        }
    }
}

Json WeightTelemetry::to_json() const {
    Json out = Json::object();
    if (publisher_) {
        out["published_versions"] = publisher_->versions;
        out["published_bytes"] = publisher_->bytes;
        out["publish_seconds"] = publisher_->seconds;
        out["leases_held"] = publisher_->live_leases;
        out["lease_waits"] = publisher_->lease_waits;
        out["served_bytes"] = {{"publisher", publisher_->served_bytes}};
    }
    if (!staleness_.empty()) {
        Json s = Json::object();
        for (const auto& [behind, n] : staleness_) s[std::to_string(behind)] = n;
        out["staleness"] = s;
    }
    if (reader_) {
        out["served_bytes"] = {{"relay", relay_served_bytes_}};
        out["fetched_bytes"] = fetched_bytes_;
        Json by = Json::object();
        for (const auto& [t, h] : fetch_seconds_) by[t] = {{"counts", h.counts}, {"sum", h.sum}};
        out["fetch_seconds"] = {{"bounds", fetch_bounds()}, {"by_transport", by}};
        out["last_fetch_bytes_per_second"] = last_bytes_per_second_;
        out["checksum_failures"] = checksum_failures_;
        Json rows = Json::array();
        for (const Fetch& f : fetches_) {
            rows.push_back({{"version", f.version},
                            {"start_ns", f.start_ns},
                            {"seconds", f.seconds},
                            {"bytes", f.bytes},
                            {"transport", f.transport},
                            {"source", f.source},
                            {"rereads", f.rereads}});
        }
        out["fetches"] = rows;
    }
    return out;
}

}  // namespace tandem::rl
