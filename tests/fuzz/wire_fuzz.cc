// Fuzz target: arbitrary frames through the control-plane decoder (wire::decode) and through the
// from_json of every message type. Must never crash or hang; what is accepted must encode and
// decode back to the same envelope, and what is refused must be answerable with an Error reply
// (the coordinator echoes parts of a bad header in it).
//
// Input format: frames one after another, each "<decimal length>:<bytes>" (netstring-like, so
// seeds stay readable and the replay driver's digit mutations change lengths). A frame whose
// length is missing, malformed or longer than what is left takes the rest of the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/wire/envelope.h"
#include "common/wire/messages.h"

namespace {

using tandem::wire::Json;

std::vector<std::string> split_frames(std::string_view in) {
    std::vector<std::string> frames;
    while (!in.empty() && frames.size() < 64) {
        const size_t colon = in.find(':');
        size_t len = 0;
        bool ok = colon != std::string_view::npos && colon > 0 && colon <= 6;
        for (size_t i = 0; ok && i < colon; ++i) {
            ok = in[i] >= '0' && in[i] <= '9';
            len = len * 10 + static_cast<size_t>(in[i] - '0');
        }
        if (!ok || len > in.size() - colon - 1) {
            frames.emplace_back(in);
            break;
        }
        frames.emplace_back(in.substr(colon + 1, len));
        in.remove_prefix(colon + 1 + len);
    }
    return frames;
}

// from_json of M on arbitrary JSON: whatever it accepts survives to_json -> from_json unchanged.
template <typename M>
void check_message(const Json& j) {
    auto m = M::from_json(j);
    if (!m.ok()) {
        if (m.status().message().empty()) __builtin_trap();
        return;
    }
    const Json once = m->to_json();
    auto again = M::from_json(once);
    if (!again.ok() || again->to_json() != once) __builtin_trap();
    (void)once.dump();  // what we accept can be sent
}

void check_all_messages(const Json& j) {
    using namespace tandem::wire;
    check_message<Register>(j);
    check_message<RegisterAck>(j);
    check_message<Heartbeat>(j);
    check_message<HeartbeatAck>(j);
    check_message<StartActor>(j);
    check_message<StopActor>(j);
    check_message<ActorState>(j);
    check_message<LogLines>(j);
    check_message<Error>(j);
    check_message<VersionPublished>(j);
    check_message<VersionRetired>(j);
    check_message<RelayJoin>(j);
    check_message<JobMetrics>(j);
    check_message<ActorEndpoint>(j);
    check_message<ActorReport>(j);
    check_message<Resources>(j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace tandem::wire;
    const std::vector<std::string> frames =
        split_frames(std::string_view(reinterpret_cast<const char*>(data), size));

    Envelope partial;
    auto e = decode(frames, &partial);
    if (!e.ok()) {
        if (e.status().message().empty()) __builtin_trap();
        // What the coordinator answers (AgentDispatcher::reply_error) must encode.
        const Error reply{"invalid_argument", e.status().message(), partial.seq};
        if (encode(make_envelope(reply, 1)).size() != 2) __builtin_trap();
    } else {
        // Accepted: re-encodes to an identical envelope, and its body decodes as its type.
        auto again = decode(encode(*e));
        if (!again.ok() || again->type != e->type || again->seq != e->seq ||
            again->major != e->major || again->minor != e->minor || again->body != e->body ||
            again->frames != e->frames) {
            __builtin_trap();
        }
        if (!validate_body(e->type, e->body).ok()) __builtin_trap();
    }

    // Every message type's from_json over the body frame, whatever the header said.
    if (frames.size() >= 2) {
        const Json body = Json::parse(frames[1], nullptr, /*allow_exceptions=*/false);
        if (!body.is_discarded()) check_all_messages(body);
    }
    return 0;
}
