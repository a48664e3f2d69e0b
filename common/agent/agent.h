#pragma once

// Agent: the node-agent core shared by tandem-trainer-node and tandem-rollout-node. Registers
// with the coordinator (ZeroMQ DEALER), heartbeats, reconnects with backoff when the coordinator
// goes away (and re-registers with the actors it still runs), starts and stops actor processes on
// command, reports their state and exit reasons, forwards their stdout and stderr as log lines, and
// serves them the actor runtime (RuntimeServer) relayed on its coordinator connection. Runs on one
// thread (run()); not thread-safe.

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/agent/actor_process.h"
#include "common/agent/runtime_server.h"
#include "common/clock.h"
#include "common/config/cluster_spec.h"
#include "common/log.h"
#include "common/net/curve.h"
#include "common/run_dir.h"
#include "common/wire/messages.h"

namespace tandem::agent {

struct AgentOptions {
    config::ClusterSpec cluster;
    config::NodeSpec node;
    std::string secret;
    std::string run_dir;
    std::string bin_dir;           // where tandem-trainer-node and tandem-rollout-node live
    wire::Resources resources;     // detected, with the cluster file's overrides applied
    std::string coordinator_http;  // passed on to actors
    // CURVE (docs/security.md): this node's key pair and the coordinator's public key; an empty
    // server key: no CURVE (a loopback-only cluster).
    net::CurveKeys curve_keys;
    std::string curve_server_key;
};

// Detected cpus, memory and CUDA GPUs, overridden by the node's `resources` in the cluster file.
wire::Resources detect_resources(const config::NodeResources& overrides);

class Agent {
public:
    Agent(const Clock& clock, AgentOptions options);
    ~Agent();
    Agent(const Agent&) = delete;
    Agent& operator=(const Agent&) = delete;

    // Runs until `stop` is set or the coordinator refuses this node for good (wrong secret,
    // duplicate live id). Returns the process exit code (0, or 2 when refused).
    int run(const std::atomic<bool>& stop);

private:
    struct Actor {
        std::unique_ptr<ActorProcess> process;
        wire::ActorReport report;
        std::string last_error;  // the last error line through the runtime (fail())
        std::string job;
    };
    struct Finished {
        wire::ActorReport report;
        Clock::TimePoint at;
    };

    void connect();
    void send(const wire::Envelope& e);
    template <typename M>
    void send_msg(const M& m) {
        send(wire::make_envelope(m, ++seq_));
    }
    void send_register();
    void send_heartbeat();
    void on_message(const std::vector<std::string>& frames);
    // True (logged, counted) when a command comes from an older coordinator epoch than the one
    // this agent registered with.
    bool stale_command(std::string_view type, const std::string& actor, uint64_t epoch);
    void start_actor(const wire::StartActor& m);
    void stop_actor(const std::string& actor, const std::string& reason);
    void pump_actor(const std::string& name, Actor& a, int fd);
    // Relays what actors sent through the runtime socket to the coordinator.
    void pump_runtime();
    void log_actor_line(const std::string& job, const std::string& actor, std::string level,
                        std::string msg);
    void reap_actors();
    void flush_logs();
    std::vector<wire::ActorReport> reports() const;

    const Clock& clock_;
    AgentOptions opt_;
    Logger log_;
    std::string instance_;
    zmq::context_t zmq_{1};
    std::unique_ptr<zmq::socket_t> socket_;
    std::unique_ptr<RuntimeServer> runtime_;  // the actors' runtime socket
    uint64_t seq_ = 0;
    bool registered_ = false;
    std::optional<int> refused_;  // exit code once refused for good
    uint64_t epoch_ = 0;
    std::string actor_token_;
    uint64_t stale_commands_ = 0;  // from the RegisterAck; written into every actor's context
    int64_t heartbeat_ms_;
    int64_t last_rtt_us_ = -1;
    uint64_t heartbeats_ = 0;
    std::string last_reported_;  // the actor list the last heartbeat carried (JSON)
    Clock::TimePoint last_heard_{};
    Clock::TimePoint next_heartbeat_{};
    Clock::TimePoint next_register_{};
    Clock::Duration backoff_;
    std::map<std::string, Actor> actors_;
    std::map<std::string, Finished> finished_;
    std::map<std::string, std::vector<wire::LogLine>> pending_logs_;  // by job
    Clock::TimePoint next_log_flush_{};
};

}  // namespace tandem::agent
