#pragma once

// RuntimeServer: the node agent's end of the actor runtime (common/runtime/job_runtime.h). Binds a
// ZeroMQ ROUTER on an ipc socket in the run directory; each actor's AgentRuntime connects a DEALER
// and says RuntimeHello first. What actors send comes out of receive() for the agent to relay on
// its coordinator connection; what the coordinator sends for actors (JobView, VersionAssigned,
// RelayAssigned) goes in through deliver() and is routed by job or actor id. The last view of
// every job is kept, so an actor that starts (or says hello again) gets it at once, and every
// actor is told when the agent loses or regains the coordinator (JobView.connected).
// Owned by the agent loop; not thread-safe; neither copyable nor movable (owns a socket).

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/status.h"
#include "common/wire/envelope.h"

namespace tandem::agent {

class RuntimeServer {
public:
    // Binds ipc://RUN_DIR/agents/NODE.runtime (an abstract socket when that path is too long for
    // a Unix socket address).
    static Result<std::unique_ptr<RuntimeServer>> bind(zmq::context_t& zmq,
                                                       const std::string& run_dir,
                                                       const std::string& node,
                                                       const std::string& instance);
    RuntimeServer(const RuntimeServer&) = delete;
    RuntimeServer& operator=(const RuntimeServer&) = delete;
    ~RuntimeServer();

    const std::string& endpoint() const { return endpoint_; }
    zmq::socket_t& socket() { return *socket_; }

    struct Incoming {
        std::string actor;  // from the connection's RuntimeHello
        std::string job;
        wire::Envelope envelope;
    };
    // Everything actors sent since the last call (hellos are handled here). Messages from a
    // connection that has not said hello, or that do not decode, are dropped and counted.
    std::vector<Incoming> receive();
    // A coordinator message for actors; false when it is not one (the agent handles it).
    bool deliver(const wire::Envelope& e);
    // The coordinator connection went away or came back: every actor's view says so.
    void set_connected(bool connected);
    // The actor exited: its connection is forgotten.
    void forget_actor(const std::string& actor);
    uint64_t dropped() const { return dropped_; }

private:
    RuntimeServer(std::unique_ptr<zmq::socket_t> socket, std::string endpoint, std::string path)
        : socket_(std::move(socket)), endpoint_(std::move(endpoint)), path_(std::move(path)) {}
    struct Client {
        std::string actor;
        std::string job;
    };
    void send_view(const std::string& routing_id, const std::string& job);
    void send_to(const std::string& routing_id, const wire::Envelope& e);

    std::unique_ptr<zmq::socket_t> socket_;
    std::string endpoint_;
    std::string path_;  // the socket file to remove (empty for an abstract socket)
    std::map<std::string, Client> clients_;        // by routing id
    std::map<std::string, wire::Envelope> views_;  // last JobView by job
    bool connected_ = false;
    uint64_t seq_ = 0;
    uint64_t dropped_ = 0;
};

}  // namespace tandem::agent
