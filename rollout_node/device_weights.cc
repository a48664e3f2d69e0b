#include "rollout_node/device_weights.h"

#include <chrono>

#include <fmt/format.h>

namespace tandem::rollout {

using weights::DeviceWeightPath;

Status check_device_pieces(Version version, std::span<const DevicePiece> pieces,
                           uint64_t total_bytes) {
    uint64_t at = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
        const DevicePiece& p = pieces[i];
        if (p.offset != at || p.bytes % 4 != 0 || p.offset % 4 != 0 || p.data == nullptr) {
            return invalid_argument(fmt::format(
                "version {}: device piece {} holds bytes [{}, {}) at {}; expected fp32 values "
                "from byte {} on, in device memory",
                version, i, p.offset, p.offset + p.bytes, p.data == nullptr ? "null" : "device",
                at));
        }
        at += p.bytes;
    }
    if (at != total_bytes) {
        return invalid_argument(
            fmt::format("version {}: the device pieces cover {} of the "
                        "layout's {} bytes",
                        version, at, total_bytes));
    }
    return Status();
}

namespace {

class ReaderDeviceSource final : public DeviceWeightSource {
public:
    ReaderDeviceSource(weights::Reader& reader, weights::DeviceStaging& staging, bool relay)
        : reader_(reader), staging_(staging), relay_(relay) {}
    uint64_t total_bytes() const override { return reader_.layout().total_bytes(); }
    int device() const override { return staging_.device(); }
    weights::DevicePathChoice path(const weights::VersionDescriptor& v) const override {
        return reader_.device_path(v, &staging_);
    }
    Result<std::shared_ptr<const weights::DeviceMappedWeights>> map(
        const weights::VersionDescriptor& v) override {
        return reader_.map_device(v, staging_);
    }
    Status fetch(const weights::VersionDescriptor& v, weights::DeviceWeights& target,
                 const weights::RelaySource* relay) override {
        return reader_.fetch_to_device(v, staging_, target, relay);
    }
    std::optional<weights::RelaySource> relay_source() const override {
        if (!relay_) return std::nullopt;
        return reader_.relay_source();
    }
    Result<weights::DeviceBuffer> allocate(uint64_t bytes) override {
        return staging_.allocate(bytes);
    }
    weights::DeviceFetchStats last() const override { return reader_.last_device_fetch(); }
    void swap_host() override { reader_.swap(); }

private:
    weights::Reader& reader_;
    weights::DeviceStaging& staging_;
    const bool relay_;
};

}  // namespace

std::unique_ptr<DeviceWeightSource> make_reader_device_source(weights::Reader& reader,
                                                              weights::DeviceStaging& staging,
                                                              bool relay) {
    return std::make_unique<ReaderDeviceSource>(reader, staging, relay);
}

DeviceRolloutWeights::DeviceRolloutWeights(runtime::JobRuntime& rt, DeviceWeightSource& source,
                                           DeviceWeightSink& sink)
    : rt_(rt), source_(source), sink_(sink) {}

DeviceRolloutWeights::~DeviceRolloutWeights() {
    if (fetching_.valid()) fetching_.wait();
}

void DeviceRolloutWeights::start_fetch(const runtime::PublishedVersion& v) {
    if (fetching_.valid()) return;  // one at a time (RolloutLoop never asks for two)
    // A version fetched and never switched in is dropped: the fetch rewrites its buffer.
    ready_.reset();
    fetched_.reset();
    fetch_start_ns_ = rt_.clock().wall_ns();
    fetching_ = std::async(std::launch::async, [this, d = v.descriptor] { return fetch(d); });
}

Status DeviceRolloutWeights::fetch(const weights::VersionDescriptor& v) {
    Pending p;
    p.version = v.version;
    const weights::DevicePathChoice choice = source_.path(v);
    p.path = choice.path;
    p.reason = choice.reason;
    if (choice.path == DeviceWeightPath::kCudaIpc) {
        auto mapped = source_.map(v);
        if (mapped.ok()) {
            const weights::DeviceFetchStats st = source_.last();
            p.mapped = std::move(*mapped);
            p.seconds = st.seconds;
            p.bytes = source_.total_bytes();  // read in place by the conversion, not copied
            fetched_ = std::move(p);
            return Status();
        }
        // The descriptor offered a device slot this process could not open (the trainer's
        // memory went, or the driver refused): read the version over the network instead.
        p.path = DeviceWeightPath::kPinnedHost;
        p.fallback = true;
        p.reason = fmt::format("CUDA IPC was chosen ({}) but failed: {}", choice.reason,
                               mapped.status().message());
    }
    const uint64_t total = source_.total_bytes();
    if (fp32_.buffer.size() < total) {
        auto buffer = source_.allocate(total);
        if (!buffer.ok()) {
            return buffer.status().with_context(fmt::format(
                "allocating the {} bytes of fp32 weights on device {}", total, source_.device()));
        }
        fp32_.buffer = std::move(*buffer);
    }
    // Through the relay tree as a host reader would (fetch_via_relay_tree): only versions this
    // reader fetches join the tree, so a version mapped above is never relayed from here.
    if (auto mine = source_.relay_source()) {
        auto assigned = rt_.relay_source(v.version, *mine, rt_.clock().now() + kRelaySourceWait);
        const weights::RelayTreeFetch tree = weights::fetch_via_relay_tree(
            assigned,
            [&](const weights::RelaySource* relay) { return source_.fetch(v, fp32_, relay); });
        if (tree.relay) {
            rt_.log(LogLevel::kWarn,
                    fmt::format("version {} on device {}: {}; read the publishers", v.version,
                                source_.device(), tree.relay->message()));
        }
        TANDEM_RETURN_IF_ERROR(tree.status);
        p.source = tree.source;
        p.relay_fallback = tree.fell_back;
    } else {
        TANDEM_RETURN_IF_ERROR(source_.fetch(v, fp32_, nullptr));
    }
    const weights::DeviceFetchStats st = source_.last();
    // The path the fetch took: pinned_host when a relay served (relays serve host memory) even
    // where the publishers offer ucx_device.
    p.path = st.path;
    p.seconds = st.seconds;
    p.bytes = st.bytes;
    fetched_ = std::move(p);
    return Status();
}

std::optional<Status> DeviceRolloutWeights::wait_fetch(Clock::TimePoint deadline) {
    if (!fetching_.valid()) return std::nullopt;
    const auto wait = std::max(Clock::Duration(0), deadline - rt_.clock().now());
    if (fetching_.wait_for(wait) != std::future_status::ready) return std::nullopt;
    Status s = fetching_.get();
    if (!s.ok()) {
        fetched_.reset();
        return s;
    }
    Pending p = std::move(*fetched_);
    fetched_.reset();
    if (p.mapped && !p.mapped->still_valid()) {
        // The lease went between opening and now: the slot may already hold another version.
        return unavailable(
            fmt::format("version {}: lost the lease on the trainer's device slot "
                        "before switching to it",
                        p.version));
    }
    last_fetch_s_ = p.seconds;
    const std::string_view path = weights::device_weight_path_name(p.path);
    if (p.fallback) ++stats_.ipc_fallbacks;
    if (p.source != "publisher") ++stats_.via_relay;
    if (p.relay_fallback) ++stats_.relay_fallbacks;
    (p.path == DeviceWeightPath::kCudaIpc     ? stats_.cuda_ipc
     : p.path == DeviceWeightPath::kUcxDevice ? stats_.ucx_device
                                              : stats_.pinned_host) += 1;
    stats_.last_path = std::string(path);
    stats_.last_reason = p.reason;
    rt_.log(p.fallback ? LogLevel::kWarn : LogLevel::kInfo,
            fmt::format("weights version {} on device {} by {} from {} ({:.3f} s): {}", p.version,
                        source_.device(), path, p.source, p.seconds, p.reason));
    telemetry_.on_fetch({.version = static_cast<int64_t>(p.version),
                         .start_ns = fetch_start_ns_,
                         .seconds = p.seconds,
                         .bytes = p.bytes,
                         .transport = std::string(path),
                         .source = p.source,
                         .rereads = 0});
    rt_.progress({{"weights", telemetry_.to_json()}});
    ready_ = std::move(p);
    return Status();
}

Status DeviceRolloutWeights::swap() {
    if (!ready_) return Status();
    Pending p = std::move(*ready_);
    ready_.reset();
    std::vector<DevicePiece> pieces;
    if (p.mapped) {
        for (const auto& s : p.mapped->shards()) {
            pieces.push_back({s.memory.data(), s.range.begin, s.range.size()});
        }
    } else {
        pieces.push_back({fp32_.buffer.data(), 0, source_.total_bytes()});
    }
    const uint64_t total = source_.total_bytes();
    TANDEM_RETURN_IF_ERROR(check_device_pieces(p.version, pieces, total));
    // From here the generator's weights change: the old version is gone whatever happens.
    current_.reset();
    if (Status s = sink_.load_device(p.version, pieces); !s.ok()) {
        return s.with_context(
            fmt::format("switching device {} to weights version {}", source_.device(), p.version));
    }
    if (p.mapped) {
        // A lease lost during the conversion means the slot may have been rewritten under it.
        const bool intact = p.mapped->still_valid();
        p.mapped.reset();  // handles closed, then the leases released
        if (!intact) {
            return data_loss(fmt::format(
                "version {}: the lease on the trainer's device slot was lost while it was "
                "converted; the device weights may mix two versions",
                p.version));
        }
    } else {
        source_.swap_host();
    }
    current_ = p.version;
    ++stats_.switches;
    return Status();
}

}  // namespace tandem::rollout
