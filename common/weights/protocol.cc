#include "common/weights/protocol.h"

namespace tandem::weights::wire {

std::string_view request_type_name(RequestType type) {
    switch (type) {
        case RequestType::kHello:
            return "hello";
        case RequestType::kAcquire:
            return "acquire";
        case RequestType::kRenew:
            return "renew";
        case RequestType::kRelease:
            return "release";
        case RequestType::kRead:
            return "read";
        case RequestType::kAwait:
            return "await";
    }
    return "unknown";
}

Status reply_status(const Reply& reply, std::span<const std::byte> payload) {
    if (reply.code == 0) return Status();
    std::string message(reinterpret_cast<const char*>(payload.data()), payload.size());
    const int code = reply.code;
    if (code <= 0 || code > static_cast<int>(StatusCode::kInternal)) {
        return internal_error("source replied with unknown code: " + message);
    }
    return Status(static_cast<StatusCode>(code), std::move(message));
}

}  // namespace tandem::weights::wire
