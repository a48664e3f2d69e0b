#include "common/weights/reader.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <unordered_map>

#include <fmt/format.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/weights/lease_table.h"
#include "common/weights/manifest.h"
#include "common/weights/slot_format.h"
#include "common/weights/slot_memory.h"
#include "common/weights/source_client.h"
#include "common/weights/ucx_loop.h"

namespace tandem::weights {

namespace {

constexpr auto kLivenessInterval = std::chrono::milliseconds(100);
constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxShards = 256;

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

// ---------------------------------------------------------------------------------------------
// The reader's state, owned by its loop thread except where a member says otherwise.

class Reader::Core : public SlotProvider, public std::enable_shared_from_this<Reader::Core> {
public:
    Core(ReaderOptions options, Layout layout, const Clock& clock);
    ~Core() override;

    Status init();
    void shutdown();

    enum class Kind { kPull, kPartial, kMap };
    struct Operation;

    // Caller-thread entry points.
    std::future<Status> start(std::shared_ptr<Operation> op);
    Status validate(const VersionDescriptor& version) const;
    bool swap();
    std::shared_ptr<const WeightsView> current() const {
        std::lock_guard<std::mutex> lock(mu_);
        return current_;
    }
    std::optional<Version> fetched_version() const {
        std::lock_guard<std::mutex> lock(mu_);
        if (!fetched_slot_) return std::nullopt;
        return fetched_version_;
    }
    FetchStats last_fetch() const {
        std::lock_guard<std::mutex> lock(mu_);
        return last_;
    }
    RelaySource relay_source() const {
        return {options_.reader_id, loop_->address(), host_identity(),
                static_cast<int64_t>(getpid())};
    }
    const Layout& layout() const { return layout_; }
    void post_if_open(std::function<void()> task);

    struct ShardFetch;
    struct InFlight {
        size_t chunk = 0;
        size_t piece = 0;
        ucx::Request get;
        std::shared_ptr<PendingCall> call;
    };
    // A chunk read piece by piece; its checksum is updated as the pieces land, in order, while
    // each is still in cache, so verifying costs no second pass over memory.
    struct ChunkWork {
        std::byte* dest = nullptr;
        size_t scratch = SIZE_MAX;  // partial reads: the scratch slot
        size_t pieces = 0;
        size_t issued = 0;
        size_t hashed = 0;
        std::vector<uint8_t> done;
        std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state{XXH3_createState(),
                                                                       &XXH3_freeState};
    };
    enum class State { kClaim, kConnect, kHello, kAcquire, kMeta, kChunks, kHeaderAfter, kDone };

    struct ShardFetch {
        ShardDescriptor shard;
        std::string source_name;
        std::vector<std::byte> source_address;
        std::string source_host;
        int64_t source_pid = 0;
        bool via_relay = false;

        State state = State::kConnect;
        std::shared_ptr<SourceConnection> conn;
        std::shared_ptr<PendingCall> call;  // control call in flight
        wire::Reply lease;
        bool lease_held = false;
        std::vector<std::byte> rkey_bytes;
        ucx::RemoteKey* rkey = nullptr;
        bool use_get = false;

        std::array<std::byte, kSlotHeaderBytes> header_before{};
        std::array<std::byte, kSlotHeaderBytes> header_after{};
        ucx::Request meta_get[2];
        std::shared_ptr<PendingCall> meta_call[2];
        uint64_t* manifest_dest = nullptr;
        std::vector<uint64_t> manifest_storage;
        Manifest manifest;
        std::byte* data_dest = nullptr;  // pull: chunk i lands at data_dest + i * chunk_bytes

        std::deque<size_t> todo;  // chunks to read, in order (re-reads go first)
        std::vector<uint8_t> rereads;
        size_t needed = 0;
        size_t verified = 0;
        std::deque<InFlight> inflight;
        std::map<size_t, ChunkWork> active;  // chunks being read, by index
        uint64_t ready = 0;                  // chunks the source says are readable (relays)
        std::shared_ptr<PendingCall> await_call;

        // Partial reads.
        HostBuffer scratch;
        std::vector<size_t> free_scratch;
        std::vector<CopyRange> copies;  // in shard-local source offsets

        Clock::TimePoint last_progress{};
        Clock::TimePoint next_renew{};
        Clock::TimePoint next_liveness{};
        std::shared_ptr<PendingCall> renew_call;
        uint64_t rereads_done = 0;
        uint64_t piece_bytes = 0;  // one get or one read request
        Clock::TimePoint phase_started{};
    };

    struct Operation {
        Kind kind = Kind::kPull;
        VersionDescriptor version;
        std::optional<RelaySource> relay;
        std::vector<TensorSelection> selection;
        std::promise<Status> promise;
        Clock::TimePoint started{};
        std::vector<std::unique_ptr<ShardFetch>> shards;
        bool finished = false;
        // kPull: the buffer being filled.
        uint32_t slot = 0;
        Clock::TimePoint claim_retry{};
        // kPartial: the result.
        PartialPlan plan;
        HostBuffer partial;
        // kMap: the result.
        std::shared_ptr<const MappedWeights> mapped;
    };

private:
    // One of the two buffers, and what the relay side knows about its content.
    struct Buffer {
        std::shared_ptr<SlotMemory> memory;
        Version version = 0;
        bool filling = false;
        bool complete = false;
        Status failed;
        struct ShardState {
            bool manifest_ready = false;
            uint64_t manifest_offset = 0;
            uint64_t chunk_count = 0;
            uint64_t chunk_bytes = 0;
            uint64_t manifest_digest = 0;
            ByteRange range;
            std::vector<uint8_t> verified;
            uint64_t prefix = 0;
        };
        std::vector<ShardState> shards;
    };
    struct MapLease {
        std::shared_ptr<SourceConnection> conn;
        LeaseId lease = 0;
        std::shared_ptr<PendingCall> renew_call;
    };
    struct MapEntry {
        std::vector<MapLease> leases;
        std::chrono::milliseconds ttl{0};
        Clock::TimePoint next_renew{};
        std::shared_ptr<std::atomic<bool>> lease_lost;
    };

    SlotHeader& header(uint32_t slot) {
        return *reinterpret_cast<SlotHeader*>(buffers_[slot].memory->data());
    }
    bool poll();
    void begin(Operation& op);
    void step(Operation& op, ShardFetch& sf);
    void step_chunks(Operation& op, ShardFetch& sf);
    void issue_read(Operation& op, ShardFetch& sf, size_t chunk, ChunkWork& work);
    bool start_chunk(Operation& op, ShardFetch& sf);
    void piece_done(Operation& op, ShardFetch& sf, size_t chunk, size_t piece);
    void chunk_verified(Operation& op, ShardFetch& sf, size_t chunk, size_t scratch);
    Status accept_lease(Operation& op, ShardFetch& sf);
    Status check_meta(Operation& op, ShardFetch& sf);
    Status finish_map(Operation& op);
    void complete(Operation& op);
    void fail(Operation& op, const Status& status);
    void release_lease(ShardFetch& sf);
    Status control_timeout(ShardFetch& sf, const PendingCall& call);
    void renew_leases(Operation& op, ShardFetch& sf);
    void renew_maps();
    void drop_map(uint64_t id);
    uint32_t shard_index_of(const Operation& op, const ShardFetch& sf) const;

    // SlotProvider (relay), loop thread.
    Result<std::optional<LeaseOffer>> acquire(JobId job, Version version, uint32_t shard,
                                              const std::string& holder) override;
    Result<LeaseGrant> renew(LeaseId id) override;
    void release(LeaseId id) override;
    Result<const std::byte*> readable(LeaseId id, uint64_t offset, uint64_t length) override;
    Result<uint64_t> chunks_ready(LeaseId id) override;

    const ReaderOptions options_;
    const Layout layout_;
    const Clock& clock_;
    const Logger log_;
    uint64_t meta_bytes_ = 0;  // header + manifests; data starts here in each buffer

    std::unique_ptr<UcxLoop> loop_;
    std::unique_ptr<SourceClient> client_;
    std::unique_ptr<SourceServer> server_;
    std::array<Buffer, 2> buffers_;
    LeaseTable table_;
    std::vector<std::shared_ptr<Operation>> ops_;
    std::map<uint64_t, MapEntry> maps_;
    uint64_t next_map_ = 1;
    std::map<LeaseId, uint32_t> relay_lease_shard_;
    std::optional<Version> newest_started_;
    uint64_t poller_ = 0;

    std::mutex post_mu_;
    bool open_ = true;  // guarded by post_mu_: the loop still accepts tasks

    mutable std::mutex mu_;
    std::shared_ptr<const WeightsView> current_;  // guarded by mu_
    std::optional<uint32_t> fetched_slot_;        // guarded by mu_
    Version fetched_version_ = 0;                 // guarded by mu_
    FetchStats last_;                             // guarded by mu_
};

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
        client_ = std::make_unique<SourceClient>(*loop_, clock_, random_id(), log_);
        TANDEM_RETURN_IF_ERROR(client_->start());
        if (options_.relay) {
            server_ = std::make_unique<SourceServer>(*loop_, *this, clock_, options_.server, log_);
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
                        fingerprint_text(version.layout_fingerprint), layout_.fingerprint_text()));
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

void Reader::Core::begin(Operation& op) {
    op.started = clock_.now();
    const Version v = op.version.version;
    if (op.kind == Kind::kPull) {
        std::lock_guard<std::mutex> lock(mu_);
        if ((current_ && current_->version() == v) || (fetched_slot_ && fetched_version_ == v)) {
            op.finished = true;
            op.promise.set_value(Status());
            return;
        }
    }
    if (op.kind == Kind::kPartial) {
        auto plan = layout_.plan_partial(op.selection);
        if (!plan.ok()) {
            fail(op, plan.status());
            return;
        }
        op.plan = std::move(*plan);
        auto buffer = HostBuffer::allocate(op.plan.layout.total_bytes());
        if (!buffer.ok()) {
            fail(op, buffer.status());
            return;
        }
        op.partial = std::move(*buffer);
        if (op.partial.size() > 0) std::memset(op.partial.data(), 0, op.partial.size());
    }
    for (uint32_t s = 0; s < op.version.shard_count; ++s) {
        auto sf = std::make_unique<ShardFetch>();
        sf->shard = *op.version.shard(s);
        if (op.relay) {
            sf->source_name = fmt::format("relay {}", op.relay->reader);
            sf->source_address = op.relay->worker_address;
            sf->source_host = op.relay->host;
            sf->source_pid = op.relay->pid;
            sf->via_relay = true;
        } else {
            sf->source_name = fmt::format("publisher {}", sf->shard.publisher);
            sf->source_address = sf->shard.worker_address;
            sf->source_host = sf->shard.host;
            sf->source_pid = sf->shard.pid;
        }
        if (op.kind == Kind::kPartial) {
            const ByteRange r = sf->shard.range;
            for (const CopyRange& c : op.plan.copies) {
                const uint64_t lo = std::max(c.src_offset, r.begin);
                const uint64_t hi = std::min(c.src_offset + c.bytes, r.end);
                if (lo < hi)
                    sf->copies.push_back(
                        {lo - r.begin, c.dst_offset + (lo - c.src_offset), hi - lo});
            }
            if (sf->copies.empty()) continue;
        }
        sf->state = op.kind == Kind::kPull ? State::kClaim : State::kConnect;
        op.shards.push_back(std::move(sf));
    }
    if (op.shards.empty()) complete(op);
}

Status Reader::Core::control_timeout(ShardFetch& sf, const PendingCall& call) {
    if (clock_.now() - call.sent_at < options_.request_timeout_ms) return Status();
    return deadline_exceeded(fmt::format("{} did not answer {} within {} ms", sf.source_name,
                                         wire::request_type_name(call.request.type),
                                         options_.request_timeout_ms.count()));
}

bool Reader::Core::poll() {
    const auto now = clock_.now();
    bool busy = client_->poll();

    // Pull operations claim the spare buffer first (possibly waiting for relay leases to end).
    for (auto& op : ops_) {
        if (op->finished || op->kind != Kind::kPull || op->shards.empty() ||
            op->shards.front()->state != State::kClaim || now < op->claim_retry) {
            continue;
        }
        auto claim = table_.claim_for_write();
        if (!claim.ok()) {
            fail(*op, unavailable("another fetch is already filling the spare buffer"));
            continue;
        }
        if (claim->all_pinned) {
            fail(*op, unavailable("both reader buffers hold versions in use (the current one "
                                  "and an older one a caller still holds)"));
            continue;
        }
        if (!claim->slot) {
            op->claim_retry = claim->retry_at;
            continue;
        }
        const uint32_t slot = *claim->slot;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (fetched_slot_ == slot) fetched_slot_.reset();
        }
        Buffer& b = buffers_[slot];
        op->slot = slot;
        b.version = op->version.version;
        b.filling = true;
        b.complete = false;
        b.failed = Status();
        b.shards.assign(op->version.shard_count, {});
        uint64_t manifest_offset = kSlotHeaderBytes;
        for (auto& sf : op->shards) {
            auto& st = b.shards[sf->shard.index];
            st.range = sf->shard.range;
            st.manifest_offset = manifest_offset;
            manifest_offset += sizeof(uint64_t) *
                               Manifest::count_chunks(st.range.size(), options_.min_chunk_bytes);
            sf->data_dest = b.memory->data() + meta_bytes_ + st.range.begin;
            sf->manifest_dest = reinterpret_cast<uint64_t*>(b.memory->data() + st.manifest_offset);
            sf->state = State::kConnect;
        }
        begin_write(header(slot));
        if (options_.relay) {
            // Readable by downstream readers chunk by chunk from now on.
            table_.mark_published(slot, op->version.version);
            end_write(header(slot),
                      {op->version.version, layout_.total_bytes(), 0, layout_.fingerprint(), 0});
            newest_started_ = std::max(newest_started_.value_or(0), op->version.version);
            server_->notify();
        }
    }

    for (size_t i = 0; i < ops_.size(); ++i) {
        Operation& op = *ops_[i];
        if (op.finished) continue;
        bool all_done = true;
        for (auto& sf : op.shards) {
            if (op.finished) break;
            if (sf->state != State::kDone) step(op, *sf);
            if (op.finished) break;
            all_done &= sf->state == State::kDone;
            // Gets on shared memory often complete inside the call: keep spinning while chunks
            // are being moved even if nothing is in flight at this instant.
            busy |= !sf->inflight.empty() || sf->state == State::kChunks ||
                    sf->state == State::kMeta || sf->state == State::kHeaderAfter;
        }
        if (!op.finished && all_done) complete(op);
    }
    std::erase_if(ops_, [](const std::shared_ptr<Operation>& op) { return op->finished; });
    renew_maps();
    return busy;
}

void Reader::Core::step(Operation& op, ShardFetch& sf) {
    const auto now = clock_.now();
    const Version v = op.version.version;
    if (sf.conn && now >= sf.next_liveness) {
        sf.next_liveness = now + kLivenessInterval;
        Status alive = client_->check_alive(*sf.conn);
        if (!alive.ok()) {
            fail(op,
                 alive.with_context(fmt::format("reading version {} shard {}", v, sf.shard.index)));
            return;
        }
    }
    if (sf.lease_held && op.kind != Kind::kMap) renew_leases(op, sf);

    auto wait_call = [&](const std::shared_ptr<PendingCall>& call) -> std::optional<Status> {
        if (!call->done()) {
            Status t = control_timeout(sf, *call);
            if (!t.ok()) return t;
            return std::nullopt;
        }
        return call->status;
    };

    switch (sf.state) {
        case State::kClaim:
        case State::kDone:
            return;
        case State::kConnect: {
            auto conn =
                client_->connect(sf.source_address, sf.source_name, sf.source_host, sf.source_pid);
            if (!conn.ok()) {
                fail(op, conn.status());
                return;
            }
            sf.conn = *conn;
            wire::Request rq;
            rq.type = wire::RequestType::kHello;
            sf.call = client_->call(*sf.conn, rq, loop_->address());
            sf.state = State::kHello;
            return;
        }
        case State::kHello: {
            auto st = wait_call(sf.call);
            if (!st) return;
            if (!st->ok()) {
                fail(op, st->with_context(fmt::format("connecting to {}", sf.source_name)));
                return;
            }
            wire::Request rq;
            rq.type = wire::RequestType::kAcquire;
            rq.job = op.version.job.number();
            rq.version = v;
            rq.shard = sf.shard.index;
            sf.call = client_->call(*sf.conn, rq);
            sf.state = State::kAcquire;
            return;
        }
        case State::kAcquire: {
            auto st = wait_call(sf.call);
            if (!st) return;
            if (!st->ok()) {
                fail(op, st->with_context(fmt::format("leasing version {} shard {} from {}", v,
                                                      sf.shard.index, sf.source_name)));
                return;
            }
            Status accepted = accept_lease(op, sf);
            if (!accepted.ok()) {
                fail(op, accepted);
                return;
            }
            if (op.kind == Kind::kMap) {
                sf.state = State::kDone;
                return;
            }
            const size_t manifest_bytes = sf.lease.chunk_count * sizeof(uint64_t);
            if (op.kind != Kind::kPull) {
                sf.manifest_storage.assign(sf.lease.chunk_count, 0);
                sf.manifest_dest = sf.manifest_storage.data();
            }
            auto* manifest_dest = reinterpret_cast<std::byte*>(sf.manifest_dest);
            if (sf.use_get) {
                ucp_request_param_t p{};
                sf.meta_get[0] = ucx::Request(
                    ucp_get_nbx(sf.conn->endpoint->handle(), sf.header_before.data(),
                                kSlotHeaderBytes, sf.lease.region_address, sf.rkey->handle(), &p),
                    loop_->worker().handle());
                sf.meta_get[1] = ucx::Request(
                    ucp_get_nbx(sf.conn->endpoint->handle(), manifest_dest, manifest_bytes,
                                sf.lease.region_address + sf.lease.manifest_offset,
                                sf.rkey->handle(), &p),
                    loop_->worker().handle());
            } else {
                wire::Request rq;
                rq.type = wire::RequestType::kRead;
                rq.lease_id = sf.lease.lease_id;
                rq.offset = 0;
                rq.length = kSlotHeaderBytes;
                sf.meta_call[0] =
                    client_->call(*sf.conn, rq, {}, sf.header_before.data(), kSlotHeaderBytes);
                rq.offset = sf.lease.manifest_offset;
                rq.length = manifest_bytes;
                sf.meta_call[1] = client_->call(*sf.conn, rq, {}, manifest_dest, manifest_bytes);
            }
            sf.phase_started = now;
            sf.state = State::kMeta;
            return;
        }
        case State::kMeta: {
            for (int i = 0; i < 2; ++i) {
                Status st;
                if (sf.use_get) {
                    const ucs_status_t u = sf.meta_get[i].poll();
                    if (u == UCS_INPROGRESS) {
                        if (now - sf.phase_started >= options_.request_timeout_ms) {
                            fail(op, deadline_exceeded(fmt::format(
                                         "{} did not deliver the header and manifest of version "
                                         "{} within {} ms",
                                         sf.source_name, v, options_.request_timeout_ms.count())));
                        }
                        return;
                    }
                    st = ucx::ucx_status(u, "reading header and manifest");
                } else {
                    auto r = wait_call(sf.meta_call[i]);
                    if (!r) return;
                    st = *r;
                }
                if (!st.ok()) {
                    fail(op, st.with_context(fmt::format("reading version {} shard {} from {}", v,
                                                         sf.shard.index, sf.source_name)));
                    return;
                }
            }
            Status meta = check_meta(op, sf);
            if (!meta.ok()) {
                fail(op, meta);
                return;
            }
            sf.last_progress = now;
            sf.state = State::kChunks;
            step_chunks(op, sf);
            return;
        }
        case State::kChunks:
            step_chunks(op, sf);
            return;
        case State::kHeaderAfter: {
            Status st;
            if (sf.use_get) {
                const ucs_status_t u = sf.meta_get[0].poll();
                if (u == UCS_INPROGRESS) {
                    if (now - sf.phase_started >= options_.request_timeout_ms) {
                        fail(op, deadline_exceeded(fmt::format(
                                     "{} did not deliver the header of version {} within {} ms",
                                     sf.source_name, v, options_.request_timeout_ms.count())));
                    }
                    return;
                }
                st = ucx::ucx_status(u, "re-reading the header");
            } else {
                auto r = wait_call(sf.meta_call[0]);
                if (!r) return;
                st = *r;
            }
            if (!st.ok()) {
                fail(op, st.with_context(fmt::format("re-reading the header of version {} from {}",
                                                     v, sf.source_name)));
                return;
            }
            const HeaderSnapshot before = decode_header(sf.header_before);
            const HeaderSnapshot after = decode_header(sf.header_after);
            if (!after.same_write_as(before)) {
                fail(op, unavailable(fmt::format(
                             "version {} was overwritten in slot {} of {} during the read (header "
                             "seq {} -> {}, version {}); the lease expired: read a newer version",
                             v, sf.lease.slot, sf.source_name, before.seq, after.seq,
                             after.fields.version)));
                return;
            }
            release_lease(sf);
            sf.state = State::kDone;
            return;
        }
    }
}

Status Reader::Core::accept_lease(Operation& op, ShardFetch& sf) {
    const wire::Reply& r = sf.call->reply;
    const Version v = op.version.version;
    sf.lease = r;
    sf.lease_held = true;
    sf.rkey_bytes = sf.call->reply_payload;
    sf.next_renew = clock_.now() + std::chrono::milliseconds(r.ttl_ms / 3);
    if (r.layout_fingerprint != layout_.fingerprint()) {
        return invalid_argument(fmt::format(
            "layout mismatch: {} serves version {} with layout {}, this reader expects {}",
            sf.source_name, v, fingerprint_text(r.layout_fingerprint), layout_.fingerprint_text()));
    }
    if (r.version != v || r.data_bytes != sf.shard.range.size() ||
        r.chunk_bytes < options_.min_chunk_bytes ||
        r.chunk_count != Manifest::count_chunks(r.data_bytes, r.chunk_bytes) ||
        r.manifest_offset + r.chunk_count * sizeof(uint64_t) > r.region_bytes ||
        r.data_offset + r.data_bytes > r.region_bytes) {
        return invalid_argument(fmt::format(
            "{} offered an inconsistent lease for version {} shard {} (version {}, {} bytes in "
            "{} chunks of {}, region of {} bytes)",
            sf.source_name, v, sf.shard.index, r.version, r.data_bytes, r.chunk_count,
            r.chunk_bytes, r.region_bytes));
    }
    if (r.manifest_digest != sf.shard.manifest_digest) {
        return data_loss(fmt::format(
            "{} holds version {} shard {} with manifest {:016x} but the version table says "
            "{:016x}",
            sf.source_name, v, sf.shard.index, r.manifest_digest, sf.shard.manifest_digest));
    }
    // Native one-sided gets: the NIC does them (an RDMA lane carries RMA), or the slot is a
    // shared-memory segment UCX attached here. Otherwise UCX would emulate them over active
    // messages, and our own request/response path is faster.
    TANDEM_ASSIGN_OR_RETURN(sf.rkey,
                            sf.conn->rkey(r.region_address, r.region_bytes, sf.rkey_bytes));
    const bool native =
        sf.conn->endpoint->rdma_rma() || sf.rkey->directly_addressable(r.region_address);
    sf.use_get =
        options_.read_path == ReadPath::kGet || (options_.read_path == ReadPath::kAuto && native);
    sf.piece_bytes = std::min<uint64_t>(
        r.chunk_bytes, sf.use_get ? options_.piece_bytes : options_.am_piece_bytes);
    sf.ready = r.chunks_ready;
    if (op.kind == Kind::kPartial) {
        // Enough chunk-sized slots for the reads in flight, plus one being finished.
        const size_t pieces = (r.chunk_bytes + sf.piece_bytes - 1) / sf.piece_bytes;
        const size_t slots = options_.window_reads / std::max<size_t>(pieces, 1) + 2;
        TANDEM_ASSIGN_OR_RETURN(sf.scratch, HostBuffer::allocate(slots * r.chunk_bytes));
        for (size_t i = 0; i < slots; ++i) sf.free_scratch.push_back(i);
    }
    return Status();
}

Status Reader::Core::check_meta(Operation& op, ShardFetch& sf) {
    const Version v = op.version.version;
    const HeaderSnapshot h = decode_header(sf.header_before);
    if (!h.closed()) {
        return unavailable(fmt::format("slot {} of {} is being rewritten; version {} is gone",
                                       sf.lease.slot, sf.source_name, v));
    }
    if (h.fields.version != v) {
        return unavailable(fmt::format("slot {} of {} holds version {}, not {} (lease expired?)",
                                       sf.lease.slot, sf.source_name, h.fields.version, v));
    }
    if (h.fields.layout_fingerprint != layout_.fingerprint()) {
        return invalid_argument(
            fmt::format("layout mismatch: slot {} of {} holds layout {}, this reader expects {}",
                        sf.lease.slot, sf.source_name,
                        fingerprint_text(h.fields.layout_fingerprint), layout_.fingerprint_text()));
    }
    sf.manifest =
        Manifest(sf.lease.chunk_bytes, sf.lease.data_bytes,
                 std::vector<uint64_t>(sf.manifest_dest, sf.manifest_dest + sf.lease.chunk_count));
    if (sf.manifest.digest() != sf.shard.manifest_digest) {
        return data_loss(fmt::format(
            "the manifest of version {} shard {} read from {} has digest {:016x}, the version "
            "table says {:016x}",
            v, sf.shard.index, sf.source_name, sf.manifest.digest(), sf.shard.manifest_digest));
    }
    const size_t count = sf.manifest.chunk_count();
    sf.rereads.assign(count, 0);
    if (op.kind == Kind::kPull) {
        auto& st = buffers_[op.slot].shards[sf.shard.index];
        st.chunk_count = count;
        st.chunk_bytes = sf.lease.chunk_bytes;
        st.manifest_digest = sf.shard.manifest_digest;
        st.verified.assign(count, 0);
        st.prefix = 0;
        st.manifest_ready = true;
        if (server_) server_->notify();
        for (size_t c = 0; c < count; ++c) sf.todo.push_back(c);
    } else {
        for (size_t c = 0; c < count; ++c) {
            const ByteRange r = sf.manifest.chunk_range(c);
            for (const CopyRange& copy : sf.copies) {
                if (copy.src_offset < r.end && r.begin < copy.src_offset + copy.bytes) {
                    sf.todo.push_back(c);
                    break;
                }
            }
        }
    }
    sf.needed = sf.todo.size();
    return Status();
}

bool Reader::Core::start_chunk(Operation& op, ShardFetch& sf) {
    if (sf.todo.empty()) return false;
    const size_t c = sf.todo.front();
    if (sf.use_get && sf.via_relay && c >= sf.ready) return false;
    if (op.kind == Kind::kPartial && sf.free_scratch.empty()) return false;
    sf.todo.pop_front();
    const ByteRange r = sf.manifest.chunk_range(c);
    ChunkWork& work = sf.active[c];
    work = ChunkWork{};
    work.pieces = std::max<size_t>(1, (r.size() + sf.piece_bytes - 1) / sf.piece_bytes);
    work.done.assign(work.pieces, 0);
    XXH3_64bits_reset(work.state.get());
    if (op.kind == Kind::kPartial) {
        work.scratch = sf.free_scratch.back();
        sf.free_scratch.pop_back();
        work.dest = sf.scratch.data() + work.scratch * sf.lease.chunk_bytes;
    } else {
        work.dest = sf.data_dest + r.begin;
    }
    return true;
}

void Reader::Core::issue_read(Operation& op, ShardFetch& sf, size_t chunk, ChunkWork& work) {
    (void)op;
    const ByteRange r = sf.manifest.chunk_range(chunk);
    const size_t piece = work.issued++;
    const uint64_t begin = piece * sf.piece_bytes;
    const uint64_t length = std::min<uint64_t>(sf.piece_bytes, r.size() - begin);
    InFlight f;
    f.chunk = chunk;
    f.piece = piece;
    std::byte* dest = work.dest + begin;
    const uint64_t offset = sf.lease.data_offset + r.begin + begin;
    if (sf.use_get) {
        ucp_request_param_t p{};
        f.get = ucx::Request(ucp_get_nbx(sf.conn->endpoint->handle(), dest, length,
                                         sf.lease.region_address + offset, sf.rkey->handle(), &p),
                             loop_->worker().handle());
    } else {
        wire::Request rq;
        rq.type = wire::RequestType::kRead;
        rq.lease_id = sf.lease.lease_id;
        rq.offset = offset;
        rq.length = length;
        f.call = client_->call(*sf.conn, rq, {}, dest, length);
    }
    sf.inflight.push_back(std::move(f));
}

void Reader::Core::step_chunks(Operation& op, ShardFetch& sf) {
    const auto now = clock_.now();
    // Reading a relay with gets: ask how far it has verified before reading past that.
    if (sf.use_get && sf.via_relay) {
        if (sf.await_call && sf.await_call->done()) {
            if (!sf.await_call->status.ok()) {
                fail(op, sf.await_call->status.with_context(
                             fmt::format("waiting for chunks from {}", sf.source_name)));
                return;
            }
            sf.ready = std::max(sf.ready, sf.await_call->reply.chunks_ready);
            sf.await_call.reset();
        }
        if (!sf.await_call && !sf.todo.empty() && sf.todo.front() >= sf.ready) {
            wire::Request rq;
            rq.type = wire::RequestType::kAwait;
            rq.lease_id = sf.lease.lease_id;
            rq.length = std::min<uint64_t>(sf.manifest.chunk_count(), sf.todo.front() + 1);
            sf.await_call = client_->call(*sf.conn, rq);
        }
    }
    // Keep window_reads pieces in flight: finish issuing started chunks first, in order.
    while (sf.inflight.size() < options_.window_reads) {
        ChunkWork* next = nullptr;
        size_t chunk = 0;
        for (auto& [c, work] : sf.active) {
            if (work.issued < work.pieces) {
                next = &work;
                chunk = c;
                break;
            }
        }
        if (next == nullptr) {
            if (!start_chunk(op, sf)) break;
            continue;
        }
        issue_read(op, sf, chunk, *next);
        // A get from an attached shared-memory segment is a copy done inside the call:
        // checksum the piece now, while it is still in cache.
        InFlight& last = sf.inflight.back();
        if (sf.use_get && last.get.poll() != UCS_INPROGRESS) {
            const ucs_status_t u = last.get.poll();
            const size_t piece = last.piece;
            sf.inflight.pop_back();
            if (u != UCS_OK) {
                fail(op, ucx::ucx_status(u, "get").with_context(
                             fmt::format("reading chunk {} of version {} shard {} from {}", chunk,
                                         op.version.version, sf.shard.index, sf.source_name)));
                return;
            }
            sf.last_progress = now;
            piece_done(op, sf, chunk, piece);
            if (op.finished) return;
        }
    }
    // Pieces complete in order for gets; replies may overtake each other, so scan them all.
    for (auto it = sf.inflight.begin(); it != sf.inflight.end();) {
        Status st;
        if (sf.use_get) {
            const ucs_status_t u = it->get.poll();
            if (u == UCS_INPROGRESS) {
                ++it;
                continue;
            }
            st = ucx::ucx_status(u, "get");
        } else {
            if (!it->call->done()) {
                ++it;
                continue;
            }
            st = it->call->status;
        }
        if (!st.ok()) {
            fail(op, st.with_context(fmt::format("reading chunk {} of version {} shard {} from {}",
                                                 it->chunk, op.version.version, sf.shard.index,
                                                 sf.source_name)));
            return;
        }
        const size_t chunk = it->chunk;
        const size_t piece = it->piece;
        it = sf.inflight.erase(it);
        sf.last_progress = now;
        piece_done(op, sf, chunk, piece);
        if (op.finished) return;
    }
    const bool waiting = !sf.inflight.empty() || (sf.await_call != nullptr);
    if (waiting && now - sf.last_progress >= options_.stall_timeout_ms) {
        fail(op, deadline_exceeded(fmt::format(
                     "no data from {} for {} ms while reading version {} shard {} ({} of {} "
                     "chunks verified)",
                     sf.source_name, options_.stall_timeout_ms.count(), op.version.version,
                     sf.shard.index, sf.verified, sf.needed)));
        return;
    }
    if (sf.verified == sf.needed && sf.todo.empty() && sf.inflight.empty() && sf.active.empty()) {
        if (sf.use_get) {
            ucp_request_param_t p{};
            sf.meta_get[0] = ucx::Request(
                ucp_get_nbx(sf.conn->endpoint->handle(), sf.header_after.data(), kSlotHeaderBytes,
                            sf.lease.region_address, sf.rkey->handle(), &p),
                loop_->worker().handle());
        } else {
            wire::Request rq;
            rq.type = wire::RequestType::kRead;
            rq.lease_id = sf.lease.lease_id;
            rq.offset = 0;
            rq.length = kSlotHeaderBytes;
            sf.meta_call[0] =
                client_->call(*sf.conn, rq, {}, sf.header_after.data(), kSlotHeaderBytes);
        }
        sf.phase_started = now;
        sf.state = State::kHeaderAfter;
    }
}

void Reader::Core::piece_done(Operation& op, ShardFetch& sf, size_t chunk, size_t piece) {
    auto it = sf.active.find(chunk);
    if (it == sf.active.end()) return;
    ChunkWork& work = it->second;
    work.done[piece] = 1;
    const ByteRange r = sf.manifest.chunk_range(chunk);
    while (work.hashed < work.pieces && work.done[work.hashed] != 0) {
        const uint64_t begin = work.hashed * sf.piece_bytes;
        const uint64_t length = std::min<uint64_t>(sf.piece_bytes, r.size() - begin);
        XXH3_64bits_update(work.state.get(), work.dest + begin, length);
        ++work.hashed;
    }
    if (work.hashed < work.pieces) return;
    const uint64_t actual = XXH3_64bits_digest(work.state.get());
    const uint64_t expected = sf.manifest.checksums()[chunk];
    const size_t scratch = work.scratch;
    sf.active.erase(it);
    if (actual == expected) {
        chunk_verified(op, sf, chunk, scratch);
        return;
    }
    if (sf.rereads[chunk] == 0) {
        sf.rereads[chunk] = 1;
        ++sf.rereads_done;
        if (scratch != SIZE_MAX) sf.free_scratch.push_back(scratch);
        sf.todo.push_front(chunk);
        log_.with({.version = op.version.version})
            .warn(
                "chunk {} of shard {} at offset {} from {} failed its checksum; reading it "
                "again",
                chunk, sf.shard.index, sf.shard.range.begin + r.begin, sf.source_name);
        return;
    }
    fail(op, data_loss(fmt::format(
                 "version {} refused: chunk {} of shard {} at offset {} ({} bytes) from {} failed "
                 "its checksum twice (got {:016x}, manifest says {:016x})",
                 op.version.version, chunk, sf.shard.index, sf.shard.range.begin + r.begin,
                 r.size(), sf.source_name, actual, expected)));
}

void Reader::Core::chunk_verified(Operation& op, ShardFetch& sf, size_t chunk, size_t scratch) {
    ++sf.verified;
    if (op.kind == Kind::kPull) {
        auto& st = buffers_[op.slot].shards[sf.shard.index];
        st.verified[chunk] = 1;
        while (st.prefix < st.chunk_count && st.verified[st.prefix] != 0) ++st.prefix;
        if (server_) server_->notify();
        return;
    }
    const ByteRange r = sf.manifest.chunk_range(chunk);
    const std::byte* src = sf.scratch.data() + scratch * sf.lease.chunk_bytes;
    for (const CopyRange& c : sf.copies) {
        const uint64_t lo = std::max(c.src_offset, r.begin);
        const uint64_t hi = std::min(c.src_offset + c.bytes, r.end);
        if (lo >= hi) continue;
        std::memcpy(op.partial.data() + c.dst_offset + (lo - c.src_offset), src + (lo - r.begin),
                    hi - lo);
    }
    sf.free_scratch.push_back(scratch);
}

void Reader::Core::release_lease(ShardFetch& sf) {
    if (!sf.lease_held || !sf.conn) return;
    sf.lease_held = false;
    if (sf.conn->endpoint->failed()) return;
    wire::Request rq;
    rq.type = wire::RequestType::kRelease;
    rq.lease_id = sf.lease.lease_id;
    client_->send_only(*sf.conn, rq);
}

void Reader::Core::renew_leases(Operation& op, ShardFetch& sf) {
    const auto now = clock_.now();
    if (sf.renew_call) {
        if (sf.renew_call->done()) {
            if (!sf.renew_call->status.ok()) {
                // Reading on is still safe: the header re-check catches an overwrite.
                log_.with({.version = op.version.version})
                    .warn("renewing the lease on version {} shard {} at {} failed: {}",
                          op.version.version, sf.shard.index, sf.source_name,
                          sf.renew_call->status.message());
            }
            sf.renew_call.reset();
        } else if (now - sf.renew_call->sent_at >= options_.request_timeout_ms) {
            client_->cancel(sf.renew_call);
            sf.renew_call.reset();
        }
        return;
    }
    if (now < sf.next_renew) return;
    wire::Request rq;
    rq.type = wire::RequestType::kRenew;
    rq.lease_id = sf.lease.lease_id;
    sf.renew_call = client_->call(*sf.conn, rq);
    sf.next_renew = now + std::chrono::milliseconds(std::max<uint64_t>(sf.lease.ttl_ms / 3, 1));
}

void Reader::Core::complete(Operation& op) {
    const Version v = op.version.version;
    const auto now = clock_.now();
    FetchStats stats;
    stats.version = v;
    stats.seconds = seconds_between(op.started, now);
    stats.via_relay = op.relay.has_value();
    for (const auto& sf : op.shards) {
        stats.chunks += sf->needed;
        stats.rereads += sf->rereads_done;
        stats.path = sf->use_get ? ReadPath::kGet : ReadPath::kActiveMessage;
        for (size_t c = 0; c < sf->manifest.chunk_count() && op.kind != Kind::kMap; ++c) {
            if (op.kind == Kind::kPull) {
                stats.bytes += sf->manifest.chunk_range(c).size();
            }
        }
    }
    if (op.kind == Kind::kMap) {
        Status mapped = finish_map(op);
        if (!mapped.ok()) {
            fail(op, mapped);
            return;
        }
    }
    op.finished = true;
    if (op.kind == Kind::kPull) {
        Buffer& b = buffers_[op.slot];
        b.filling = false;
        b.complete = true;
        if (!options_.relay) {
            table_.mark_published(op.slot, v);
            end_write(header(op.slot), {v, layout_.total_bytes(), 0, layout_.fingerprint(), 0});
        }
        std::lock_guard<std::mutex> lock(mu_);
        fetched_slot_ = op.slot;
        fetched_version_ = v;
        last_ = stats;
    }
    log_.with({.version = v})
        .debug("{} of version {} done in {:.3f} s ({} chunks, {} re-read, {} path{})",
               op.kind == Kind::kPull  ? "fetch"
               : op.kind == Kind::kMap ? "map"
                                       : "partial read",
               v, stats.seconds, stats.chunks, stats.rereads, read_path_name(stats.path),
               stats.via_relay ? ", via relay" : "");
    op.promise.set_value(Status());
}

void Reader::Core::fail(Operation& op, const Status& status) {
    if (op.finished) return;
    op.finished = true;
    log_.with({.version = op.version.version})
        .warn("reading version {} failed: {}", op.version.version, status.to_string());
    for (auto& sfp : op.shards) {
        ShardFetch& sf = *sfp;
        client_->cancel(sf.call);
        client_->cancel(sf.meta_call[0]);
        client_->cancel(sf.meta_call[1]);
        client_->cancel(sf.await_call);
        client_->cancel(sf.renew_call);
        for (auto& f : sf.inflight) client_->cancel(f.call);
        sf.inflight.clear();
        sf.active.clear();
        sf.todo.clear();
        bool suspect = false;
        if (sf.conn) {
            suspect = status.code() == StatusCode::kDeadlineExceeded ||
                      !client_->check_alive(*sf.conn).ok();
            if (!suspect) release_lease(sf);
            if (suspect) client_->forget(sf.conn, UCS_ERR_TIMED_OUT);
        }
        sf.lease_held = false;
    }
    if (op.kind == Kind::kPull && !op.shards.empty() && op.shards.front()->state != State::kClaim) {
        Buffer& b = buffers_[op.slot];
        b.filling = false;
        b.complete = false;
        b.failed = status;
        begin_write(header(op.slot));  // downstream readers see the buffer is gone
        table_.reset(op.slot);
        if (server_) server_->notify();
    }
    op.promise.set_value(status);
}

Status Reader::Core::finish_map(Operation& op) {
    const Version v = op.version.version;
    std::vector<MappedWeights::Shard> shards;
    for (const auto& sf : op.shards) {
        if (sf->shard.shm_path.empty() || sf->shard.host != host_identity()) {
            return invalid_argument(
                fmt::format("version {} shard {} lives on host {}; mapping needs this host ({})", v,
                            sf->shard.index, sf->shard.host, host_identity()));
        }
        auto mapping = ReadOnlyMapping::open(sf->shard.shm_path);
        if (!mapping.ok()) {
            return mapping.status().with_context(
                fmt::format("mapping version {} shard {}", v, sf->shard.index));
        }
        if (mapping->size() < sf->lease.data_offset + sf->lease.data_bytes) {
            return invalid_argument(fmt::format("{} is {} bytes, too small for the lease",
                                                sf->shard.shm_path, mapping->size()));
        }
        const HeaderSnapshot h = read_header(*reinterpret_cast<const SlotHeader*>(mapping->data()));
        if (!h.closed() || h.fields.version != v ||
            h.fields.layout_fingerprint != layout_.fingerprint() ||
            h.fields.manifest_digest != sf->shard.manifest_digest) {
            return unavailable(fmt::format(
                "the mapped slot {} no longer holds version {} (header: version {}, seq {})",
                sf->lease.slot, v, h.fields.version, h.seq));
        }
        shards.push_back({sf->shard.range, std::move(*mapping), sf->lease.data_offset, h.seq});
    }
    MapEntry entry;
    entry.lease_lost = std::make_shared<std::atomic<bool>>(false);
    for (auto& sf : op.shards) {
        entry.leases.push_back({sf->conn, sf->lease.lease_id, nullptr});
        entry.ttl = std::chrono::milliseconds(sf->lease.ttl_ms);
        sf->lease_held = false;  // the map entry renews and releases it now
    }
    entry.next_renew = clock_.now() + entry.ttl / 3;
    const uint64_t id = next_map_++;
    auto mapped = std::make_shared<MappedWeights>(v, layout_, std::move(shards), entry.lease_lost);
    mapped->set_on_destroy([weak = weak_from_this(), id] {
        if (auto core = weak.lock()) {
            core->post_if_open([raw = core.get(), id] { raw->drop_map(id); });
        }
    });
    maps_.emplace(id, std::move(entry));
    op.mapped = std::move(mapped);
    return Status();
}

void Reader::Core::drop_map(uint64_t id) {
    auto it = maps_.find(id);
    if (it == maps_.end()) return;
    for (auto& l : it->second.leases) {
        client_->cancel(l.renew_call);
        if (l.conn->endpoint->failed()) continue;
        wire::Request rq;
        rq.type = wire::RequestType::kRelease;
        rq.lease_id = l.lease;
        client_->send_only(*l.conn, rq);
    }
    maps_.erase(it);
}

void Reader::Core::renew_maps() {
    const auto now = clock_.now();
    for (auto& [id, entry] : maps_) {
        bool renew_now = now >= entry.next_renew;
        for (auto& l : entry.leases) {
            if (l.renew_call) {
                if (l.renew_call->done()) {
                    if (!l.renew_call->status.ok()) {
                        // Relaxed: see MappedWeights::still_valid.
                        entry.lease_lost->store(true, std::memory_order_relaxed);
                        log_.warn("lost the lease on a mapped version: {}",
                                  l.renew_call->status.message());
                    }
                    l.renew_call.reset();
                } else if (now - l.renew_call->sent_at >= options_.request_timeout_ms) {
                    client_->cancel(l.renew_call);
                    l.renew_call.reset();
                    entry.lease_lost->store(true, std::memory_order_relaxed);  // as above
                }
            }
            if (renew_now && !l.renew_call) {
                if (!client_->check_alive(*l.conn).ok()) {
                    entry.lease_lost->store(true, std::memory_order_relaxed);  // as above
                    continue;
                }
                wire::Request rq;
                rq.type = wire::RequestType::kRenew;
                rq.lease_id = l.lease;
                l.renew_call = client_->call(*l.conn, rq);
            }
        }
        if (renew_now)
            entry.next_renew = now + std::max(entry.ttl / 3, std::chrono::milliseconds(1));
    }
}

// ---- the relay side: this reader's buffers as a source ----

Result<std::optional<LeaseOffer>> Reader::Core::acquire(JobId job, Version version, uint32_t shard,
                                                        const std::string& holder) {
    if (job != options_.job) {
        return not_found(fmt::format("relay {} serves {}, not {}", options_.reader_id,
                                     options_.job.str(), job.str()));
    }
    const auto slot = table_.slot_of(version);
    if (!slot) {
        // Not started yet: wait for it (the coordinator may assign the tree before we fetch).
        if (!newest_started_ || version > *newest_started_) return std::optional<LeaseOffer>();
        return not_found(
            fmt::format("relay {} no longer holds version {}", options_.reader_id, version));
    }
    Buffer& b = buffers_[*slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, version, b.failed.message()));
    }
    if (shard >= b.shards.size()) {
        return not_found(fmt::format("version {} has no shard {}", version, shard));
    }
    const auto& st = b.shards[shard];
    if (!st.manifest_ready) return std::optional<LeaseOffer>();
    TANDEM_ASSIGN_OR_RETURN(LeaseGrant grant, table_.acquire(version, holder));
    relay_lease_shard_[grant.id] = shard;
    LeaseOffer o;
    o.grant = grant;
    o.ttl = options_.relay_lease_ttl_ms;
    o.layout_fingerprint = layout_.fingerprint();
    o.region_address = b.memory->registration().address();
    o.region_bytes = b.memory->size();
    o.manifest_offset = st.manifest_offset;
    o.chunk_count = st.chunk_count;
    o.data_offset = meta_bytes_ + st.range.begin;
    o.data_bytes = st.range.size();
    o.chunk_bytes = st.chunk_bytes;
    o.manifest_digest = st.manifest_digest;
    o.chunks_ready = st.prefix;
    o.packed_rkey = &b.memory->registration().packed_rkey();
    return std::optional<LeaseOffer>(o);
}

Result<LeaseGrant> Reader::Core::renew(LeaseId id) { return table_.renew(id); }

void Reader::Core::release(LeaseId id) {
    table_.release(id);
    relay_lease_shard_.erase(id);
}

Result<const std::byte*> Reader::Core::readable(LeaseId id, uint64_t offset, uint64_t length) {
    auto grant = table_.find(id);
    auto shard = relay_lease_shard_.find(id);
    if (!grant || shard == relay_lease_shard_.end()) {
        return not_found(fmt::format("lease {} expired or was never granted", id));
    }
    Buffer& b = buffers_[grant->slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, grant->version, b.failed.message()));
    }
    if (b.version != grant->version) {
        return unavailable(fmt::format("relay buffer no longer holds version {}", grant->version));
    }
    if (offset > b.memory->size() || length > b.memory->size() - offset) {
        return invalid_argument(
            fmt::format("read of [{}, +{}) leaves the relay buffer", offset, length));
    }
    const auto& st = b.shards[shard->second];
    const std::byte* p = b.memory->data() + offset;
    if (offset + length <= meta_bytes_) return st.manifest_ready ? p : nullptr;
    const uint64_t begin = meta_bytes_ + st.range.begin;
    if (offset < begin || offset + length > begin + st.range.size() || st.chunk_bytes == 0) {
        return invalid_argument(
            fmt::format("read of [{}, +{}) is outside shard {}", offset, length, shard->second));
    }
    if (length == 0) return p;
    const uint64_t first = (offset - begin) / st.chunk_bytes;
    const uint64_t last = (offset - begin + length - 1) / st.chunk_bytes;
    for (uint64_t c = first; c <= last; ++c) {
        if (st.verified[c] == 0) return static_cast<const std::byte*>(nullptr);
    }
    return p;
}

Result<uint64_t> Reader::Core::chunks_ready(LeaseId id) {
    auto grant = table_.find(id);
    auto shard = relay_lease_shard_.find(id);
    if (!grant || shard == relay_lease_shard_.end()) {
        return not_found(fmt::format("lease {} expired", id));
    }
    Buffer& b = buffers_[grant->slot];
    if (!b.failed.ok()) {
        return unavailable(fmt::format("relay {} failed to fetch version {}: {}",
                                       options_.reader_id, grant->version, b.failed.message()));
    }
    return b.shards[shard->second].prefix;
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

}  // namespace tandem::weights
