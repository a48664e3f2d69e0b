#include "common/config/security.h"

#include <fmt/format.h>

namespace tandem::config {

namespace {
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
}  // namespace

Status validate_z85_key(std::string_view key) {
    if (key.size() != 40)
        return invalid_argument(fmt::format(
            "a CURVE key is 40 characters of Z85 text (32 bytes), got {} characters", key.size()));
    for (size_t i = 0; i < key.size(); i += 5) {
        uint64_t value = 0;
        for (size_t j = i; j < i + 5; ++j) {
            const size_t digit = kZ85Alphabet.find(key[j]);
            if (digit == std::string_view::npos)
                return invalid_argument(fmt::format(
                    "a CURVE key is Z85 text: character {} ('{}') is not in the Z85 alphabet",
                    j + 1, key[j]));
            value = value * 85 + digit;
        }
        if (value > 0xffffffffULL)
            return invalid_argument(fmt::format(
                "a CURVE key is Z85 text: characters {}-{} do not encode 4 bytes", i + 1, i + 5));
    }
    return Status();
}

bool is_loopback_host(std::string_view host) {
    if (host == "localhost" || host == "::1" || host == "[::1]") return true;
    return host.starts_with("127.");
}

}  // namespace tandem::config
