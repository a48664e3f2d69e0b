#include "common/weights/reader_mismatch.h"

#include <filesystem>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/run_dir.h"
#include "common/weights/dtype.h"

namespace tandem::weights {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
    return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string spec_text(const TensorInfo& t) {
    return fmt::format("{} {}{}", t.name, dtype_name(t.dtype), shape_text(t.shape));
}

}  // namespace

std::string_view difference_kind_name(TensorDifference::Kind kind) {
    switch (kind) {
        case TensorDifference::Kind::kMissing:
            return "missing";
        case TensorDifference::Kind::kUnexpected:
            return "unexpected";
        case TensorDifference::Kind::kName:
            return "name";
        case TensorDifference::Kind::kDtype:
            return "dtype";
        case TensorDifference::Kind::kShape:
            return "shape";
        case TensorDifference::Kind::kOffset:
            return "offset";
        case TensorDifference::Kind::kNone:
            return "none";
    }
    return "none";
}

std::string TensorDifference::text() const {
    switch (kind) {
        case Kind::kMissing:
            return fmt::format("tensor {} {}: missing from the published layout ({} tensors)",
                               index, expected, got);
        case Kind::kUnexpected:
            return fmt::format("tensor {} {}: published but not expected ({} tensors expected)",
                               index, got, expected);
        case Kind::kNone:
            return "no tensor (the layouts are the same)";
        default:
            return fmt::format("tensor {} {}: {} {} expected, {} published", index, name,
                               difference_kind_name(kind), expected, got);
    }
}

TensorDifference first_difference(const Layout& expected, const Layout& got) {
    const auto& a = expected.tensors();
    const auto& b = got.tensors();
    TensorDifference d;
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        d.index = i;
        if (i >= b.size()) {
            d.kind = TensorDifference::Kind::kMissing;
            d.name = a[i].name;
            d.expected = spec_text(a[i]);
            d.got = std::to_string(b.size());
            return d;
        }
        if (i >= a.size()) {
            d.kind = TensorDifference::Kind::kUnexpected;
            d.name = b[i].name;
            d.expected = std::to_string(a.size());
            d.got = spec_text(b[i]);
            return d;
        }
        d.name = a[i].name;
        if (a[i].name != b[i].name) {
            d.kind = TensorDifference::Kind::kName;
            d.expected = spec_text(a[i]);
            d.got = spec_text(b[i]);
            return d;
        }
        if (a[i].dtype != b[i].dtype) {
            d.kind = TensorDifference::Kind::kDtype;
            d.expected = std::string(dtype_name(a[i].dtype));
            d.got = std::string(dtype_name(b[i].dtype));
            return d;
        }
        if (a[i].shape != b[i].shape) {
            d.kind = TensorDifference::Kind::kShape;
            d.expected = shape_text(a[i].shape);
            d.got = shape_text(b[i].shape);
            return d;
        }
        if (a[i].offset != b[i].offset) {
            d.kind = TensorDifference::Kind::kOffset;
            d.expected = std::to_string(a[i].offset);
            d.got = std::to_string(b[i].offset);
            return d;
        }
    }
    return TensorDifference{};
}

std::string job_layouts_dir(const std::string& run_dir, JobId job) {
    return (std::filesystem::path(run_dir) / "jobs" / job.str() / "layouts").string();
}

std::string layout_file_path(const std::string& dir, uint64_t fingerprint) {
    return (std::filesystem::path(dir) / fmt::format("fp-{:016x}.json", fingerprint)).string();
}

Status write_layout_file(const std::string& dir, const Layout& layout) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return unavailable(fmt::format("{}: cannot create: {}", dir, ec.message()));
    nlohmann::json tensors = nlohmann::json::array();
    for (const TensorInfo& t : layout.tensors()) {
        tensors.push_back({t.name, std::string(dtype_name(t.dtype)), t.shape});
    }
    return write_file_atomic(layout_file_path(dir, layout.fingerprint()), tensors.dump());
}

Result<Layout> read_layout_file(const std::string& dir, uint64_t fingerprint) {
    const std::string path = layout_file_path(dir, fingerprint);
    if (!std::filesystem::exists(path)) {
        return not_found(fmt::format("{}: no such layout file", path));
    }
    TANDEM_ASSIGN_OR_RETURN(std::string text, read_file(path));
    std::vector<TensorSpec> specs;
    try {
        const nlohmann::json json = nlohmann::json::parse(text);
        for (const auto& t : json) {
            auto dtype = parse_dtype(t.at(1).get<std::string>());
            if (!dtype.ok()) return dtype.status().with_context(path);
            specs.push_back(
                {t.at(0).get<std::string>(), *dtype, t.at(2).get<std::vector<int64_t>>()});
        }
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(
            fmt::format("{}: expected a JSON list of [name, dtype, shape]: {}", path, e.what()));
    }
    auto layout = Layout::create(std::move(specs));
    if (!layout.ok()) return layout.status().with_context(path);
    if (layout->fingerprint() != fingerprint) {
        return invalid_argument(fmt::format("{}: its tensors give layout {}, not {}", path,
                                            layout->fingerprint_text(),
                                            fingerprint_text(fingerprint)));
    }
    return std::move(*layout);
}

std::string mismatch_detail(const Layout& expected, const std::string& dir,
                            uint64_t got_fingerprint) {
    if (dir.empty()) return "";
    auto got = read_layout_file(dir, got_fingerprint);
    if (!got.ok()) {
        return fmt::format(" (the publisher's tensors are not known here: {})",
                           got.status().message());
    }
    return "; first difference at " + first_difference(expected, *got).text();
}

}  // namespace tandem::weights
