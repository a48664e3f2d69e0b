#include "common/weights/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tandem::weights {

namespace {

// The Hugging Face implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct RawEntry {
    TensorSpec spec;
    uint64_t begin = 0;
    uint64_t end = 0;
};

Status bad(std::string_view what, std::string message) {
    return invalid_argument(fmt::format("{}: {}", what, message));
}

Result<RawEntry> parse_entry(std::string_view what, const std::string& name,
                             const nlohmann::json& entry) {
    if (!entry.is_object()) return bad(what, fmt::format("tensor \"{}\": not an object", name));
    for (const auto& [key, value] : entry.items()) {
        if (key != "dtype" && key != "shape" && key != "data_offsets") {
            return bad(what, fmt::format("tensor \"{}\": unknown field \"{}\"", name, key));
        }
    }
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) {
        return bad(what, fmt::format("tensor \"{}\": missing string field \"dtype\"", name));
    }
    auto dtype = parse_dtype(entry["dtype"].get<std::string>());
    if (!dtype.ok()) {
        return bad(what, fmt::format("tensor \"{}\": {}", name, dtype.status().message()));
    }
    RawEntry raw;
    raw.spec.name = name;
    raw.spec.dtype = *dtype;
    if (!entry.contains("shape") || !entry["shape"].is_array()) {
        return bad(what, fmt::format("tensor \"{}\": missing array field \"shape\"", name));
    }
    for (const auto& d : entry["shape"]) {
        if (!d.is_number_unsigned()) {
            return bad(what, fmt::format("tensor \"{}\": shape entries must be non-negative "
                                         "integers, got {}",
                                         name, d.dump()));
        }
        const uint64_t v = d.get<uint64_t>();
        if (v > (uint64_t{1} << 60)) {
            return bad(what, fmt::format("tensor \"{}\": dimension {} is too large", name, v));
        }
        raw.spec.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& offsets = entry.contains("data_offsets") ? entry["data_offsets"] : nlohmann::json();
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
        return bad(what, fmt::format("tensor \"{}\": \"data_offsets\" must be [begin, end] of "
                                     "non-negative integers",
                                     name));
    }
    raw.begin = offsets[0].get<uint64_t>();
    raw.end = offsets[1].get<uint64_t>();
    if (raw.end < raw.begin) {
        return bad(what, fmt::format("tensor \"{}\": data_offsets [{}, {}] end before they begin",
                                     name, raw.begin, raw.end));
    }
    return raw;
}

}  // namespace

Result<LoadedWeights> parse_safetensors(std::span<const std::byte> image, std::string_view what) {
    if (image.size() < 8) {
        return bad(what, fmt::format("truncated: {} bytes, too short for the 8-byte header length",
                                     image.size()));
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) {
        header_len = (header_len << 8) | static_cast<uint8_t>(image[static_cast<size_t>(i)]);
    }
    if (header_len > kMaxHeaderBytes) {
        return bad(what, fmt::format("header length {} exceeds the limit of {} bytes", header_len,
                                     kMaxHeaderBytes));
    }
    if (header_len > image.size() - 8) {
        return bad(what, fmt::format("truncated: header declares {} bytes but only {} follow",
                                     header_len, image.size() - 8));
    }
    const char* header_begin = reinterpret_cast<const char*>(image.data() + 8);
    if (header_len == 0 || header_begin[0] != '{') {
        return bad(what, "header does not start with a JSON object");
    }

    // nlohmann keeps the last of duplicate keys; safetensors forbids them, so watch for them.
    std::set<std::string> seen;
    std::string duplicate;
    nlohmann::json::parser_callback_t watch = [&](int depth, nlohmann::json::parse_event_t event,
                                                  nlohmann::json& parsed) {
        if (event == nlohmann::json::parse_event_t::key && depth == 1) {
            const std::string key = parsed.get<std::string>();
            if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
        }
        return true;
    };
    nlohmann::json header;
    try {
        header = nlohmann::json::parse(header_begin, header_begin + header_len, watch);
    } catch (const nlohmann::json::exception& e) {
        return bad(what, fmt::format("header is not valid JSON: {}", e.what()));
    }
    if (!duplicate.empty()) return bad(what, fmt::format("tensor \"{}\" appears twice", duplicate));
    if (!header.is_object()) return bad(what, "header is not a JSON object");

    LoadedWeights out;
    std::vector<RawEntry> entries;
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (!value.is_object()) return bad(what, "\"__metadata__\" is not an object");
            for (const auto& [mk, mv] : value.items()) {
                if (!mv.is_string()) {
                    return bad(what, fmt::format("\"__metadata__\".\"{}\" is not a string", mk));
                }
                out.metadata[mk] = mv.get<std::string>();
            }
            continue;
        }
        TANDEM_ASSIGN_OR_RETURN(RawEntry entry, parse_entry(what, key, value));
        entries.push_back(std::move(entry));
    }
    std::stable_sort(entries.begin(), entries.end(), [](const RawEntry& a, const RawEntry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });

    // The data section must be covered exactly: no holes, no overlaps, nothing past the end.
    const uint64_t data_size = image.size() - 8 - header_len;
    uint64_t expected = 0;
    for (const auto& e : entries) {
        if (e.begin != expected) {
            return bad(what, fmt::format("tensor \"{}\": data_offsets [{}, {}] {} (expected it to "
                                         "begin at {})",
                                         e.spec.name, e.begin, e.end,
                                         e.begin < expected ? "overlap the previous tensor"
                                                            : "leave a hole",
                                         expected));
        }
        expected = e.end;
    }
    if (expected > data_size) {
        const std::string last = entries.empty() ? std::string() : entries.back().spec.name;
        return bad(what, fmt::format("truncated: tensor \"{}\" ends at data byte {} but the file "
                                     "has only {} data bytes",
                                     last, expected, data_size));
    }
    if (expected < data_size) {
        return bad(what,
                   fmt::format("{} trailing bytes after the last tensor", data_size - expected));
    }

    std::vector<TensorSpec> specs;
    specs.reserve(entries.size());
    for (const auto& e : entries) specs.push_back(e.spec);
    auto layout = Layout::create(std::move(specs));
    if (!layout.ok()) return bad(what, layout.status().message());
    for (size_t i = 0; i < entries.size(); ++i) {
        const TensorInfo& t = layout->tensors()[i];
        if (t.bytes != entries[i].end - entries[i].begin) {
            return bad(what,
                       fmt::format("tensor \"{}\": {} {} needs {} bytes but data_offsets "
                                   "give {}",
                                   t.name, dtype_name(t.dtype), nlohmann::json(t.shape).dump(),
                                   t.bytes, entries[i].end - entries[i].begin));
        }
    }

    TANDEM_ASSIGN_OR_RETURN(out.data, HostBuffer::allocate(layout->total_bytes()));
    const std::byte* src = image.data() + 8 + header_len;
    for (size_t i = 0; i < entries.size(); ++i) {
        const TensorInfo& t = layout->tensors()[i];
        if (t.bytes != 0) std::memcpy(out.data.data() + t.offset, src + entries[i].begin, t.bytes);
    }
    out.layout = std::move(*layout);
    return out;
}

Result<LoadedWeights> read_safetensors(const std::string& path) {
    auto mapping = ReadOnlyMapping::open(path);
    if (!mapping.ok()) {
        // An empty file cannot be mapped; report it as the truncation it is.
        if (::access(path.c_str(), R_OK) == 0) {
            return parse_safetensors({}, path);
        }
        return mapping.status().with_context("reading safetensors");
    }
    return parse_safetensors({mapping->data(), mapping->size()}, path);
}

Result<std::vector<std::byte>> encode_safetensors(
    const Layout& layout, std::span<const std::byte> data,
    const std::map<std::string, std::string>& metadata) {
    if (data.size() < layout.total_bytes()) {
        return invalid_argument(
            fmt::format("encoding safetensors: {} bytes given, layout {} "
                        "needs {}",
                        data.size(), layout.fingerprint_text(), layout.total_bytes()));
    }
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const auto& t : layout.tensors()) {
        header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                          {"shape", t.shape},
                          {"data_offsets", {offset, offset + t.bytes}}};
        offset += t.bytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
    std::vector<std::byte> image(8 + text.size() + offset);
    const uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) image[static_cast<size_t>(i)] = std::byte((n >> (8 * i)) & 0xff);
    std::memcpy(image.data() + 8, text.data(), text.size());
    std::byte* dst = image.data() + 8 + text.size();
    for (const auto& t : layout.tensors()) {
        if (t.bytes != 0) std::memcpy(dst, data.data() + t.offset, t.bytes);
        dst += t.bytes;
    }
    return image;
}

Status write_safetensors(const std::string& path, const Layout& layout,
                         std::span<const std::byte> data,
                         const std::map<std::string, std::string>& metadata) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<std::byte> image,
                            encode_safetensors(layout, data, metadata));
    const std::string tmp = fmt::format("{}.tmp-{}", path, static_cast<long>(getpid()));
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return unavailable(fmt::format("writing {}: {}", tmp, std::strerror(errno)));
    }
    size_t done = 0;
    while (done < image.size()) {
        const ssize_t n = ::write(fd, image.data() + done, image.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            Status s = unavailable(fmt::format("writing {}: {}", tmp, std::strerror(errno)));
            ::close(fd);
            ::unlink(tmp.c_str());
            return s;
        }
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        return unavailable(fmt::format("flushing {}: {}", tmp, std::strerror(errno)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        Status s =
            unavailable(fmt::format("renaming {} to {}: {}", tmp, path, std::strerror(errno)));
        ::unlink(tmp.c_str());
        return s;
    }
    return Status();
}

}  // namespace tandem::weights
