#include "common/weights/publisher.h"

#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "common/weights/device_pipeline.h"
#include "common/weights/safetensors.h"

namespace tandem::weights {

// ---- SlotWriter ----

SlotWriter::SlotWriter(SlotWriter&& other) noexcept
    : publisher_(std::exchange(other.publisher_, nullptr)),
      slot_(other.slot_),
      version_(other.version_),
      data_(other.data_) {}

SlotWriter::~SlotWriter() {
    if (publisher_ != nullptr) publisher_->abort(slot_);
}

Status SlotWriter::commit() { return commit_with(std::nullopt); }

Status SlotWriter::commit_with(std::optional<Manifest> manifest) {
    if (publisher_ == nullptr) return invalid_argument("slot writer already committed");
    Publisher* p = std::exchange(publisher_, nullptr);
    return p->commit(slot_, version_, std::move(manifest));
}

// ---- Publisher ----

Publisher::Publisher(PublisherOptions options, Layout layout, Announcer& announcer,
                     const Clock& clock)
    : options_(std::move(options)),
      layout_(std::move(layout)),
      range_(layout_.shard_ranges(options_.shard_count)[options_.shard_index]),
      format_(SlotFormat::create({{0, range_.size()}}, options_.chunk_bytes)),
      announcer_(announcer),
      clock_(clock),
      log_(Logger("weights").with({.job = options_.job.str(), .actor = options_.publisher_id})),
      leases_(clock, options_.slots, options_.lease_ttl_ms) {}

Result<std::unique_ptr<Publisher>> Publisher::create(PublisherOptions options, Layout layout,
                                                     Announcer& announcer, const Clock& clock) {
    if (options.slots == 0) return invalid_argument("publisher: slots must be at least 1");
    if (options.chunk_bytes < 4096) {
        return invalid_argument(
            fmt::format("publisher: chunk_bytes {} is below 4096", options.chunk_bytes));
    }
    if (options.shard_count == 0 || options.shard_index >= options.shard_count) {
        return invalid_argument(fmt::format("publisher: shard {} of {} does not exist",
                                            options.shard_index, options.shard_count));
    }
    if (options.lease_ttl_ms.count() <= 0) {
        return invalid_argument("publisher: lease_ttl_ms must be positive");
    }
    std::unique_ptr<Publisher> p(
        new Publisher(std::move(options), std::move(layout), announcer, clock));
    TANDEM_RETURN_IF_ERROR(p->init());
    return p;
}

Status Publisher::init() {
    TANDEM_ASSIGN_OR_RETURN(auto context, ucx::Context::create(options_.ucx));
    ucx_cuda_memory_ = context->supports_cuda_memory();
    hasher_ = std::make_unique<PieceHasher>(options_.checksum_on_helper_thread);
    for (uint32_t s = 0; s < options_.slots; ++s) {
        TANDEM_ASSIGN_OR_RETURN(
            auto memory,
            SlotMemory::create(context, format_.region_bytes,
                               fmt::format("tandem-weights-{}-slot{}", options_.job.str(), s)));
        init_header(*reinterpret_cast<SlotHeader*>(memory->data()));
        slots_.push_back({std::move(memory), 0});
    }
    TANDEM_ASSIGN_OR_RETURN(loop_, UcxLoop::start(context, {.name = "weights-publisher"}));
    TANDEM_RETURN_IF_ERROR(loop_->call([&]() -> Status {
        SlotProvider& provider = *this;  // a private base: convert here, not in make_unique
        server_ = std::make_unique<SourceServer>(*loop_, provider, clock_, options_.server, log_);
        return server_->start();
    }));
    log_.info(
        "publisher ready: layout {} shard {}/{} ({} bytes), {} slots of {} bytes, chunks of "
        "{} bytes, lease TTL {} ms, {} memory",
        layout_.fingerprint_text(), options_.shard_index, options_.shard_count, range_.size(),
        options_.slots, format_.region_bytes, options_.chunk_bytes, options_.lease_ttl_ms.count(),
        backing_name(slots_.front().memory->backing()));
    return Status();
}

Publisher::~Publisher() {
    if (loop_) {
        loop_->call([this] { server_.reset(); });
        loop_.reset();
    }
    slots_.clear();  // after the worker is gone, so nothing progresses while memory goes
    std::vector<Version> announced;
    {
        std::lock_guard<std::mutex> lock(mu_);
        announced.swap(announced_);
    }
    for (Version v : announced) announcer_.retire(options_.job, v, options_.shard_index);
}

std::optional<Version> Publisher::newest() const {
    std::lock_guard<std::mutex> lock(mu_);
    return newest_;
}

Publisher::Stats Publisher::stats() const {
    Stats s;
    {
        std::lock_guard<std::mutex> lock(mu_);
        s = stats_;
        s.live_leases = leases_.live_leases();
    }
    // The server's counters live on the loop thread.
    loop_->call([&] {
        if (server_) {
            s.requests_served = server_->stats().requests;
            s.requests_refused = server_->stats().refused;
            s.bytes_served = server_->stats().bytes_served;
        }
    });
    return s;
}

Result<SlotWriter> Publisher::begin(Version version) {
    std::optional<Version> evicted;
    uint32_t slot = 0;
    {
        std::unique_lock<std::mutex> lock(mu_);
        if (newest_ && version <= *newest_) {
            return invalid_argument(
                fmt::format("version {} is not newer than version {}", version, *newest_));
        }
        bool counted = false;
        for (;;) {
            TANDEM_ASSIGN_OR_RETURN(SlotClaim claim, leases_.claim_for_write());
            if (claim.slot) {
                slot = *claim.slot;
                evicted = claim.evicted;
                break;
            }
            if (claim.all_pinned) return internal_error("every publisher slot is pinned");
            if (!counted) {
                ++stats_.reclaim_waits;
                counted = true;
                log_.info(
                    "every slot is leased; draining slot of the oldest version, waiting at "
                    "most {} ms",
                    std::chrono::duration_cast<std::chrono::milliseconds>(claim.retry_at -
                                                                          clock_.now())
                        .count());
            }
            // Woken by a release; otherwise by the deadline at which the drained slot's last
            // lease runs out (at most one TTL away).
            const auto wait = std::max<Clock::Duration>(claim.retry_at - clock_.now(),
                                                        std::chrono::milliseconds(1));
            lease_released_.wait_for(lock, wait);
        }
        if (evicted) std::erase(announced_, *evicted);
    }
    if (evicted) announcer_.retire(options_.job, *evicted, options_.shard_index);
    slots_[slot].device_current = false;
    begin_write(header(slot));
    std::byte* data = slots_[slot].memory->data() + format_.data_offset;
    return SlotWriter(this, slot, version, {data, range_.size()});
}

Status Publisher::publish(Version version, std::span<const std::byte> shard_bytes) {
    if (shard_bytes.size() != range_.size()) {
        return invalid_argument(fmt::format(
            "publishing version {}: {} bytes given, shard {} of layout {} has {}", version,
            shard_bytes.size(), options_.shard_index, layout_.fingerprint_text(), range_.size()));
    }
    TANDEM_ASSIGN_OR_RETURN(SlotWriter writer, begin(version));
    const auto t0 = clock_.now();
    Manifest manifest = copy_and_checksum(writer.data(), shard_bytes);
    {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.last_copy_seconds = seconds_between(t0, clock_.now());
    }
    return writer.commit_with(std::move(manifest));
}

Manifest Publisher::copy_and_checksum(std::span<std::byte> dst, std::span<const std::byte> src) {
    constexpr uint64_t kBlock = 256 << 10;
    const uint64_t chunk = options_.chunk_bytes;
    std::vector<uint64_t> sums(Manifest::count_chunks(src.size(), chunk));
    for (size_t c = 0; c < sums.size(); ++c) {
        const uint64_t begin = c * chunk;
        const uint64_t end = std::min<uint64_t>(begin + chunk, src.size());
        auto state = PieceHasher::new_state();
        for (uint64_t off = begin; off < end; off += kBlock) {
            const uint64_t n = std::min(kBlock, end - off);
            std::memcpy(dst.data() + off, src.data() + off, n);
            hasher_->submit(state, c, dst.data() + off, n, off + n == end);
        }
        for (const auto& d : hasher_->drain()) sums[d.tag] = d.value;
    }
    for (const auto& d : hasher_->finish()) sums[d.tag] = d.value;
    return Manifest(chunk, src.size(), std::move(sums));
}

Status Publisher::publish_safetensors(const std::string& path, Version version) {
    TANDEM_ASSIGN_OR_RETURN(LoadedWeights loaded, read_safetensors(path));
    if (loaded.layout.fingerprint() != layout_.fingerprint()) {
        return invalid_argument(fmt::format(
            "{}: layout mismatch: the file's tensors give {} but the publisher's layout is {}",
            path, loaded.layout.fingerprint_text(), layout_.fingerprint_text()));
    }
    return publish(version, loaded.data.span().subspan(range_.begin, range_.size()));
}

Status Publisher::publish_from_device(Version version, const void* device_shard,
                                      DeviceStaging& staging) {
    if (!device_staging_logged_) {
        device_staging_logged_ = true;
        const bool ucx_device = ucx_can_register(staging);
        log_.info(
            "publishing from device {} through pinned host slots in chunks of {} bytes ({}){}",
            staging.device(), options_.chunk_bytes,
            ucx_device ? "this UCX can register the device's memory"
                       : "this UCX cannot register CUDA memory",
            !options_.device_slots ? ""
            : ucx_device
                ? "; device slots shared by CUDA IPC on this node and registered with UCX for "
                  "one-sided gets into device memory (ucx_device)"
                : "; device slots shared by CUDA IPC on this node");
    }
    TANDEM_ASSIGN_OR_RETURN(SlotWriter writer, begin(version));
    Slot& slot = slots_[writer.slot()];
    // Pinning once per slot makes the copies DMAs; it is a no-op after the first time.
    TANDEM_RETURN_IF_ERROR(staging.pin(slot.memory->data(), slot.memory->size()));
    const auto t0 = clock_.now();
    const uint64_t chunk = options_.chunk_bytes;
    std::vector<uint64_t> sums(Manifest::count_chunks(range_.size(), chunk));
    Status copied = copy_from_device_chunked(staging, writer.data(), device_shard, chunk,
                                             [&](size_t c, std::span<const std::byte> bytes) {
                                                 sums[c] = chunk_checksum(bytes);
                                                 return Status();
                                             });
    if (!copied.ok()) {
        // `writer` abandons the slot: its header stays open and nothing is announced.
        return copied.with_context(fmt::format("publishing version {}", version));
    }
    if (options_.device_slots) {
        Status filled = fill_device_slot(slot, device_shard, staging);
        if (!filled.ok()) {
            log_.with({.version = version})
                .warn("version {} is published without a device slot for same-node readers: {}",
                      version, filled.message());
        }
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.last_copy_seconds = seconds_between(t0, clock_.now());
        ++stats_.device_staged;
        if (slot.device_current) ++stats_.device_slot_exports;
        if (slot.device_current && slot.device_region) ++stats_.ucx_device_exports;
    }
    return writer.commit_with(Manifest(chunk, range_.size(), std::move(sums)));
}

bool Publisher::ucx_can_register(const DeviceStaging& staging) const {
    return ucx_cuda_memory_ || staging.memory_kind() == DeviceMemoryKind::kHost;
}

Status Publisher::fill_device_slot(Slot& slot, const void* device_shard, DeviceStaging& staging) {
    if (slot.device.data() == nullptr) {
        TANDEM_ASSIGN_OR_RETURN(DeviceBuffer buffer, staging.allocate(range_.size()));
        TANDEM_ASSIGN_OR_RETURN(slot.ipc_handle, staging.export_handle(buffer.data()));
        if (ucx_can_register(staging)) {
            const auto kind = staging.memory_kind() == DeviceMemoryKind::kHost
                                  ? ucx::MemoryRegion::Kind::kHost
                                  : ucx::MemoryRegion::Kind::kCuda;
            // On the loop thread, which owns the worker and the context's registrations.
            auto region = loop_->call([&] {
                return ucx::MemoryRegion::register_memory(loop_->shared_worker()->context(),
                                                          buffer.data(), buffer.size(), kind);
            });
            if (region.ok()) {
                slot.device_region = std::move(*region);
            } else if (!std::exchange(device_region_warned_, true)) {
                // Same-node readers still open the slot through CUDA IPC; others take the
                // pinned path.
                log_.warn("device slots are not offered over UCX (ucx_device): {}",
                          region.status().message());
            }
        }
        slot.device = std::move(buffer);
    }
    TANDEM_RETURN_IF_ERROR(staging.copy_on_device(slot.device.data(), device_shard, range_.size()));
    slot.device_current = true;
    return Status();
}

Status Publisher::commit(uint32_t slot, Version version, std::optional<Manifest> manifest) {
    const auto t0 = clock_.now();
    std::byte* base = slots_[slot].memory->data();
    std::span<const std::byte> data(base + format_.data_offset, range_.size());
    if (!manifest) manifest = Manifest::compute(data, options_.chunk_bytes);
    std::memcpy(base + format_.manifest_offsets[0], manifest->checksums().data(),
                manifest->checksums().size() * sizeof(uint64_t));
    const uint64_t digest = manifest->digest();
    end_write(header(slot),
              {version, range_.size(), digest, layout_.fingerprint(), options_.chunk_bytes});
    {
        std::lock_guard<std::mutex> lock(mu_);
        leases_.mark_published(slot, version);
        slots_[slot].manifest_digest = digest;
        newest_ = version;
        announced_.push_back(version);
        ++stats_.published;
    }

    VersionDescriptor d;
    d.job = options_.job;
    d.version = version;
    d.layout_fingerprint = layout_.fingerprint();
    d.shard_count = options_.shard_count;
    ShardDescriptor s;
    s.index = options_.shard_index;
    s.range = range_;
    s.publisher = options_.publisher_id;
    s.worker_address = loop_->address();
    s.remote_address = reinterpret_cast<uint64_t>(base);
    s.rkey = slots_[slot].memory->registration().packed_rkey();
    s.bytes = range_.size();
    s.manifest_digest = digest;
    s.chunk_bytes = options_.chunk_bytes;
    s.slot = slot;
    s.host = host_identity();
    s.pid = static_cast<int64_t>(getpid());
    s.shm_path = slots_[slot].memory->share_path();
    if (slots_[slot].device_current) {
        s.cuda_ipc_handle = slots_[slot].ipc_handle;
        if (const auto& region = slots_[slot].device_region) {
            s.device_remote_address = region->address();
            s.device_rkey = region->packed_rkey();
        }
    }
    d.shards.push_back(std::move(s));
    Status announced = announcer_.announce(d);
    {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.last_commit_seconds = seconds_between(t0, clock_.now());
    }
    if (!announced.ok()) {
        log_.with({.version = version})
            .error("version {} is committed in slot {} but its announcement failed: {}", version,
                   slot, announced.message());
        return announced.with_context(fmt::format("announcing version {}", version));
    }
    log_.with({.version = version})
        .debug("committed version {} in slot {} ({} chunks, manifest {:016x})", version, slot,
               manifest->chunk_count(), digest);
    return Status();
}

void Publisher::abort(uint32_t slot) {
    // The header stays open (odd seq): nobody may read a half-written slot.
    std::lock_guard<std::mutex> lock(mu_);
    leases_.abort_write(slot);
    log_.warn("a write to slot {} was abandoned", slot);
}

Result<std::optional<LeaseOffer>> Publisher::acquire(JobId job, Version version, uint32_t shard,
                                                     const std::string& holder) {
    if (job != options_.job) {
        return not_found(fmt::format("publisher {} serves {}, not {}", options_.publisher_id,
                                     options_.job.str(), job.str()));
    }
    if (shard != options_.shard_index) {
        return not_found(fmt::format("publisher {} holds shard {}, not shard {}",
                                     options_.publisher_id, options_.shard_index, shard));
    }
    std::lock_guard<std::mutex> lock(mu_);
    TANDEM_ASSIGN_OR_RETURN(LeaseGrant grant, leases_.acquire(version, holder));
    const Slot& s = slots_[grant.slot];
    LeaseOffer o;
    o.grant = grant;
    o.ttl = options_.lease_ttl_ms;
    o.layout_fingerprint = layout_.fingerprint();
    o.region_address = s.memory->registration().address();
    o.region_bytes = format_.region_bytes;
    o.manifest_offset = format_.manifest_offsets[0];
    o.chunk_count = format_.chunk_counts[0];
    o.data_offset = format_.data_offset;
    o.data_bytes = range_.size();
    o.chunk_bytes = options_.chunk_bytes;
    o.manifest_digest = s.manifest_digest;
    o.chunks_ready = o.chunk_count;
    o.packed_rkey = &s.memory->registration().packed_rkey();
    return std::optional<LeaseOffer>(o);
}

Result<LeaseGrant> Publisher::renew(LeaseId id) {
    std::lock_guard<std::mutex> lock(mu_);
    return leases_.renew(id);
}

void Publisher::release(LeaseId id) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        leases_.release(id);
    }
    lease_released_.notify_all();
}

Result<const std::byte*> Publisher::readable(LeaseId id, uint64_t offset, uint64_t length) {
    std::lock_guard<std::mutex> lock(mu_);
    auto grant = leases_.find(id);
    if (!grant) return not_found(fmt::format("lease {} expired or was never granted", id));
    if (offset > format_.region_bytes || length > format_.region_bytes - offset) {
        return invalid_argument(fmt::format(
            "read of [{}, +{}) leaves slot {} (version {}) of publisher {}: its region is {} bytes",
            offset, length, grant->slot, grant->version, options_.publisher_id,
            format_.region_bytes));
    }
    return static_cast<const std::byte*>(slots_[grant->slot].memory->data() + offset);
}

Result<uint64_t> Publisher::chunks_ready(LeaseId id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!leases_.find(id)) return not_found(fmt::format("lease {} expired", id));
    return format_.chunk_counts[0];
}

}  // namespace tandem::weights
