#pragma once

// Naming why a version's layout is not the reader's: the first differing tensor. A reader knows
// only the publisher's fingerprint; a job's publishers may leave their layouts in a directory by
// fingerprint (the Python SDK's Publisher writes run_dir/jobs/<job>/layouts/fp-<hex>.json, a JSON
// list of [name, dtype, shape]), and with ReaderOptions::layouts_dir set the reader's mismatch
// error names the first tensor where the two differ. Pure functions and file reads, any thread.

#include <cstdint>
#include <optional>
#include <string>

#include "common/ids.h"
#include "common/status.h"
#include "common/weights/layout.h"

namespace tandem::weights {

// The first tensor (in layout order) where two layouts differ.
struct TensorDifference {
    enum class Kind {
        kMissing,     // `expected` has it, `got` ends before it
        kUnexpected,  // `got` has it, `expected` ends before it
        kName,
        kDtype,
        kShape,
        kOffset,  // same name, dtype and shape, placed elsewhere
        kNone,    // every tensor is the same (the layouts are equal)
    };
    Kind kind = Kind::kNone;
    size_t index = 0;
    std::string name;      // the tensor's name in `expected` (in `got` for kUnexpected)
    std::string expected;  // what differs, in `expected`'s words ("bf16", "[4, 8]", "offset 256")
    std::string got;       // the same in `got`'s
    // "tensor 3 model.norm.weight: dtype f32 expected, bf16 published".
    std::string text() const;
};
std::string_view difference_kind_name(TensorDifference::Kind kind);
TensorDifference first_difference(const Layout& expected, const Layout& got);

// run_dir/jobs/<job>/layouts: where the job's publishers leave their layouts.
std::string job_layouts_dir(const std::string& run_dir, JobId job);
// <dir>/fp-<16 hex>.json.
std::string layout_file_path(const std::string& dir, uint64_t fingerprint);
// Writes `layout` to its file in `dir` (created if missing), atomically.
Status write_layout_file(const std::string& dir, const Layout& layout);
// The layout with `fingerprint` from its file in `dir`; not_found when there is none, and
// invalid_argument naming the file when it cannot be read as a layout of that fingerprint.
Result<Layout> read_layout_file(const std::string& dir, uint64_t fingerprint);

// The end of a layout-mismatch message: "; first difference at tensor 3 ..." when `dir` holds
// the other layout, else " (the publisher's tensors are not known here: ...)"; empty without a
// directory.
std::string mismatch_detail(const Layout& expected, const std::string& dir,
                            uint64_t got_fingerprint);

}  // namespace tandem::weights
