#pragma once

// ZeroMQ CURVE for the agent and trajectory planes (docs/security.md).
//
// Keys are Z85 text. A key file `RUN_DIR/keys/NAME.key` (mode 0600) holds the secret key on one
// line; `NAME.pub` (0644) the public key, which is derived from the secret. `tandem up` makes one
// pair for the coordinator and one per node whose public key the cluster file does not give.
//
// The trajectory plane's keys are derived, not stored: the coordinator derives each job's trainer
// key pair and each rollout's key pair from its own secret key (keyed BLAKE2b of a label naming
// the job and the actor), so a restarted coordinator hands out the same keys, and an agent, which
// never sees the coordinator's secret key, cannot make them.
//
// ZapHandler answers the ZeroMQ Authentication Protocol for one ZeroMQ context: a CURVE client
// whose public key is on its list is accepted with its name as the message's "User-Id"; any other
// key is refused (logged once per key and address). It can also watch server sockets for failed
// handshakes (wrong key, a client without CURVE, a client that does not know the server's key) and
// count them.

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "common/log.h"
#include "common/status.h"

namespace tandem::net {

struct CurveKeys {
    std::string public_z85;
    std::string secret_z85;
};

// Whether this libzmq was built with CURVE (libsodium).
bool curve_available();
// A fresh random key pair.
Result<CurveKeys> generate_curve_keys();
// The pair of a Z85 secret key (the public key computed from it).
Result<CurveKeys> curve_keys_from_secret(const std::string& secret_z85);
// The pair whose secret key is keyed-BLAKE2b(root secret key, label): the same root and label
// always give the same pair.
Result<CurveKeys> derive_curve_keys(const std::string& root_secret_z85, const std::string& label);

// RUN_DIR/keys/NAME.key and NAME.pub.
std::string curve_key_path(const std::string& run_dir, const std::string& name);
std::string curve_public_path(const std::string& run_dir, const std::string& name);
// Writes NAME.key (0600) and NAME.pub (0644) under RUN_DIR/keys (created 0700).
Status write_curve_keys(const std::string& run_dir, const std::string& name, const CurveKeys& k);
// Reads a secret key file; refuses a file that others may read (mode & 077) or that is not one
// Z85 key, naming the file.
Result<CurveKeys> read_curve_keys(const std::string& key_path);
// Reads a public key file (one Z85 key), naming the file in errors.
Result<std::string> read_curve_public(const std::string& pub_path);

// Socket options, set before bind/connect. A server needs a ZapHandler on its context to check
// its clients; `zap_domain` says which of the handler's lists applies.
void set_curve_server(zmq::socket_t& socket, const CurveKeys& keys, const std::string& zap_domain);
void set_curve_client(zmq::socket_t& socket, const CurveKeys& keys,
                      const std::string& server_public_z85);

// Owns a thread that answers ZAP requests; its lists may be changed from any thread (a mutex
// guards them). Neither copyable nor movable (the thread holds `this`).
class ZapHandler {
public:
    // Binds inproc://zeromq.zap.01 on `zmq` (one handler per context). `log_component` names the
    // logger of the refusals. Call watch() for the server sockets, then start().
    static Result<std::unique_ptr<ZapHandler>> create(zmq::context_t& zmq,
                                                      const std::string& log_component);
    ~ZapHandler();
    ZapHandler(const ZapHandler&) = delete;
    ZapHandler& operator=(const ZapHandler&) = delete;

    // Accepts `public_z85` in `domain` as `name` (a node id, an actor name).
    void allow(const std::string& domain, const std::string& public_z85, const std::string& name);
    // Counts the failed handshakes of `server` (before start(); before `server` binds).
    Status watch(zmq::socket_t& server, const std::string& label);
    void start();

    // The reply to one ZAP request (frames as the ZAP spec lists them): 200 with the key's name as
    // user id, or 400. Used by the thread; public for tests.
    std::vector<std::string> answer(const std::vector<std::string>& request);

    uint64_t refused_keys() const { return refused_keys_.load(std::memory_order_relaxed); }
    uint64_t failed_handshakes() const {
        return failed_handshakes_.load(std::memory_order_relaxed);
    }

private:
    ZapHandler(zmq::context_t& zmq, const std::string& log_component);
    void run();
    void on_monitor_event(size_t index);

    zmq::context_t& zmq_;
    zmq::socket_t rep_;
    std::vector<std::unique_ptr<zmq::socket_t>> monitors_;  // PAIR, one per watched socket
    std::vector<std::string> monitor_labels_;
    Logger log_;
    std::mutex mu_;
    std::map<std::string, std::map<std::string, std::string>> allowed_;  // domain -> key -> name
    std::set<std::string> logged_;  // refusals already logged (key and address), bounded
    // Counters read by metrics on other threads; relaxed: plain counts, they publish nothing.
    std::atomic<uint64_t> refused_keys_{0};
    std::atomic<uint64_t> failed_handshakes_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace tandem::net
