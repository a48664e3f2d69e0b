#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "common/weights/lease_table.h"
#include "common/weights/protocol.h"
#include "common/weights/ucx.h"
#include "common/weights/ucx_loop.h"

namespace tandem::weights {

// What a source grants with a lease: where the shard's header, manifest and bytes are in the slot
// region, and the key to read them remotely.
struct LeaseOffer {
    LeaseGrant grant;
    std::chrono::milliseconds ttl{0};
    uint64_t layout_fingerprint = 0;
    uint64_t region_address = 0;
    uint64_t region_bytes = 0;
    uint64_t manifest_offset = 0;
    uint64_t chunk_count = 0;
    uint64_t data_offset = 0;
    uint64_t data_bytes = 0;
    uint64_t chunk_bytes = 0;
    uint64_t manifest_digest = 0;
    uint64_t chunks_ready = 0;
    const std::vector<std::byte>* packed_rkey = nullptr;
};

// The slots a SourceServer serves: a publisher's, or a relaying reader's buffers. Called on the
// loop thread only.
class SlotProvider {
public:
    virtual ~SlotProvider() = default;
    // An offer; nullopt when the version is on its way (a relay is fetching it: ask again after
    // SourceServer::notify()); not_found / unavailable / invalid_argument otherwise.
    virtual Result<std::optional<LeaseOffer>> acquire(JobId job, Version version, uint32_t shard,
                                                      const std::string& holder) = 0;
    virtual Result<LeaseGrant> renew(LeaseId id) = 0;
    virtual void release(LeaseId id) = 0;
    // The bytes [offset, offset + length) of the leased slot region if they can be served now;
    // nullptr if not yet (a relay has not verified them); an error if the lease is gone or the
    // range leaves the region.
    virtual Result<const std::byte*> readable(LeaseId id, uint64_t offset, uint64_t length) = 0;
    // How many chunks of the leased shard are readable, counted from the first.
    virtual Result<uint64_t> chunks_ready(LeaseId id) = 0;
};

struct SourceServerOptions {
    // A parked request (waiting for a relay's chunks) fails after this long.
    std::chrono::milliseconds park_timeout_ms{30'000};
    // A reply that does not complete in this long marks the reader dead.
    std::chrono::milliseconds send_timeout_ms{10'000};
    // Connections with no traffic for this long are closed (readers say hello again).
    std::chrono::milliseconds idle_timeout_ms{120'000};
    // Fault injection for tests only (tandem-weights-helper's --hold-control); empty otherwise.
    // Called on the loop thread with each request before it is handled: while it returns true
    // the request waits unanswered (never timed out) and is asked about again on the next poll,
    // so a test can keep a reader's request in flight across a kill or a failed fetch.
    std::function<bool(const wire::Request&)> hold_request;
};

// Serves lease, read and await requests (protocol.h) for a SlotProvider on a UcxLoop: connects
// back to each reader that says hello, replies with active messages, parks requests a relay cannot
// answer yet. Lives on the loop thread: construct, use and destroy it there.
class SourceServer {
public:
    SourceServer(UcxLoop& loop, SlotProvider& provider, const Clock& clock,
                 SourceServerOptions options, Logger log);
    SourceServer(const SourceServer&) = delete;
    SourceServer& operator=(const SourceServer&) = delete;
    ~SourceServer();

    // Registers the request handler and the poller.
    Status start();
    // Parked requests may be answerable now (more chunks verified, or the fetch failed).
    void notify() { notified_ = true; }
    size_t connections() const { return readers_.size(); }

    struct Stats {
        uint64_t requests = 0;
        uint64_t bytes_served = 0;
        uint64_t readers_dropped = 0;
        uint64_t refused = 0;  // requests answered with an error
    };
    const Stats& stats() const { return stats_; }

private:
    struct Incoming {
        wire::Request request;
        std::vector<std::byte> payload;
        Clock::TimePoint received{};
    };
    struct Send {
        std::unique_ptr<wire::Reply> header;  // must outlive the send (UCX 1.13 reads it late)
        std::vector<std::byte> owned;         // payload we own (messages, rkeys)
        ucx::Request request;
        Clock::TimePoint started{};
    };
    struct ReaderConnection {
        std::shared_ptr<ucx::Endpoint> endpoint;
        std::deque<Send> sends;
        Clock::TimePoint last_active{};
        uint64_t generation = 0;  // of the reader's connection that said hello
    };

    bool poll();
    // Handles one request; returns false if it must stay parked.
    bool handle(Incoming& in);
    void reply(uint64_t reader_id, wire::Reply reply, std::vector<std::byte> owned,
               const std::byte* borrowed = nullptr, size_t borrowed_length = 0);
    void reply_error(uint64_t reader_id, const wire::Request& request, const Status& status);
    void drop_reader(uint64_t reader_id, std::string_view why);

    UcxLoop& loop_;
    SlotProvider& provider_;
    const Clock& clock_;
    const SourceServerOptions options_;
    const Logger log_;
    std::deque<Incoming> inbox_;
    std::deque<Incoming> parked_;
    std::deque<Incoming> held_;  // by options_.hold_request (tests)
    std::map<uint64_t, ReaderConnection> readers_;
    bool notified_ = false;
    uint64_t poller_ = 0;
    Clock::TimePoint last_sweep_{};
    Stats stats_;
};

}  // namespace tandem::weights
