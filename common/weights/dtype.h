#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace tandem::weights {

// Element types a weight tensor may have. The names are the safetensors spellings.
enum class DType : uint8_t {
    kF32,
    kBF16,
    kF16,
    kF8E4M3,
    kI8,
    kI32,
    kI64,
};

// Bytes per element.
size_t dtype_size(DType dtype);
// "F32", "BF16", "F16", "F8_E4M3", "I8", "I32", "I64".
std::string_view dtype_name(DType dtype);
// The inverse of dtype_name; names any other dtype in the error.
Result<DType> parse_dtype(std::string_view name);

}  // namespace tandem::weights
