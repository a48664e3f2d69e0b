#pragma once

// AgentServer: the coordinator's ZeroMQ ROUTER socket, driven by the Boost.Asio loop (the socket's
// notification fd is watched by the loop; messages are drained without blocking). It only moves
// envelopes: AgentDispatcher (agent_dispatcher.h) decides what they mean. Owned by the coordinator
// loop; not thread-safe; neither copyable nor movable (it hands its `this` to the loop).
//
// Hostile peers (AgentServerLimits): ZeroMQ disconnects a peer that sends a frame larger than
// max_frame_bytes (ZMQ_MAXMSGSIZE); a message of more than max_frames frames is dropped unread;
// each peer has a token bucket of peer_burst messages refilled at peer_rate_per_s, and what it
// sends beyond that is dropped before decoding (counted, logged once per flood), so one flooding
// peer costs the loop little and the others' messages keep flowing.

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <zmq.hpp>

#include "common/log.h"
#include "common/status.h"
#include "common/wire/envelope.h"

namespace tandem::coord {

struct AgentServerLimits {
    int64_t max_frame_bytes = 16 << 20;
    size_t max_frames = 16;         // routing id excluded
    double peer_rate_per_s = 2000;  // sustained messages per peer (heartbeats are a few per second)
    double peer_burst = 10000;      // messages a peer may send at once (log batches on reconnect)
    // After a drain woken by the socket, the next one runs this much later instead of at the
    // next message: the first message of a burst is handled at once, the rest in batches, so
    // 10,000 agents wake the loop about 1,000 times a second rather than once per message
    // (0: every message wakes it). Adds at most this much to a reply's latency.
    int64_t coalesce_us = 1000;
};

class AgentServer {
public:
    // Receives (routing id, frames after the routing id).
    using Handler = std::function<void(const std::string&, const std::vector<std::string>&)>;
    // Sets socket options before the bind (CURVE: common/net/curve.h).
    using SocketSetup = std::function<void(zmq::socket_t&)>;
    // Sees each admitted message with its connection's ZAP User-Id ("" without CURVE) before the
    // handler; a message it refuses is answered with an error of its status and dropped.
    using Gate = std::function<Status(const std::string&, const std::vector<std::string>&)>;

    AgentServer(boost::asio::io_context& io, zmq::context_t& zmq, const std::string& endpoint,
                AgentServerLimits limits = {}, const SocketSetup& setup = {});
    ~AgentServer();
    AgentServer(const AgentServer&) = delete;
    AgentServer& operator=(const AgentServer&) = delete;

    static Result<std::unique_ptr<AgentServer>> bind(boost::asio::io_context& io,
                                                     zmq::context_t& zmq,
                                                     const std::string& endpoint,
                                                     AgentServerLimits limits = {},
                                                     const SocketSetup& setup = {});

    void set_handler(Handler h) { handler_ = std::move(h); }
    void set_gate(Gate g) { gate_ = std::move(g); }
    Status send(const std::string& routing_id, const wire::Envelope& e);

    // The bound endpoint ("tcp://127.0.0.1:PORT" when bound to port *).
    std::string endpoint() const { return socket_.get(zmq::sockopt::last_endpoint); }
    // Messages dropped so far: over a peer's budget, or with too many frames.
    uint64_t dropped_over_budget() const { return dropped_over_budget_; }
    uint64_t dropped_too_many_frames() const { return dropped_too_many_frames_; }

private:
    void arm();
    void drain();
    void schedule_drain();
    // Takes one message from `routing`'s budget; false (counted) when it has none left.
    bool admit(const std::string& routing);

    struct Budget {
        double tokens = 0;
        std::chrono::steady_clock::time_point refilled;
        bool flooding = false;  // logged this episode
    };

    boost::asio::io_context& io_;
    zmq::socket_t socket_;
    boost::asio::posix::stream_descriptor fd_;
    boost::asio::steady_timer coalesce_;  // the batching pause between drains (coalesce_us)
    Handler handler_;
    Gate gate_;
    bool drain_posted_ = false;
    bool in_drain_ = false;  // sends from inside drain() need no extra drain
    const AgentServerLimits limits_;
    Logger log_{"agents"};
    std::unordered_map<std::string, Budget> budgets_;  // by routing id
    size_t prune_at_ = 4096;  // budgets_ size that triggers forgetting the quiet peers
    uint64_t dropped_over_budget_ = 0;
    uint64_t dropped_too_many_frames_ = 0;
};

}  // namespace tandem::coord
