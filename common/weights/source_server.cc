#include "common/weights/source_server.h"

#include <algorithm>

#include <fmt/format.h>

namespace tandem::weights {

namespace {

constexpr auto kParkSweep = std::chrono::milliseconds(50);

std::vector<std::byte> text_bytes(std::string_view text) {
    const auto* b = reinterpret_cast<const std::byte*>(text.data());
    return {b, b + text.size()};
}

std::string reader_name(uint64_t reader_id) { return fmt::format("reader-{:016x}", reader_id); }

}  // namespace

SourceServer::SourceServer(UcxLoop& loop, SlotProvider& provider, const Clock& clock,
                           SourceServerOptions options, Logger log)
    : loop_(loop), provider_(provider), clock_(clock), options_(options), log_(std::move(log)) {}

SourceServer::~SourceServer() {
    if (poller_ != 0) loop_.remove_poller(poller_);
    loop_.worker().drop_am_messages(wire::kRequestAmId);  // late requests: dropped quietly
    // Close each endpoint first: closing completes the replies in flight, whose headers and
    // payloads the Send entries keep alive until then.
    for (auto& [id, conn] : readers_) conn.endpoint.reset();
    readers_.clear();
}

Status SourceServer::start() {
    TANDEM_RETURN_IF_ERROR(loop_.worker().set_am_handler(
        wire::kRequestAmId,
        [this](std::span<const std::byte> header, void* data, size_t length,
               const ucp_am_recv_param_t& param) -> ucs_status_t {
            auto request = wire::decode<wire::Request>(header);
            if (!request || (param.recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
                log_.warn("dropping a malformed request ({} header bytes)", header.size());
                return UCS_OK;
            }
            const auto* bytes = static_cast<const std::byte*>(data);
            inbox_.push_back({*request, {bytes, bytes + length}, clock_.now()});
            return UCS_OK;
        }));
    poller_ = loop_.add_poller([this] { return poll(); });
    last_sweep_ = clock_.now();
    return Status();
}

bool SourceServer::poll() {
    const auto now = clock_.now();
    if (!held_.empty()) {
        // Held requests the hook lets go now are handled first, in their order.
        std::deque<Incoming> still;
        std::deque<Incoming> go;
        for (auto& in : held_) {
            (options_.hold_request(in.request) ? still : go).push_back(std::move(in));
        }
        held_.swap(still);
        for (auto it = go.rbegin(); it != go.rend(); ++it) inbox_.push_front(std::move(*it));
    }
    while (!inbox_.empty()) {
        Incoming in = std::move(inbox_.front());
        inbox_.pop_front();
        if (options_.hold_request && options_.hold_request(in.request)) {
            held_.push_back(std::move(in));
            continue;
        }
        ++stats_.requests;
        if (!handle(in)) parked_.push_back(std::move(in));
    }
    const bool sweep = now - last_sweep_ >= kParkSweep;
    if ((notified_ || sweep) && !parked_.empty()) {
        notified_ = false;
        // handle() may drop a reader, which edits parked_: work on a detached copy.
        std::deque<Incoming> retry;
        retry.swap(parked_);
        for (auto& in : retry) {
            if (handle(in)) continue;
            if (now - in.received >= options_.park_timeout_ms) {
                reply_error(in.request.reader_id, in.request,
                            deadline_exceeded(fmt::format(
                                "{} of version {} waited {} ms for data that did not arrive",
                                wire::request_type_name(in.request.type), in.request.version,
                                options_.park_timeout_ms.count())));
                continue;
            }
            parked_.push_back(std::move(in));
        }
    }

    bool busy = false;
    std::vector<std::pair<uint64_t, std::string>> dead;
    for (auto& [id, conn] : readers_) {
        std::erase_if(conn.sends, [](Send& s) { return !s.request.pending(); });
        if (conn.endpoint->failed()) {
            dead.emplace_back(id, conn.endpoint->error().message());
        } else if (!conn.sends.empty() &&
                   now - conn.sends.front().started >= options_.send_timeout_ms) {
            dead.emplace_back(id, fmt::format("a reply did not complete in {} ms",
                                              options_.send_timeout_ms.count()));
        } else if (sweep && conn.sends.empty() &&
                   now - conn.last_active >= options_.idle_timeout_ms) {
            dead.emplace_back(id, "idle");
        }
        busy |= !conn.sends.empty();
    }
    for (const auto& [id, why] : dead) drop_reader(id, why);
    if (sweep) last_sweep_ = now;
    return busy;
}

bool SourceServer::handle(Incoming& in) {
    const wire::Request& rq = in.request;
    if (rq.type == wire::RequestType::kHello) {
        ReaderConnection& conn = readers_[rq.reader_id];
        // A hello from a new connection of the reader (it gave up on the old one after a
        // timeout): the way back may be as dead as its way here without UCX having noticed, and
        // replies sent over it would hang until send_timeout_ms. Make a new one.
        const bool stale = conn.endpoint && rq.offset != 0 && conn.generation != rq.offset;
        if (!conn.endpoint || conn.endpoint->failed() || stale) {
            if (stale) {
                log_.debug("{} reconnected (generation {} -> {}): replacing the way back",
                           reader_name(rq.reader_id), conn.generation, rq.offset);
                conn.endpoint->abandon(UCS_ERR_CONNECTION_RESET);
            }
            conn.endpoint.reset();  // completes (fails) its sends before they are dropped
            conn.sends.clear();
            auto ep = ucx::Endpoint::connect(loop_.shared_worker(), in.payload,
                                             reader_name(rq.reader_id));
            if (!ep.ok()) {
                log_.warn("cannot connect back to {}: {}", reader_name(rq.reader_id),
                          ep.status().message());
                readers_.erase(rq.reader_id);
                return true;
            }
            conn.endpoint = std::move(*ep);
        }
        conn.generation = rq.offset;
        conn.last_active = clock_.now();
        wire::Reply r;
        r.type = rq.type;
        r.request_id = rq.request_id;
        reply(rq.reader_id, r, {});
        return true;
    }
    auto conn = readers_.find(rq.reader_id);
    if (conn == readers_.end()) {
        log_.debug("{} request from {} that never said hello; dropped",
                   wire::request_type_name(rq.type), reader_name(rq.reader_id));
        return true;
    }
    conn->second.last_active = clock_.now();

    wire::Reply r;
    r.type = rq.type;
    r.request_id = rq.request_id;
    switch (rq.type) {
        case wire::RequestType::kAcquire: {
            auto offer =
                provider_.acquire(JobId(rq.job), rq.version, rq.shard, reader_name(rq.reader_id));
            if (!offer.ok()) {
                reply_error(rq.reader_id, rq, offer.status());
                return true;
            }
            if (!offer->has_value()) return false;
            const LeaseOffer& o = **offer;
            r.lease_id = o.grant.id;
            r.ttl_ms = static_cast<uint64_t>(o.ttl.count());
            r.version = o.grant.version;
            r.slot = o.grant.slot;
            r.shard = rq.shard;
            r.layout_fingerprint = o.layout_fingerprint;
            r.region_address = o.region_address;
            r.region_bytes = o.region_bytes;
            r.manifest_offset = o.manifest_offset;
            r.chunk_count = o.chunk_count;
            r.data_offset = o.data_offset;
            r.data_bytes = o.data_bytes;
            r.chunk_bytes = o.chunk_bytes;
            r.manifest_digest = o.manifest_digest;
            r.chunks_ready = o.chunks_ready;
            reply(rq.reader_id, r, o.packed_rkey ? *o.packed_rkey : std::vector<std::byte>{});
            return true;
        }
        case wire::RequestType::kRenew: {
            auto grant = provider_.renew(rq.lease_id);
            if (!grant.ok()) {
                reply_error(rq.reader_id, rq, grant.status());
                return true;
            }
            r.lease_id = grant->id;
            r.version = grant->version;
            const auto left = grant->expires_at - clock_.now();
            r.ttl_ms = static_cast<uint64_t>(std::max<int64_t>(
                0, std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
            reply(rq.reader_id, r, {});
            return true;
        }
        case wire::RequestType::kRelease:
            provider_.release(rq.lease_id);
            return true;
        case wire::RequestType::kRead: {
            auto bytes = provider_.readable(rq.lease_id, rq.offset, rq.length);
            if (!bytes.ok()) {
                reply_error(rq.reader_id, rq, bytes.status());
                return true;
            }
            if (*bytes == nullptr) return false;
            r.lease_id = rq.lease_id;
            stats_.bytes_served += rq.length;
            reply(rq.reader_id, r, {}, *bytes, rq.length);
            return true;
        }
        case wire::RequestType::kAwait: {
            auto ready = provider_.chunks_ready(rq.lease_id);
            if (!ready.ok()) {
                reply_error(rq.reader_id, rq, ready.status());
                return true;
            }
            if (*ready < rq.length) return false;
            r.lease_id = rq.lease_id;
            r.chunks_ready = *ready;
            reply(rq.reader_id, r, {});
            return true;
        }
        case wire::RequestType::kHello:
            break;
    }
    reply_error(
        rq.reader_id, rq,
        invalid_argument(fmt::format("unknown request type {}", static_cast<unsigned>(rq.type))));
    return true;
}

void SourceServer::reply(uint64_t reader_id, wire::Reply reply, std::vector<std::byte> owned,
                         const std::byte* borrowed, size_t borrowed_length) {
    auto it = readers_.find(reader_id);
    if (it == readers_.end() || !it->second.endpoint) return;
    ReaderConnection& conn = it->second;
    Send send;
    send.header = std::make_unique<wire::Reply>(reply);
    send.owned = std::move(owned);
    const void* data = borrowed != nullptr ? static_cast<const void*>(borrowed)
                                           : static_cast<const void*>(send.owned.data());
    const size_t length = borrowed != nullptr ? borrowed_length : send.owned.size();
    ucp_request_param_t param{};
    ucs_status_ptr_t ptr =
        ucp_am_send_nbx(conn.endpoint->handle(), wire::kReplyAmId, send.header.get(),
                        sizeof(wire::Reply), data, length, &param);
    send.request = ucx::Request(ptr, loop_.worker().handle());
    const ucs_status_t st = send.request.poll();
    if (st == UCS_INPROGRESS) {
        send.started = clock_.now();
        conn.sends.push_back(std::move(send));
    } else if (st != UCS_OK) {
        drop_reader(reader_id, fmt::format("sending a reply: {}", ucs_status_string(st)));
    }
}

void SourceServer::reply_error(uint64_t reader_id, const wire::Request& request,
                               const Status& status) {
    wire::Reply r;
    r.type = request.type;
    r.request_id = request.request_id;
    r.code = static_cast<int32_t>(status.code());
    ++stats_.refused;
    reply(reader_id, r, text_bytes(status.message()));
}

void SourceServer::drop_reader(uint64_t reader_id, std::string_view why) {
    auto it = readers_.find(reader_id);
    if (it == readers_.end()) return;
    if (why != "idle") {
        log_.info("dropping the connection to {}: {}", reader_name(reader_id), why);
        it->second.endpoint->abandon(UCS_ERR_CONNECTION_RESET);
    }
    ++stats_.readers_dropped;
    // Closing the endpoint completes its replies in flight; only then do their buffers go.
    it->second.endpoint.reset();
    readers_.erase(it);
    std::erase_if(parked_, [&](const Incoming& in) { return in.request.reader_id == reader_id; });
    std::erase_if(held_, [&](const Incoming& in) { return in.request.reader_id == reader_id; });
}

}  // namespace tandem::weights
