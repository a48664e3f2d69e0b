#include "common/weights/source_client.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/weights/memory.h"

namespace tandem::weights {

namespace {
#ifdef MADV_POPULATE_READ
constexpr int kMadvPopulateRead = MADV_POPULATE_READ;
#else
constexpr int kMadvPopulateRead = 22;  // Linux 5.14
#endif
}  // namespace

bool PendingCall::done() {
    if (!replied) return false;
    const ucs_status_t st = recv.poll();
    if (st == UCS_INPROGRESS) return false;
    if (st != UCS_OK && status.ok()) status = ucx::ucx_status(st, "receiving a chunk");
    return true;
}

Result<ucx::RemoteKey*> SourceConnection::rkey(uint64_t region_address, uint64_t region_bytes,
                                               std::span<const std::byte> packed) {
    auto it = rkeys.find(region_address);
    if (it != rkeys.end()) return it->second.get();
    TANDEM_ASSIGN_OR_RETURN(auto key, ucx::RemoteKey::unpack(endpoint, packed));
    if (const std::byte* local = key->local_pointer(region_address)) {
        const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
        const auto begin = reinterpret_cast<uintptr_t>(local) & ~(page - 1);
        const auto end = reinterpret_cast<uintptr_t>(local) + region_bytes;
        // Best effort (Linux 5.14+); without it pages fault in on first use.
        madvise(reinterpret_cast<void*>(begin), end - begin, kMadvPopulateRead);
    }
    ucx::RemoteKey* raw = key.get();
    rkeys.emplace(region_address, std::move(key));
    return raw;
}

SourceClient::SourceClient(UcxLoop& loop, const Clock& clock, uint64_t reader_id, Logger log)
    : loop_(loop), clock_(clock), reader_id_(reader_id), log_(std::move(log)) {}

SourceClient::~SourceClient() {
    loop_.worker().clear_am_handler(wire::kReplyAmId);
    pending_.clear();
    // Close the connections first (completing their sends), then drop what the sends used.
    for (auto& [address, connection] : connections_) connection->rkeys.clear();
    connections_.clear();
    orphans_.clear();
    sending_.clear();
}

Status SourceClient::start() {
    return loop_.worker().set_am_handler(
        wire::kReplyAmId,
        [this](std::span<const std::byte> header, void* data, size_t length,
               const ucp_am_recv_param_t& param) { return on_reply(header, data, length, param); });
}

ucs_status_t SourceClient::on_reply(std::span<const std::byte> header, void* data, size_t length,
                                    const ucp_am_recv_param_t& param) {
    auto reply = wire::decode<wire::Reply>(header);
    if (!reply) {
        log_.warn("dropping a malformed reply ({} header bytes)", header.size());
        return UCS_OK;
    }
    auto it = pending_.find(reply->request_id);
    if (it == pending_.end()) return UCS_OK;  // abandoned; rendezvous data is dropped
    std::shared_ptr<PendingCall> call = std::move(it->second);
    pending_.erase(it);
    call->replied = true;
    call->reply = *reply;
    const bool rndv = (param.recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    if (reply->code != 0) {
        if (rndv) {
            call->status = unavailable("source sent an error reply as rendezvous data");
            return UCS_OK;
        }
        call->status = wire::reply_status(*reply, {static_cast<const std::byte*>(data), length});
        return UCS_OK;
    }
    if (call->dest != nullptr) {
        if (length != call->dest_length) {
            call->status = data_loss(
                fmt::format("source sent {} bytes for a read of {}", length, call->dest_length));
            return UCS_OK;
        }
        if (rndv) {
            ucp_request_param_t p{};
            call->recv = ucx::Request(
                ucp_am_recv_data_nbx(loop_.worker().handle(), data, call->dest, length, &p),
                loop_.worker().handle());
            return UCS_INPROGRESS;
        }
        std::memcpy(call->dest, data, length);
        return UCS_OK;
    }
    if (rndv) {
        call->status = unavailable("source sent a control reply as rendezvous data");
        return UCS_OK;
    }
    const auto* bytes = static_cast<const std::byte*>(data);
    call->reply_payload.assign(bytes, bytes + length);
    return UCS_OK;
}

Result<std::shared_ptr<SourceConnection>> SourceClient::connect(std::span<const std::byte> address,
                                                                const std::string& name,
                                                                const std::string& host,
                                                                int64_t pid) {
    const std::string key(reinterpret_cast<const char*>(address.data()), address.size());
    auto it = connections_.find(key);
    if (it != connections_.end() && !it->second->endpoint->failed()) return it->second;
    if (it != connections_.end()) forget(it->second, UCS_ERR_CONNECTION_RESET);
    TANDEM_ASSIGN_OR_RETURN(auto endpoint,
                            ucx::Endpoint::connect(loop_.shared_worker(), address, name));
    auto connection = std::make_shared<SourceConnection>();
    connection->name = name;
    connection->address.assign(address.begin(), address.end());
    connection->endpoint = std::move(endpoint);
    connection->same_host = !host.empty() && host == host_identity();
    connection->pid = pid;
    connection->generation = next_generation_++;
    log_.debug("connected to {}: RDMA gets {}, peer failure detection {}", name,
               connection->endpoint->rdma_rma() ? "yes" : "no",
               connection->endpoint->peer_failure_detection() ? "on" : "off");
    connections_.emplace(key, connection);
    return connection;
}

void SourceClient::forget(const std::shared_ptr<SourceConnection>& connection, ucs_status_t why) {
    if (!connection) return;
    connection->endpoint->abandon(why);
    // The remote keys stay with the connection until its last user lets go: gets still in flight
    // on it (being drained by a failed fetch) use them.
    // Only this connection: a newer one to the same address may have replaced it already.
    auto it = connections_.find(std::string(
        reinterpret_cast<const char*>(connection->address.data()), connection->address.size()));
    if (it != connections_.end() && it->second == connection) connections_.erase(it);
}

ucs_status_ptr_t SourceClient::post(SourceConnection& connection, const wire::Request* header,
                                    std::span<const std::byte> payload) {
    // A connection force-closed by a failed fetch's drain has no endpoint any more.
    if (connection.endpoint->closed()) return UCS_STATUS_PTR(UCS_ERR_CONNECTION_RESET);
    ucp_request_param_t param{};
    return ucp_am_send_nbx(connection.endpoint->handle(), wire::kRequestAmId, header,
                           sizeof(wire::Request), payload.data(), payload.size(), &param);
}

std::shared_ptr<PendingCall> SourceClient::call(SourceConnection& connection, wire::Request request,
                                                std::vector<std::byte> payload, std::byte* dest,
                                                size_t dest_length) {
    auto call = std::make_shared<PendingCall>();
    call->id = next_id_++;
    call->request = request;
    call->request.request_id = call->id;
    call->request.reader_id = reader_id_;
    call->payload = std::move(payload);
    call->dest = dest;
    call->dest_length = dest_length;
    call->sent_at = clock_.now();
    pending_[call->id] = call;
    call->send =
        ucx::Request(post(connection, &call->request, call->payload), loop_.worker().handle());
    const ucs_status_t st = call->send.poll();
    if (st == UCS_INPROGRESS) sending_.push_back(call);
    if (st != UCS_OK && st != UCS_INPROGRESS) {
        pending_.erase(call->id);
        call->replied = true;
        call->status = ucx::ucx_status(
            st, fmt::format("sending {} to {}", wire::request_type_name(request.type),
                            connection.name));
    }
    return call;
}

void SourceClient::send_only(SourceConnection& connection, wire::Request request) {
    Orphan o;
    o.header = std::make_unique<wire::Request>(request);
    o.header->request_id = next_id_++;
    o.header->reader_id = reader_id_;
    o.request = ucx::Request(post(connection, o.header.get(), {}), loop_.worker().handle());
    if (o.request.poll() != UCS_INPROGRESS) return;
    orphans_.push_back(std::move(o));
}

void SourceClient::cancel(const std::shared_ptr<PendingCall>& call) {
    if (call) pending_.erase(call->id);
}

Status SourceClient::check_alive(SourceConnection& connection) const {
    TANDEM_RETURN_IF_ERROR(connection.endpoint->error());
    if (connection.same_host && connection.pid > 0) {
        if (::kill(static_cast<pid_t>(connection.pid), 0) != 0 && errno == ESRCH) {
            return unavailable(
                fmt::format("{} (pid {}) has exited", connection.name, connection.pid));
        }
    }
    return Status();
}

bool SourceClient::poll() {
    std::erase_if(orphans_, [](Orphan& o) { return !o.request.pending(); });
    std::erase_if(sending_,
                  [](const std::shared_ptr<PendingCall>& c) { return !c->send.pending(); });
    return !orphans_.empty() || !sending_.empty();
}

}  // namespace tandem::weights
