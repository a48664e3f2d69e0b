#include "common/weights/reader_core.h"
#include "common/weights/reader_mismatch.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <random>

#include <fmt/format.h>

namespace tandem::weights {

namespace {

uint64_t random_id() {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(getpid());
}

std::span<const std::byte> tensor_in(const Layout& layout, std::span<const std::byte> bytes,
                                     std::string_view name) {
    const TensorInfo* t = layout.find(name);
    if (t == nullptr || t->offset + t->bytes > bytes.size()) return {};
    return bytes.subspan(t->offset, t->bytes);
}

}  // namespace

std::string_view read_path_name(ReadPath path) {
    switch (path) {
        case ReadPath::kAuto:
            return "auto";
        case ReadPath::kGet:
            return "get";
        case ReadPath::kActiveMessage:
            return "am";
    }
    return "auto";
}

std::span<const std::byte> WeightsView::tensor(std::string_view name) const {
    return tensor_in(layout_, bytes_, name);
}

std::span<const std::byte> PartialWeights::tensor(std::string_view name) const {
    return tensor_in(layout, data.span(), name);
}

MappedWeights::~MappedWeights() {
    if (on_destroy_) on_destroy_();
}

std::span<const std::byte> MappedWeights::bytes() const {
    if (shards_.size() != 1) return {};
    const Shard& s = shards_.front();
    return {s.mapping.data() + s.data_offset, s.range.size()};
}

std::span<const std::byte> MappedWeights::tensor(std::string_view name) const {
    const TensorInfo* t = layout_.find(name);
    if (t == nullptr) return {};
    for (const Shard& s : shards_) {
        if (t->offset >= s.range.begin && t->offset + t->bytes <= s.range.end) {
            return {s.mapping.data() + s.data_offset + (t->offset - s.range.begin), t->bytes};
        }
    }
    return {};
}

bool MappedWeights::still_valid() const {
    // Relaxed: a flag set by the reader's loop when a renewal fails; the header check below is
    // what proves the bytes are still this version.
    if (lease_lost_->load(std::memory_order_relaxed)) return false;
    for (const Shard& s : shards_) {
        const auto* header = reinterpret_cast<const SlotHeader*>(s.mapping.data());
        const HeaderSnapshot snap = read_header(*header);
        if (!snap.closed() || snap.seq != s.seq || snap.fields.version != version_) return false;
    }
    return true;
}

Reader::Core::Core(ReaderOptions options, Layout layout, const Clock& clock)
    : options_(std::move(options)),
      layout_(std::move(layout)),
      clock_(clock),
      log_(Logger("weights").with({.job = options_.job.str(), .actor = options_.reader_id})),
      table_(clock, 2, options_.relay_lease_ttl_ms) {
    const uint64_t max_chunks = layout_.total_bytes() / options_.min_chunk_bytes + 2 * kMaxShards;
    meta_bytes_ = align_up(kSlotHeaderBytes + max_chunks * sizeof(uint64_t), kPage);
}

Reader::Core::~Core() = default;

Status Reader::Core::init() {
    if (options_.window_reads == 0) return invalid_argument("reader: window_reads must be >= 1");
    if (options_.piece_bytes < 4096 || options_.am_piece_bytes < 4096) {
        return invalid_argument("reader: piece_bytes and am_piece_bytes must be at least 4096");
    }
    if (options_.min_chunk_bytes < 4096) {
        return invalid_argument("reader: min_chunk_bytes must be at least 4096");
    }
    const uint64_t region_bytes = meta_bytes_ + align_up(layout_.total_bytes(), kPage);
    TANDEM_ASSIGN_OR_RETURN(auto context, ucx::Context::create(options_.ucx));
    for (uint32_t b = 0; b < 2; ++b) {
        TANDEM_ASSIGN_OR_RETURN(
            buffers_[b].memory,
            SlotMemory::create(context, region_bytes, fmt::format("tandem-weights-reader{}", b)));
        init_header(header(b));
    }
    TANDEM_ASSIGN_OR_RETURN(loop_, UcxLoop::start(context, {.name = "weights-reader"}));
    return loop_->call([&]() -> Status {
        hasher_ = std::make_unique<PieceHasher>(options_.verify_on_helper_thread);
        client_ = std::make_unique<SourceClient>(*loop_, clock_, random_id(), log_);
        TANDEM_RETURN_IF_ERROR(client_->start());
        if (options_.relay) {
            relay_ = std::make_unique<RelayServe>(
                RelayServe::Options{options_.job, options_.reader_id, options_.relay_lease_ttl_ms,
                                    layout_.fingerprint(), meta_bytes_},
                buffers_, table_);
            server_ =
                std::make_unique<SourceServer>(*loop_, *relay_, clock_, options_.server, log_);
            TANDEM_RETURN_IF_ERROR(server_->start());
        }
        poller_ = loop_->add_poller([this] { return poll(); });
        return Status();
    });
}

void Reader::Core::shutdown() {
    if (!loop_) return;
    loop_->call([this] {
        loop_->remove_poller(poller_);
        for (auto& op : ops_) {
            if (!op->finished) fail(*op, unavailable("the reader is shutting down"));
        }
        // Failed operations still draining get their bounded drain now (nothing progresses the
        // worker after this); what even a forced close cannot complete is retired.
        for (auto& op : ops_) {
            while (op->draining() && !drain(*op)) {
                if (!op->draining()) {
                    retire(op, false);
                    break;
                }
                loop_->worker().progress();
            }
        }
        hasher_.reset();  // finishes what it holds while the operations' memory still exists
        ops_.clear();
        for (auto& [id, entry] : maps_) {
            // Relaxed: the flag only tells holders of mapped weights to stop using them.
            entry.lease_lost->store(true, std::memory_order_relaxed);
            for (auto& l : entry.leases) {
                wire::Request rq;
                rq.type = wire::RequestType::kRelease;
                rq.lease_id = l.lease;
                client_->send_only(*l.conn, rq);
            }
        }
        maps_.clear();
        server_.reset();
        client_.reset();
    });
    {
        std::lock_guard<std::mutex> lock(post_mu_);
        open_ = false;
    }
    loop_.reset();
    if (!retired_.empty() || !retired_memory_.empty()) {
        // UCX never completed their requests: the memory they target is never freed.
        [[maybe_unused]] auto* ops =
            new std::vector<std::shared_ptr<Operation>>(std::move(retired_));
        [[maybe_unused]] auto* memory =
            new std::vector<std::shared_ptr<SlotMemory>>(std::move(retired_memory_));
    }
    // Views may still hold a buffer; its memory goes when the last of them does.
    for (auto& b : buffers_) b.memory.reset();
}

void Reader::Core::post_if_open(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(post_mu_);
    if (open_) loop_->post(std::move(task));
}

Status Reader::Core::validate(const VersionDescriptor& version) const {
    if (version.job != options_.job) {
        return invalid_argument(fmt::format("version {} belongs to {}; this reader reads {}",
                                            version.version, version.job.str(),
                                            options_.job.str()));
    }
    if (version.layout_fingerprint != layout_.fingerprint()) {
        return invalid_argument(
            fmt::format("layout mismatch: version {} of {} has layout {}, this reader expects {}",
                        version.version, version.job.str(),
                        fingerprint_text(version.layout_fingerprint), layout_.fingerprint_text()) +
            mismatch_detail(layout_, options_.layouts_dir, version.layout_fingerprint));
    }
    if (!version.complete()) {
        return unavailable(fmt::format("version {} is not complete ({} of {} shards)",
                                       version.version, version.shards.size(),
                                       version.shard_count));
    }
    if (version.shard_count > kMaxShards) {
        return invalid_argument(fmt::format("version {} has {} shards (at most {})",
                                            version.version, version.shard_count, kMaxShards));
    }
    const auto ranges = layout_.shard_ranges(version.shard_count);
    for (const auto& s : version.shards) {
        if (s.range != ranges[s.index] || s.bytes != s.range.size()) {
            return invalid_argument(fmt::format(
                "version {} shard {} covers [{}, {}) but layout {} puts shard {} of {} at [{}, {})",
                version.version, s.index, s.range.begin, s.range.end, layout_.fingerprint_text(),
                s.index, version.shard_count, ranges[s.index].begin, ranges[s.index].end));
        }
        if (s.chunk_bytes < options_.min_chunk_bytes) {
            return invalid_argument(fmt::format(
                "version {} shard {} uses chunks of {} bytes; this reader needs at least {}",
                version.version, s.index, s.chunk_bytes, options_.min_chunk_bytes));
        }
    }
    return Status();
}

std::future<Status> Reader::Core::start(std::shared_ptr<Operation> op) {
    auto future = op->promise.get_future();
    Status valid = validate(op->version);
    if (!valid.ok()) {
        log_.with({.version = op->version.version}).warn("refusing version: {}", valid.message());
        op->promise.set_value(valid);
        return future;
    }
    loop_->post([this, op] {
        ops_.push_back(op);
        begin(*op);
    });
    return future;
}

bool Reader::Core::swap() {
    return loop_->call([this] {
        std::shared_ptr<const WeightsView> old;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (!fetched_slot_) return false;
            const uint32_t slot = *fetched_slot_;
            table_.pin(slot);
            // Unpins the buffer when the last view of it goes (on the loop thread).
            struct Pin {
                Pin(std::shared_ptr<SlotMemory> r, std::weak_ptr<Core> c, uint32_t s)
                    : memory(std::move(r)), core(std::move(c)), slot(s) {}
                Pin(const Pin&) = delete;
                Pin& operator=(const Pin&) = delete;
                ~Pin() {
                    if (auto c = core.lock()) {
                        c->post_if_open([raw = c.get(), s = slot] { raw->table_.unpin(s); });
                    }
                }
                std::shared_ptr<SlotMemory> memory;
                std::weak_ptr<Core> core;
                uint32_t slot;
            };
            auto pin = std::make_shared<Pin>(buffers_[slot].memory, weak_from_this(), slot);
            std::span<const std::byte> bytes(buffers_[slot].memory->data() + meta_bytes_,
                                             layout_.total_bytes());
            old = std::move(current_);
            current_ = std::make_shared<WeightsView>(fetched_version_, layout_, bytes, pin);
            fetched_slot_.reset();
        }
        return true;  // `old` is released here, outside mu_
    });
}

uint32_t Reader::Core::shard_index_of(const Operation& op, const ShardFetch& sf) const {
    (void)op;
    return sf.shard.index;
}

// ---- Reader ----

Result<std::unique_ptr<Reader>> Reader::create(ReaderOptions options, Layout layout,
                                               const Clock& clock) {
    auto core = std::make_shared<Core>(std::move(options), std::move(layout), clock);
    Status s = core->init();
    if (!s.ok()) {
        core->shutdown();
        return s;
    }
    return std::unique_ptr<Reader>(new Reader(std::move(core)));
}

Reader::~Reader() { core_->shutdown(); }

Status Reader::fetch(const VersionDescriptor& version, const RelaySource* relay) {
    return fetch_async(version, relay ? std::optional<RelaySource>(*relay) : std::nullopt).get();
}

std::future<Status> Reader::fetch_async(VersionDescriptor version,
                                        std::optional<RelaySource> relay) {
    auto op = std::make_shared<Core::Operation>();
    op->kind = Core::Kind::kPull;
    op->version = std::move(version);
    op->relay = std::move(relay);
    return core_->start(op);
}

bool Reader::swap() { return core_->swap(); }

std::shared_ptr<const WeightsView> Reader::current() const { return core_->current(); }

std::optional<Version> Reader::fetched_version() const { return core_->fetched_version(); }

Result<PartialWeights> Reader::fetch_partial(const VersionDescriptor& version,
                                             const std::vector<TensorSelection>& selection) {
    auto op = std::make_shared<Core::Operation>();
    op->kind = Core::Kind::kPartial;
    op->version = version;
    op->selection = selection;
    TANDEM_RETURN_IF_ERROR(core_->start(op).get());
    PartialWeights out;
    out.version = version.version;
    out.layout = std::move(op->plan.layout);
    out.data = std::move(op->partial);
    return out;
}

Result<std::shared_ptr<const MappedWeights>> Reader::map(const VersionDescriptor& version) {
    auto op = std::make_shared<Core::Operation>();
    op->kind = Core::Kind::kMap;
    op->version = version;
    TANDEM_RETURN_IF_ERROR(core_->start(op).get());
    return op->mapped;
}

RelaySource Reader::relay_source() const { return core_->relay_source(); }

Status Reader::copy_current_to_device(DeviceStaging& staging, DeviceBuffer& device) {
    auto view = current();
    if (!view) return unavailable("no current version to copy to the device");
    if (device.size() < view->bytes().size()) {
        return invalid_argument(
            fmt::format("device buffer of {} bytes is smaller than the {} "
                        "bytes of version {}",
                        device.size(), view->bytes().size(), view->version()));
    }
    if (device_staged_.fetch_add(1, std::memory_order_relaxed) == 0) {  // relaxed: a counter
        Logger("weights").info(
            "copying weights to device {} through pinned host buffers (this UCX "
            "cannot fetch into CUDA memory)",
            staging.device());
    }
    // Pin the whole buffer the view lives in (page-aligned), once.
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    auto* base = reinterpret_cast<std::byte*>(reinterpret_cast<uintptr_t>(view->bytes().data()) &
                                              ~(page - 1));
    const auto* end = view->bytes().data() + view->bytes().size();
    TANDEM_RETURN_IF_ERROR(staging.pin(base, static_cast<size_t>(end - base)));
    return staging.to_device(device.data(), view->bytes().data(), view->bytes().size());
}

uint64_t Reader::device_staged() const {
    return device_staged_.load(std::memory_order_relaxed);  // relaxed: a counter
}

const Layout& Reader::layout() const { return core_->layout(); }

FetchStats Reader::last_fetch() const { return core_->last_fetch(); }
DrainStats Reader::drain_stats() const { return core_->drain_stats(); }
uint64_t Reader::relay_bytes_served() const { return core_->relay_bytes_served(); }
uint64_t Reader::Core::relay_bytes_served() const {
    uint64_t n = 0;
    loop_->call([&] { n = server_ ? server_->stats().bytes_served : 0; });  // loop-owned counters
    return n;
}

Result<Version> fetch_newest(Reader& reader,
                             const std::function<std::optional<VersionDescriptor>()>& newest,
                             Version at_least, int attempts) {
    Status last = not_found(fmt::format("no version >= {} is published", at_least));
    for (int i = 0; i < attempts; ++i) {
        auto d = newest();
        if (!d || d->version < at_least) return last;
        last = reader.fetch(*d);
        if (last.ok()) return d->version;
        // Gone from its slot or overwritten under us: the next newest may be fine.
        if (last.code() != StatusCode::kNotFound && last.code() != StatusCode::kUnavailable) {
            return last;
        }
    }
    return last.with_context(fmt::format("after {} attempts", attempts));
}

RelayTreeFetch fetch_via_relay_tree(const Result<std::optional<RelaySource>>& assigned,
                                    const std::function<Status(const RelaySource*)>& read) {
    RelayTreeFetch out;
    out.source = "publisher";
    if (!assigned.ok()) {
        out.relay = assigned.status().with_context("no place in the relay tree");
    } else if (assigned->has_value()) {
        const RelaySource& relay = **assigned;
        Status s = read(&relay);
        if (s.ok()) {
            out.source = relay.reader;
            return out;
        }
        out.relay = s.with_context(fmt::format("reading relay {}", relay.reader));
        out.fell_back = true;
    }
    out.status = read(nullptr);
    if (!out.status.ok() && out.fell_back) {
        out.status = out.status.with_context(
            fmt::format("reading the publishers (after {})", out.relay->message()));
    }
    return out;
}

}  // namespace tandem::weights
