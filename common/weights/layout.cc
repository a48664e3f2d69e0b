#include "common/weights/layout.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <xxhash.h>
#include <nlohmann/json.hpp>

namespace tandem::weights {

namespace {

constexpr uint64_t kMaxElements = uint64_t{1} << 60;
constexpr size_t kMaxNameBytes = 4096;

Result<uint64_t> count_elements(const std::string& name, const std::vector<int64_t>& shape) {
    uint64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) {
            return invalid_argument(
                fmt::format("tensor \"{}\": dimension {} is negative", name, d));
        }
        if (d != 0 && n > kMaxElements / static_cast<uint64_t>(d)) {
            return invalid_argument(fmt::format("tensor \"{}\": too many elements", name));
        }
        n *= static_cast<uint64_t>(d);
    }
    return n;
}

void hash_u64(XXH3_state_t* state, uint64_t v) { XXH3_64bits_update(state, &v, sizeof(v)); }

}  // namespace

uint64_t TensorInfo::elements() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
}

uint64_t TensorInfo::row_bytes() const {
    if (shape.empty()) return bytes;
    if (shape[0] == 0) return 0;
    return bytes / static_cast<uint64_t>(shape[0]);
}

std::string fingerprint_text(uint64_t fingerprint) {
    return fmt::format("fp:{:016x}", fingerprint);
}

std::string Layout::fingerprint_text() const { return weights::fingerprint_text(fingerprint_); }

Result<Layout> Layout::create(std::vector<TensorSpec> specs) {
    Layout layout;
    layout.tensors_.reserve(specs.size());
    uint64_t offset = 0;
    for (auto& spec : specs) {
        if (spec.name.empty()) return invalid_argument("a tensor has an empty name");
        if (spec.name.size() > kMaxNameBytes) {
            return invalid_argument(fmt::format("tensor name of {} bytes is too long (max {})",
                                                spec.name.size(), kMaxNameBytes));
        }
        if (layout.by_name_.count(spec.name) != 0) {
            return invalid_argument(fmt::format("tensor \"{}\" appears twice", spec.name));
        }
        TANDEM_ASSIGN_OR_RETURN(uint64_t elements, count_elements(spec.name, spec.shape));
        TensorInfo info;
        info.bytes = elements * dtype_size(spec.dtype);
        info.offset = align_up(offset, kTensorAlignment);
        offset = info.offset + info.bytes;
        info.name = std::move(spec.name);
        info.dtype = spec.dtype;
        info.shape = std::move(spec.shape);
        layout.by_name_.emplace(info.name, layout.tensors_.size());
        layout.tensors_.push_back(std::move(info));
    }
    layout.total_bytes_ = align_up(offset, kTensorAlignment);

    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    const char kTag[] = "tandem-layout-v1";
    XXH3_64bits_update(state, kTag, sizeof(kTag));
    hash_u64(state, kTensorAlignment);
    hash_u64(state, layout.tensors_.size());
    for (const auto& t : layout.tensors_) {
        hash_u64(state, t.name.size());
        XXH3_64bits_update(state, t.name.data(), t.name.size());
        hash_u64(state, static_cast<uint64_t>(t.dtype));
        hash_u64(state, t.shape.size());
        for (int64_t d : t.shape) hash_u64(state, static_cast<uint64_t>(d));
        hash_u64(state, t.offset);
    }
    layout.fingerprint_ = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    return layout;
}

const TensorInfo* Layout::find(std::string_view name) const {
    auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

std::vector<ByteRange> Layout::shard_ranges(uint32_t count) const {
    std::vector<ByteRange> ranges;
    if (count == 0) return ranges;
    ranges.reserve(count);
    // Cut before the first tensor that would take a shard past its fair share of the bytes.
    size_t next = 0;
    uint64_t begin = 0;
    for (uint32_t s = 0; s < count; ++s) {
        uint64_t end = begin;
        if (s + 1 == count) {
            end = total_bytes_;
        } else {
            const uint64_t target = total_bytes_ * (s + 1) / count;
            while (next < tensors_.size()) {
                const uint64_t tensor_end = align_up(tensors_[next].range().end, kTensorAlignment);
                // Take the tensor if it ends before the target or if most of it lies before it.
                const uint64_t mid = tensors_[next].offset + tensors_[next].bytes / 2;
                if (tensor_end <= target || mid < target) {
                    end = tensor_end;
                    ++next;
                } else {
                    break;
                }
            }
        }
        end = std::max(end, begin);
        ranges.push_back({begin, end});
        begin = end;
    }
    return ranges;
}

Result<PartialPlan> Layout::plan_partial(const std::vector<TensorSelection>& selection) const {
    std::vector<TensorSpec> specs;
    std::vector<ByteRange> sources;
    specs.reserve(selection.size());
    for (const auto& sel : selection) {
        const TensorInfo* t = find(sel.name);
        if (t == nullptr) {
            return not_found(fmt::format("partial read: no tensor \"{}\" in layout {}", sel.name,
                                         fingerprint_text()));
        }
        TensorSpec spec{t->name, t->dtype, t->shape};
        ByteRange src = t->range();
        if (sel.rows) {
            if (t->shape.empty()) {
                return invalid_argument(fmt::format(
                    "partial read: tensor \"{}\" is a scalar; it has no rows", t->name));
            }
            const RowRange r = *sel.rows;
            if (r.begin < 0 || r.end < r.begin || r.end > t->shape[0]) {
                return invalid_argument(
                    fmt::format("partial read: rows [{}, {}) out of range for tensor \"{}\" with "
                                "{} rows",
                                r.begin, r.end, t->name, t->shape[0]));
            }
            spec.shape[0] = r.end - r.begin;
            src = {t->offset + static_cast<uint64_t>(r.begin) * t->row_bytes(),
                   t->offset + static_cast<uint64_t>(r.end) * t->row_bytes()};
        }
        specs.push_back(std::move(spec));
        sources.push_back(src);
    }
    TANDEM_ASSIGN_OR_RETURN(Layout partial, Layout::create(std::move(specs)));
    PartialPlan plan;
    for (size_t i = 0; i < sources.size(); ++i) {
        if (sources[i].size() == 0) continue;
        plan.copies.push_back({sources[i].begin, partial.tensors()[i].offset, sources[i].size()});
    }
    std::sort(plan.copies.begin(), plan.copies.end(),
              [](const CopyRange& a, const CopyRange& b) { return a.src_offset < b.src_offset; });
    plan.layout = std::move(partial);
    return plan;
}

nlohmann::json Layout::to_json() const {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : tensors_) {
        tensors.push_back({{"name", t.name},
                           {"dtype", std::string(dtype_name(t.dtype))},
                           {"shape", t.shape},
                           {"offset", t.offset},
                           {"bytes", t.bytes}});
    }
    return {{"fingerprint", fingerprint_text()},
            {"total_bytes", total_bytes_},
            {"alignment", kTensorAlignment},
            {"tensors", std::move(tensors)}};
}

Result<Layout> Layout::from_json(const nlohmann::json& json) {
    try {
        std::vector<TensorSpec> specs;
        for (const auto& t : json.at("tensors")) {
            TANDEM_ASSIGN_OR_RETURN(DType dtype, parse_dtype(t.at("dtype").get<std::string>()));
            specs.push_back({t.at("name").get<std::string>(), dtype,
                             t.at("shape").get<std::vector<int64_t>>()});
        }
        TANDEM_ASSIGN_OR_RETURN(Layout layout, Layout::create(std::move(specs)));
        if (json.contains("fingerprint") &&
            json.at("fingerprint").get<std::string>() != layout.fingerprint_text()) {
            return invalid_argument(
                fmt::format("layout JSON says fingerprint {} but its tensors give {}",
                            json.at("fingerprint").get<std::string>(), layout.fingerprint_text()));
        }
        return layout;
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(std::string("layout JSON: ") + e.what());
    }
}

}  // namespace tandem::weights
