#include "common/wire/envelope.h"

#include <charconv>

#include <fmt/format.h>

#include "common/wire/messages.h"

namespace tandem::wire {

namespace {
constexpr std::string_view kMagic = "TANDEM/";

template <typename T>
bool parse_num(std::string_view s, T& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}
}  // namespace

std::vector<std::string> encode(const Envelope& e) {
    std::vector<std::string> frames;
    frames.reserve(2 + e.frames.size());
    frames.push_back(fmt::format("{}{}.{} {} {}", kMagic, e.major, e.minor, e.type, e.seq));
    // Error replies echo parts of a peer's bad header, which need not be UTF-8: replace such
    // bytes (U+FFFD) instead of throwing out of the coordinator loop.
    frames.push_back(e.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    for (const auto& f : e.frames) frames.push_back(f);
    return frames;
}

Result<Envelope> decode(const std::vector<std::string>& frames, Envelope* partial) {
    Envelope e;
    auto fail = [&](Status s) -> Result<Envelope> {
        if (partial) *partial = e;
        return s;
    };
    if (frames.size() < 2) {
        return fail(invalid_argument(
            fmt::format("expected at least 2 frames (header, body), got {}", frames.size())));
    }
    std::string_view h = frames[0];
    if (!h.starts_with(kMagic)) {
        return fail(invalid_argument("header does not start with TANDEM/"));
    }
    h.remove_prefix(kMagic.size());
    const auto sp1 = h.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : h.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) {
        return fail(invalid_argument("header is not 'TANDEM/MAJOR.MINOR TYPE SEQ'"));
    }
    const std::string_view ver = h.substr(0, sp1);
    const auto dot = ver.find('.');
    if (dot == std::string_view::npos || !parse_num(ver.substr(0, dot), e.major) ||
        !parse_num(ver.substr(dot + 1), e.minor)) {
        return fail(invalid_argument(fmt::format("bad protocol version '{}'", ver)));
    }
    e.type = std::string(h.substr(sp1 + 1, sp2 - sp1 - 1));
    if (!parse_num(h.substr(sp2 + 1), e.seq)) {
        return fail(invalid_argument("bad sequence number in header"));
    }
    if (e.major != kProtocolMajor) {
        return fail(
            invalid_argument(fmt::format("protocol {}.{} is not supported (this side speaks {}.x)",
                                         e.major, e.minor, kProtocolMajor)));
    }
    auto body = nlohmann::json::parse(frames[1], nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded())
        return fail(invalid_argument(fmt::format("{}: body is not JSON", e.type)));
    if (!body.is_object()) {
        return fail(invalid_argument(fmt::format("{}: body is not a JSON object", e.type)));
    }
    e.body = std::move(body);
    e.frames.assign(frames.begin() + 2, frames.end());
    if (Status s = validate_body(e.type, e.body); !s.ok()) return fail(s);
    return e;
}

}  // namespace tandem::wire
