#include "common/weights/dtype.h"

#include <array>
#include <string>

namespace tandem::weights {

namespace {

struct DTypeEntry {
    DType dtype;
    std::string_view name;
    size_t size;
};

constexpr std::array<DTypeEntry, 7> kDTypes = {{
    {DType::kF32, "F32", 4},
    {DType::kBF16, "BF16", 2},
    {DType::kF16, "F16", 2},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI8, "I8", 1},
    {DType::kI32, "I32", 4},
    {DType::kI64, "I64", 8},
}};

}  // namespace

size_t dtype_size(DType dtype) { return kDTypes[static_cast<size_t>(dtype)].size; }

std::string_view dtype_name(DType dtype) { return kDTypes[static_cast<size_t>(dtype)].name; }

Result<DType> parse_dtype(std::string_view name) {
    for (const auto& entry : kDTypes) {
        if (entry.name == name) return entry.dtype;
    }
    return invalid_argument("unsupported dtype \"" + std::string(name) +
                            "\" (expected one of F32, BF16, F16, F8_E4M3, I8, I32, I64)");
}

}  // namespace tandem::weights
