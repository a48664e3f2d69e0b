#include "coordinator/agent_server.h"

#include <fmt/format.h>
#include <boost/asio/post.hpp>

#include "common/wire/zmq_io.h"

namespace tandem::coord {

AgentServer::AgentServer(boost::asio::io_context& io, zmq::context_t& zmq,
                         const std::string& endpoint)
    : io_(io), socket_(zmq, zmq::socket_type::router), fd_(io) {
    socket_.set(zmq::sockopt::router_mandatory, 1);  // unknown peers fail the send, not silently
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndhwm, 100000);
    socket_.set(zmq::sockopt::rcvhwm, 100000);
    socket_.bind(endpoint);
    fd_.assign(socket_.get(zmq::sockopt::fd));
    arm();
}

Result<std::unique_ptr<AgentServer>> AgentServer::bind(boost::asio::io_context& io,
                                                       zmq::context_t& zmq,
                                                       const std::string& endpoint) {
    try {
        return std::make_unique<AgentServer>(io, zmq, endpoint);
    } catch (const zmq::error_t& e) {
        return unavailable(
            fmt::format("cannot bind the agent socket to {}: {}", endpoint, e.what()));
    }
}

AgentServer::~AgentServer() {
    boost::system::error_code ec;
    fd_.cancel(ec);
    (void)fd_.release();  // the fd belongs to ZeroMQ
}

void AgentServer::arm() {
    fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                   [this](const boost::system::error_code& ec) {
                       if (ec) return;
                       drain();
                       arm();
                   });
}

void AgentServer::drain() {
    drain_posted_ = false;
    in_drain_ = true;
    // The fd is edge-triggered: read until ZMQ_EVENTS says nothing is left. Checking the events
    // after each handled message also covers the edges its replies consumed.
    for (int budget = 0; budget < 10000; ++budget) {
        if (!(socket_.get(zmq::sockopt::events) & ZMQ_POLLIN)) {
            in_drain_ = false;
            return;
        }
        auto frames = wire::try_recv_frames(socket_);
        if (!frames) break;
        if (frames->empty()) continue;
        std::string routing = std::move((*frames)[0]);
        frames->erase(frames->begin());
        if (handler_) handler_(routing, *frames);
    }
    in_drain_ = false;
    schedule_drain();  // yield to the rest of the loop, then continue
}

void AgentServer::schedule_drain() {
    if (drain_posted_) return;
    drain_posted_ = true;
    boost::asio::post(io_, [this] { drain(); });
}

Status AgentServer::send(const std::string& routing_id, const wire::Envelope& e) {
    Status s = wire::send_envelope(socket_, e, routing_id);
    // Sending may consume the fd's edge while messages wait to be read; inside drain() the loop
    // re-checks the events itself.
    if (!in_drain_) schedule_drain();
    return s;
}

}  // namespace tandem::coord
