#include "coordinator/agent_server.h"

#include <fmt/format.h>
#include <boost/asio/post.hpp>

#include "common/wire/messages.h"
#include "common/wire/zmq_io.h"

namespace tandem::coord {

namespace {
// ZeroMQ routing ids are binary: printed as hex.
std::string hex_id(const std::string& id) {
    std::string out;
    for (const unsigned char c : id) out += fmt::format("{:02x}", c);
    return out;
}
}  // namespace

AgentServer::AgentServer(boost::asio::io_context& io, zmq::context_t& zmq,
                         const std::string& endpoint, AgentServerLimits limits,
                         const SocketSetup& setup)
    : io_(io), socket_(zmq, zmq::socket_type::router), fd_(io), coalesce_(io), limits_(limits) {
    socket_.set(zmq::sockopt::router_mandatory, 1);  // unknown peers fail the send, not silently
    socket_.set(zmq::sockopt::maxmsgsize, limits_.max_frame_bytes);  // larger: disconnected
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndhwm, 100000);
    socket_.set(zmq::sockopt::rcvhwm, 100000);
    if (setup) setup(socket_);
    socket_.bind(endpoint);
    fd_.assign(socket_.get(zmq::sockopt::fd));
    arm();
}

Result<std::unique_ptr<AgentServer>> AgentServer::bind(boost::asio::io_context& io,
                                                       zmq::context_t& zmq,
                                                       const std::string& endpoint,
                                                       AgentServerLimits limits,
                                                       const SocketSetup& setup) {
    try {
        return std::make_unique<AgentServer>(io, zmq, endpoint, limits, setup);
    } catch (const zmq::error_t& e) {
        return unavailable(
            fmt::format("cannot bind the agent socket to {}: {}", endpoint, e.what()));
    }
}

AgentServer::~AgentServer() {
    boost::system::error_code ec;
    coalesce_.cancel();
    fd_.cancel(ec);
    (void)fd_.release();  // the fd belongs to ZeroMQ
}

void AgentServer::arm() {
    fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                   [this](const boost::system::error_code& ec) {
                       if (ec) return;
                       drain();
                       if (limits_.coalesce_us <= 0) return arm();
                       // What arrives meanwhile waits for this timer, not for the fd: drain()
                       // left ZMQ_EVENTS empty, so nothing is missed by not watching the fd.
                       coalesce_.expires_after(std::chrono::microseconds(limits_.coalesce_us));
                       coalesce_.async_wait([this](const boost::system::error_code& ec2) {
                           if (ec2) return;
                           drain();
                           arm();
                       });
                   });
}

void AgentServer::drain() {
    drain_posted_ = false;
    in_drain_ = true;
    // The fd is edge-triggered: read until ZMQ_EVENTS says nothing is left. Messages are taken
    // with non-blocking receives until one finds none; only then are the events checked (they
    // also cover the edges that replies sent meanwhile consumed), one check per batch instead
    // of one per message.
    for (int budget = 0; budget < 10000; ++budget) {
        std::string user_id;  // the ZAP handler's name for the peer's CURVE key
        auto frames = wire::try_recv_frames(socket_, &user_id);
        if (!frames) {
            if (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) continue;
            in_drain_ = false;
            return;
        }
        if (frames->empty()) continue;
        std::string routing = std::move((*frames)[0]);
        frames->erase(frames->begin());
        if (!admit(routing)) continue;
        if (frames->size() > limits_.max_frames) {
            ++dropped_too_many_frames_;
            continue;
        }
        if (gate_) {
            if (Status s = gate_(user_id, *frames); !s.ok()) {
                wire::Error err{std::string(status_code_name(s.code())), s.message(), 0};
                (void)wire::send_envelope(socket_, wire::make_envelope(err, 0), routing);
                continue;
            }
        }
        if (handler_) handler_(routing, *frames);
    }
    in_drain_ = false;
    schedule_drain();  // yield to the rest of the loop, then continue
}

bool AgentServer::admit(const std::string& routing) {
    const auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = budgets_.try_emplace(routing);
    Budget& b = it->second;
    if (fresh) {
        if (budgets_.size() > prune_at_) {
            // Forget peers not heard for as long as a budget takes to fill up from empty: their
            // budget is full again, as a new entry's would be. Peers heard since stay, even
            // when full, so that 10,000 quiet agents keep their entries instead of having them
            // erased and made again at every message. The next scan waits until the map has
            // doubled: amortized O(1) per new peer.
            const double refill_s = limits_.peer_burst / std::max(1e-9, limits_.peer_rate_per_s);
            std::erase_if(budgets_, [&](const auto& kv) {
                return kv.first != routing &&
                       std::chrono::duration<double>(now - kv.second.refilled).count() >= refill_s;
            });
            prune_at_ = std::max<size_t>(4096, 2 * budgets_.size());
        }
        b.tokens = limits_.peer_burst;
        b.refilled = now;
    } else {
        const double elapsed_s = std::chrono::duration<double>(now - b.refilled).count();
        b.tokens = std::min(limits_.peer_burst, b.tokens + elapsed_s * limits_.peer_rate_per_s);
        b.refilled = now;
    }
    if (b.tokens >= 1) {
        b.tokens -= 1;
        if (b.flooding && b.tokens >= limits_.peer_burst / 2) b.flooding = false;
        return true;
    }
    ++dropped_over_budget_;
    if (!b.flooding) {
        b.flooding = true;
        log_.warn(
            "peer {} sends more than {} messages/s: dropping its messages until it slows "
            "down ({} dropped so far from all peers)",
            hex_id(routing), limits_.peer_rate_per_s, dropped_over_budget_);
    }
    return false;
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
