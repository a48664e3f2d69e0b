#include "common/wire/zmq_io.h"

#include <fmt/format.h>

namespace tandem::wire {

Status send_envelope(zmq::socket_t& socket, const Envelope& e,
                     const std::optional<std::string>& routing_id) {
    std::vector<std::string> frames = encode(e);
    try {
        if (routing_id) {
            if (!socket.send(zmq::buffer(*routing_id),
                             zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
                return unavailable("send queue full");
            }
        }
        for (size_t i = 0; i < frames.size(); ++i) {
            auto flags = zmq::send_flags::dontwait;
            if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
            if (!socket.send(zmq::buffer(frames[i]), flags)) {
                return unavailable("send queue full");
            }
        }
    } catch (const zmq::error_t& err) {
        return unavailable(fmt::format("zmq send {}: {}", e.type, err.what()));
    }
    return Status();
}

std::optional<std::vector<std::string>> try_recv_frames(zmq::socket_t& socket,
                                                        std::string* user_id) {
    std::vector<std::string> frames;
    zmq::message_t msg;
    auto r = socket.recv(msg, zmq::recv_flags::dontwait);
    if (!r) return std::nullopt;
    frames.push_back(msg.to_string());
    while (msg.more()) {
        (void)socket.recv(msg, zmq::recv_flags::none);  // the rest of a multipart is already here
        frames.push_back(msg.to_string());
    }
    if (user_id) {
        // From the last part: a ROUTER's routing-id part carries no connection metadata.
        const char* u = zmq_msg_gets(msg.handle(), "User-Id");  // null without ZAP
        *user_id = u ? u : "";
    }
    return frames;
}

}  // namespace tandem::wire
