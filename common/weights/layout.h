#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "common/weights/dtype.h"

namespace tandem::weights {

// Every tensor starts at a multiple of this many bytes in a layout's buffer.
inline constexpr uint64_t kTensorAlignment = 256;

// A half-open byte range [begin, end).
struct ByteRange {
    uint64_t begin = 0;
    uint64_t end = 0;
    uint64_t size() const { return end - begin; }
    friend bool operator==(const ByteRange&, const ByteRange&) = default;
};

// What a caller declares: a name, a dtype and a shape (row-major, first dimension = rows).
struct TensorSpec {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
};

// A tensor placed in a layout.
struct TensorInfo {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    uint64_t offset = 0;  // from the start of the layout's buffer; a multiple of kTensorAlignment
    uint64_t bytes = 0;

    uint64_t elements() const;
    // Bytes of one index of the first dimension (the whole tensor for a scalar).
    uint64_t row_bytes() const;
    ByteRange range() const { return {offset, offset + bytes}; }
};

// Rows [begin, end) of a tensor's first dimension.
struct RowRange {
    int64_t begin = 0;
    int64_t end = 0;
};

// One entry of a partial read: a tensor by name, whole or a row range of its first dimension
// (tensor-parallel rollout shards take row ranges of 2-D weights).
struct TensorSelection {
    std::string name;
    std::optional<RowRange> rows;
};

// Bytes to copy from a full layout's buffer into a partial one.
struct CopyRange {
    uint64_t src_offset = 0;
    uint64_t dst_offset = 0;
    uint64_t bytes = 0;
};

struct PartialPlan;

// An ordered list of tensors with 256-byte aligned offsets, and the fingerprint that identifies
// compatible publishers and readers. Immutable after creation; safe to share between threads.
class Layout {
public:
    Layout() = default;
    // Places the tensors in order. Names must be unique and non-empty, dimensions non-negative.
    static Result<Layout> create(std::vector<TensorSpec> specs);

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find(std::string_view name) const;
    // Size of the buffer that holds every tensor (a multiple of kTensorAlignment).
    uint64_t total_bytes() const { return total_bytes_; }
    // xxh3-64 over names, dtypes, shapes and offsets: equal layouts have equal fingerprints.
    uint64_t fingerprint() const { return fingerprint_; }
    // "fp:0123456789abcdef".
    std::string fingerprint_text() const;

    // Splits the buffer into `count` contiguous byte ranges at tensor boundaries, balanced by
    // bytes, for sharded publishers. Ranges may be empty when there are fewer tensors than shards.
    std::vector<ByteRange> shard_ranges(uint32_t count) const;

    // The layout of a partial read (selected tensors, rows cut) and where its bytes come from.
    Result<PartialPlan> plan_partial(const std::vector<TensorSelection>& selection) const;

    nlohmann::json to_json() const;
    static Result<Layout> from_json(const nlohmann::json& json);

    friend bool operator==(const Layout& a, const Layout& b) {
        return a.fingerprint_ == b.fingerprint_ && a.total_bytes_ == b.total_bytes_;
    }

private:
    std::vector<TensorInfo> tensors_;
    std::unordered_map<std::string, size_t> by_name_;
    uint64_t total_bytes_ = 0;
    uint64_t fingerprint_ = 0;
};

struct PartialPlan {
    Layout layout;                  // the compact layout the caller receives
    std::vector<CopyRange> copies;  // sorted by src_offset
};

// "fp:" followed by 16 lowercase hex digits.
std::string fingerprint_text(uint64_t fingerprint);
// Rounds up to a multiple of `alignment` (a power of two).
inline uint64_t align_up(uint64_t value, uint64_t alignment) {
    return (value + alignment - 1) & ~(alignment - 1);
}

}  // namespace tandem::weights
