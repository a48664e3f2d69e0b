#pragma once

// Checks of the cluster file's security fields (docs/security.md): ZeroMQ CURVE keys in Z85 text
// and whether an address is loopback. No ZeroMQ here; common/net/curve.h uses the keys.

#include <string_view>

#include "common/status.h"

namespace tandem::config {

// A CURVE key as Z85 text: 40 characters of the Z85 alphabet encoding 32 bytes. The error says
// what is wrong (length, the first bad character and its position); callers add file and field.
Status validate_z85_key(std::string_view key);

// "127.x.x.x", "::1", "localhost" (and "[::1]"). Wildcards ("0.0.0.0", "*") are not loopback.
bool is_loopback_host(std::string_view host);

}  // namespace tandem::config
