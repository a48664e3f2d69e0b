#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/weights/layout.h"
#include "common/weights/memory.h"

namespace tandem::weights {

// Tensors read from a safetensors file, placed in a Layout (256-byte aligned offsets).
struct LoadedWeights {
    Layout layout;
    HostBuffer data;  // layout.total_bytes() bytes; padding between tensors is zero
    std::map<std::string, std::string> metadata;  // the "__metadata__" entry
};

// Parses a safetensors image (8-byte little-endian header length, JSON header, raw data). Strict:
// unknown dtypes or fields, duplicate names, offsets that overlap, leave holes or run past the end,
// byte counts that disagree with the shape, and truncated files are invalid_argument errors that
// name `what` and the offending tensor. Tensors are ordered by their data offsets.
Result<LoadedWeights> parse_safetensors(std::span<const std::byte> image, std::string_view what);
Result<LoadedWeights> read_safetensors(const std::string& path);

// Encodes `data` (laid out by `layout`) as a safetensors image with densely packed tensors in
// layout order. `data` must hold layout.total_bytes() bytes.
Result<std::vector<std::byte>> encode_safetensors(
    const Layout& layout, std::span<const std::byte> data,
    const std::map<std::string, std::string>& metadata = {});
// Writes through a temporary file and a rename: `path` exists only if the write succeeded.
Status write_safetensors(const std::string& path, const Layout& layout,
                         std::span<const std::byte> data,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace tandem::weights
