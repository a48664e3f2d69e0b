#pragma once

// Minimal NumPy .npy reading and writing for the attention tool: little-endian float32 or
// float64 arrays in C order in, float32 out.

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::kernels {

struct NpyArray {
    std::vector<int64_t> shape;
    std::vector<float> data;  // converted to float32, C order
};

// Reads `path`; accepts dtype '<f4' or '<f8' (float64 is rounded to float32), C order only.
Result<NpyArray> read_npy(const std::string& path);

// Writes `data` as a float32 array of `shape` (format version 1.0). Writes to a temporary file
// and renames it, so a failed write leaves no partial file.
Status write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace tandem::kernels
