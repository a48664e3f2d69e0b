#pragma once

// Sending and receiving envelopes on cppzmq sockets (ROUTER on the coordinator, DEALER on agents).

#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/status.h"
#include "common/wire/envelope.h"

namespace tandem::wire {

// Sends `e`, prefixed with `routing_id` when sending from a ROUTER. Non-blocking: returns
// unavailable when the peer's queue is full or (ROUTER_MANDATORY) the peer is gone.
Status send_envelope(zmq::socket_t& socket, const Envelope& e,
                     const std::optional<std::string>& routing_id = std::nullopt);

// Receives one multipart message without blocking; nullopt when none is waiting. `user_id`, if
// given, receives the connection's ZAP "User-Id" ("" when it has none).
std::optional<std::vector<std::string>> try_recv_frames(zmq::socket_t& socket,
                                                        std::string* user_id = nullptr);

}  // namespace tandem::wire
