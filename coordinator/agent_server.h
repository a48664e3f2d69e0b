#pragma once

// AgentServer: the coordinator's ZeroMQ ROUTER socket, driven by the Boost.Asio loop (the socket's
// notification fd is watched by the loop; messages are drained without blocking). It only moves
// envelopes: AgentDispatcher (agent_dispatcher.h) decides what they mean. Owned by the coordinator
// loop; not thread-safe; neither copyable nor movable (it hands its `this` to the loop).

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <zmq.hpp>

#include "common/status.h"
#include "common/wire/envelope.h"

namespace tandem::coord {

class AgentServer {
public:
    // Receives (routing id, frames after the routing id).
    using Handler = std::function<void(const std::string&, const std::vector<std::string>&)>;

    AgentServer(boost::asio::io_context& io, zmq::context_t& zmq, const std::string& endpoint);
    ~AgentServer();
    AgentServer(const AgentServer&) = delete;
    AgentServer& operator=(const AgentServer&) = delete;

    static Result<std::unique_ptr<AgentServer>> bind(boost::asio::io_context& io,
                                                     zmq::context_t& zmq,
                                                     const std::string& endpoint);

    void set_handler(Handler h) { handler_ = std::move(h); }
    Status send(const std::string& routing_id, const wire::Envelope& e);

private:
    void arm();
    void drain();
    void schedule_drain();

    boost::asio::io_context& io_;
    zmq::socket_t socket_;
    boost::asio::posix::stream_descriptor fd_;
    Handler handler_;
    bool drain_posted_ = false;
    bool in_drain_ = false;  // sends from inside drain() need no extra drain
};

}  // namespace tandem::coord
