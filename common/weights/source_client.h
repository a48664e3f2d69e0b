#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "common/weights/protocol.h"
#include "common/weights/ucx.h"
#include "common/weights/ucx_loop.h"

namespace tandem::weights {

// A request in flight to a source, and its reply. Control replies keep their payload; data replies
// land in `dest`. Owned by whoever waits for it; the client forgets it once the reply is in.
struct PendingCall {
    uint64_t id = 0;
    wire::Request request;           // the AM header; must outlive the send (UCX 1.13)
    std::vector<std::byte> payload;  // the request's payload
    ucx::Request send;
    Clock::TimePoint sent_at{};

    bool replied = false;
    wire::Reply reply;
    std::vector<std::byte> reply_payload;  // control replies
    std::byte* dest = nullptr;             // data replies are written here
    size_t dest_length = 0;
    ucx::Request recv;  // rendezvous receive into dest
    Status status;      // the reply's error, or the transfer's

    // The reply arrived and its data (if any) is in place.
    bool done();
};

// A connection to one source (a publisher or a relaying reader), with the remote keys unpacked for
// it. Loop thread only.
struct SourceConnection {
    std::string name;
    std::vector<std::byte> address;
    std::shared_ptr<ucx::Endpoint> endpoint;
    bool same_host = false;
    int64_t pid = 0;
    std::map<uint64_t, std::unique_ptr<ucx::RemoteKey>> rkeys;  // by region address
    // When the source last answered this reader's hello (it then has a way back to us).
    std::optional<Clock::TimePoint> greeted_at;
    // Sent with hello: a source that holds a connection back of another generation (this reader
    // dropped and re-made its connection) replaces it instead of answering over a stale one.
    uint64_t generation = 0;

    // The unpacked key for a region, cached. A region UCX maps here (shared memory) has its page
    // tables populated once, up front: faulting them in page by page on the first read costs far
    // more (tens of microseconds per 4 KiB page in a VM).
    Result<ucx::RemoteKey*> rkey(uint64_t region_address, uint64_t region_bytes,
                                 std::span<const std::byte> packed);
};

// The reader side of the protocol: connections to sources, requests, and the reply handler that
// routes replies (and rendezvous data) to their PendingCall. Lives on the loop thread.
class SourceClient {
public:
    SourceClient(UcxLoop& loop, const Clock& clock, uint64_t reader_id, Logger log);
    SourceClient(const SourceClient&) = delete;
    SourceClient& operator=(const SourceClient&) = delete;
    ~SourceClient();

    Status start();
    uint64_t reader_id() const { return reader_id_; }

    // A cached connection to the worker at `address`, or a new one.
    Result<std::shared_ptr<SourceConnection>> connect(std::span<const std::byte> address,
                                                      const std::string& name,
                                                      const std::string& host, int64_t pid);
    // Drops a connection that failed or timed out from the cache; its endpoint is force-closed
    // when its last user (a fetch draining its requests) lets go.
    void forget(const std::shared_ptr<SourceConnection>& connection, ucs_status_t why);

    // Sends a request that expects a reply (data replies go to `dest`).
    std::shared_ptr<PendingCall> call(SourceConnection& connection, wire::Request request,
                                      std::vector<std::byte> payload = {},
                                      std::byte* dest = nullptr, size_t dest_length = 0);
    // Sends a request that gets no reply (release).
    void send_only(SourceConnection& connection, wire::Request request);
    // Stops waiting for a call; a late reply is dropped.
    void cancel(const std::shared_ptr<PendingCall>& call);

    // ok, or why the source is gone: its endpoint failed or its (same-host) process exited.
    Status check_alive(SourceConnection& connection) const;
    // Polls fire-and-forget sends; true while some are in flight.
    bool poll();

private:
    ucs_status_t on_reply(std::span<const std::byte> header, void* data, size_t length,
                          const ucp_am_recv_param_t& param);
    ucs_status_ptr_t post(SourceConnection& connection, const wire::Request* header,
                          std::span<const std::byte> payload);

    UcxLoop& loop_;
    const Clock& clock_;
    const uint64_t reader_id_;
    const Logger log_;
    uint64_t next_id_ = 1;
    uint64_t next_generation_ = 1;
    std::unordered_map<uint64_t, std::shared_ptr<PendingCall>> pending_;
    std::map<std::string, std::shared_ptr<SourceConnection>> connections_;  // by address bytes
    // A request that gets no reply, kept until UCX is done sending it. It does not hold its
    // connection: closing the endpoint is what completes it if the peer is gone.
    struct Orphan {
        std::unique_ptr<wire::Request> header;
        ucx::Request request;
    };
    std::vector<Orphan> orphans_;  // fire-and-forget sends still in flight
    // Calls whose request is still being sent: UCX reads their header until the send completes,
    // so they stay alive here even if their owner lets go.
    std::vector<std::shared_ptr<PendingCall>> sending_;
};

}  // namespace tandem::weights
