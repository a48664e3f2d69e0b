#include "common/weights/descriptor.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/weights/device_staging.h"

namespace tandem::weights {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Fields every shard has in both JSON forms; the binary ones are added by the caller.
nlohmann::json shard_common(const ShardDescriptor& s) {
    nlohmann::json j = {{"index", s.index},
                        {"range", {s.range.begin, s.range.end}},
                        {"publisher", s.publisher},
                        {"remote_address", s.remote_address},
                        {"bytes", s.bytes},
                        {"manifest_digest", fmt::format("{:016x}", s.manifest_digest)},
                        {"chunk_bytes", s.chunk_bytes},
                        {"slot", s.slot},
                        {"host", s.host},
                        {"pid", s.pid},
                        {"shm_path", s.shm_path}};
    if (!s.device_rkey.empty()) j["device_remote_address"] = s.device_remote_address;
    return j;
}

Result<uint64_t> parse_hex64(const std::string& text, std::string_view field) {
    if (text.empty() || text.size() > 16 ||
        text.find_first_not_of("0123456789abcdef") != std::string::npos) {
        return invalid_argument(fmt::format("{}: \"{}\" is not a 64-bit hex number", field, text));
    }
    return std::stoull(text, nullptr, 16);
}

Result<ShardDescriptor> shard_common_from(const nlohmann::json& j) {
    ShardDescriptor s;
    s.index = j.at("index").get<uint32_t>();
    const auto range = j.at("range").get<std::vector<uint64_t>>();
    if (range.size() != 2 || range[1] < range[0]) {
        return invalid_argument("shard range must be [begin, end]");
    }
    s.range = {range[0], range[1]};
    s.publisher = j.at("publisher").get<std::string>();
    s.remote_address = j.at("remote_address").get<uint64_t>();
    s.bytes = j.at("bytes").get<uint64_t>();
    TANDEM_ASSIGN_OR_RETURN(
        s.manifest_digest,
        parse_hex64(j.at("manifest_digest").get<std::string>(), "manifest_digest"));
    s.chunk_bytes = j.at("chunk_bytes").get<uint64_t>();
    s.slot = j.at("slot").get<uint32_t>();
    s.host = j.value("host", "");
    s.pid = j.value("pid", int64_t{0});
    s.shm_path = j.value("shm_path", "");
    s.device_remote_address = j.value("device_remote_address", uint64_t{0});
    return s;
}

nlohmann::json version_common(const VersionDescriptor& d) {
    return {{"job", d.job.str()},
            {"version", d.version},
            {"layout_fingerprint", fingerprint_text(d.layout_fingerprint)},
            {"shard_count", d.shard_count},
            {"complete", d.complete()}};
}

Result<VersionDescriptor> version_common_from(const nlohmann::json& j) {
    VersionDescriptor d;
    TANDEM_ASSIGN_OR_RETURN(d.job, JobId::parse(j.at("job").get<std::string>()));
    d.version = j.at("version").get<Version>();
    const std::string fp = j.at("layout_fingerprint").get<std::string>();
    if (fp.rfind("fp:", 0) != 0) {
        return invalid_argument(fmt::format("layout_fingerprint \"{}\" lacks the fp: prefix", fp));
    }
    TANDEM_ASSIGN_OR_RETURN(d.layout_fingerprint, parse_hex64(fp.substr(3), "layout_fingerprint"));
    d.shard_count = j.at("shard_count").get<uint32_t>();
    if (d.shard_count == 0) return invalid_argument("shard_count must be at least 1");
    return d;
}

Status check_ipc_handle(const ShardDescriptor& s) {
    if (s.cuda_ipc_handle.size() == kIpcHandleBytes) return Status();
    return invalid_argument(
        fmt::format("version descriptor shard {}: cuda_ipc_handle has {} bytes, "
                    "expected {}",
                    s.index, s.cuda_ipc_handle.size(), kIpcHandleBytes));
}

Status check_device_rkey(const ShardDescriptor& s) {
    if (!s.device_rkey.empty() && s.device_remote_address != 0) return Status();
    return invalid_argument(
        fmt::format("version descriptor shard {}: a device slot needs both device_rkey ({} "
                    "bytes) and device_remote_address",
                    s.index, s.device_rkey.size()));
}

// The frame an optional binary field of shard `shard` names (`key`: "<field>_frame").
Result<std::vector<std::byte>> named_frame(const nlohmann::json& sj,
                                           const std::vector<std::vector<std::byte>>& frames,
                                           const char* key, uint32_t shard) {
    if (!sj.contains(key)) {
        return invalid_argument(
            fmt::format("version descriptor shard {}: {} is missing", shard, key));
    }
    const size_t k = sj.at(key).get<size_t>();
    if (k >= frames.size()) {
        return invalid_argument(
            fmt::format("version descriptor shard {}: {} {} but the message has {} frames", shard,
                        key, k, frames.size()));
    }
    return frames[k];
}

}  // namespace

std::string describe_for_log(const VersionDescriptor& d) {
    std::string out =
        fmt::format("{} version {} ({}, {} of {} shards)", d.job.str(), d.version,
                    fingerprint_text(d.layout_fingerprint), d.shards.size(), d.shard_count);
    for (const auto& s : d.shards) {
        out += fmt::format("; shard {} [{}, {}) from {} on {} slot {}{}{}", s.index, s.range.begin,
                           s.range.end, s.publisher, s.host.empty() ? "?" : s.host, s.slot,
                           s.cuda_ipc_handle.empty() ? "" : " +ipc",
                           s.device_rkey.empty() ? "" : " +ucx_device");
    }
    return out;
}

bool VersionDescriptor::complete() const {
    if (shards.size() != shard_count) return false;
    for (uint32_t i = 0; i < shard_count; ++i) {
        if (shard(i) == nullptr) return false;
    }
    return true;
}

const ShardDescriptor* VersionDescriptor::shard(uint32_t index) const {
    for (const auto& s : shards) {
        if (s.index == index) return &s;
    }
    return nullptr;
}

std::string base64_encode(std::span<const std::byte> bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        const uint32_t v = (std::to_integer<uint32_t>(bytes[i]) << 16) |
                           (std::to_integer<uint32_t>(bytes[i + 1]) << 8) |
                           std::to_integer<uint32_t>(bytes[i + 2]);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (i < bytes.size()) {
        uint32_t v = std::to_integer<uint32_t>(bytes[i]) << 16;
        if (i + 1 < bytes.size()) v |= std::to_integer<uint32_t>(bytes[i + 1]) << 8;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

Result<std::vector<std::byte>> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0) return invalid_argument("base64 text length is not a multiple of 4");
    std::array<int, 256> value;
    value.fill(-1);
    for (int i = 0; i < 64; ++i) value[static_cast<unsigned char>(kAlphabet[i])] = i;
    std::vector<std::byte> out;
    out.reserve(text.size() / 4 * 3);
    for (size_t i = 0; i < text.size(); i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; ++k) {
            const char c = text[i + k];
            if (c == '=' && i + 4 == text.size() && k >= 2) {
                ++pad;
                v <<= 6;
                continue;
            }
            const int d = value[static_cast<unsigned char>(c)];
            if (d < 0 || pad > 0) return invalid_argument("invalid base64 text");
            v = (v << 6) | static_cast<uint32_t>(d);
        }
        out.push_back(std::byte((v >> 16) & 0xff));
        if (pad < 2) out.push_back(std::byte((v >> 8) & 0xff));
        if (pad < 1) out.push_back(std::byte(v & 0xff));
    }
    return out;
}

nlohmann::json to_json(const VersionDescriptor& d) {
    nlohmann::json j = version_common(d);
    nlohmann::json shards = nlohmann::json::array();
    for (const auto& s : d.shards) {
        nlohmann::json sj = shard_common(s);
        sj["worker_address"] = base64_encode(s.worker_address);
        sj["rkey"] = base64_encode(s.rkey);
        if (!s.cuda_ipc_handle.empty()) sj["cuda_ipc_handle"] = base64_encode(s.cuda_ipc_handle);
        if (!s.device_rkey.empty()) sj["device_rkey"] = base64_encode(s.device_rkey);
        shards.push_back(std::move(sj));
    }
    j["shards"] = std::move(shards);
    return j;
}

Result<VersionDescriptor> descriptor_from_json(const nlohmann::json& j) {
    try {
        TANDEM_ASSIGN_OR_RETURN(VersionDescriptor d, version_common_from(j));
        for (const auto& sj : j.at("shards")) {
            TANDEM_ASSIGN_OR_RETURN(ShardDescriptor s, shard_common_from(sj));
            TANDEM_ASSIGN_OR_RETURN(s.worker_address,
                                    base64_decode(sj.at("worker_address").get<std::string>()));
            TANDEM_ASSIGN_OR_RETURN(s.rkey, base64_decode(sj.at("rkey").get<std::string>()));
            if (sj.contains("cuda_ipc_handle")) {
                TANDEM_ASSIGN_OR_RETURN(s.cuda_ipc_handle,
                                        base64_decode(sj.at("cuda_ipc_handle").get<std::string>()));
                TANDEM_RETURN_IF_ERROR(check_ipc_handle(s));
            }
            if (sj.contains("device_rkey") || s.device_remote_address != 0) {
                TANDEM_ASSIGN_OR_RETURN(s.device_rkey,
                                        base64_decode(sj.value("device_rkey", std::string())));
                TANDEM_RETURN_IF_ERROR(check_device_rkey(s));
            }
            d.shards.push_back(std::move(s));
        }
        return d;
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(std::string("version descriptor JSON: ") + e.what());
    }
}

WireDescriptor encode_wire(const VersionDescriptor& d) {
    WireDescriptor w;
    w.body = version_common(d);
    nlohmann::json shards = nlohmann::json::array();
    for (const auto& s : d.shards) {
        nlohmann::json sj = shard_common(s);
        sj["worker_address_frame"] = w.frames.size();
        w.frames.push_back(s.worker_address);
        sj["rkey_frame"] = w.frames.size();
        w.frames.push_back(s.rkey);
        if (!s.cuda_ipc_handle.empty()) {
            sj["cuda_ipc_handle_frame"] = w.frames.size();
            w.frames.push_back(s.cuda_ipc_handle);
        }
        if (!s.device_rkey.empty()) {
            sj["device_rkey_frame"] = w.frames.size();
            w.frames.push_back(s.device_rkey);
        }
        shards.push_back(std::move(sj));
    }
    w.body["shards"] = std::move(shards);
    return w;
}

Result<VersionDescriptor> decode_wire(const nlohmann::json& body,
                                      const std::vector<std::vector<std::byte>>& frames) {
    try {
        TANDEM_ASSIGN_OR_RETURN(VersionDescriptor d, version_common_from(body));
        for (const auto& sj : body.at("shards")) {
            TANDEM_ASSIGN_OR_RETURN(ShardDescriptor s, shard_common_from(sj));
            const size_t a = sj.at("worker_address_frame").get<size_t>();
            const size_t r = sj.at("rkey_frame").get<size_t>();
            if (a >= frames.size() || r >= frames.size()) {
                return invalid_argument(
                    fmt::format("version descriptor names frame {} but the message has {} frames",
                                std::max(a, r), frames.size()));
            }
            s.worker_address = frames[a];
            s.rkey = frames[r];
            if (sj.contains("cuda_ipc_handle_frame")) {
                TANDEM_ASSIGN_OR_RETURN(s.cuda_ipc_handle,
                                        named_frame(sj, frames, "cuda_ipc_handle_frame", s.index));
                TANDEM_RETURN_IF_ERROR(check_ipc_handle(s));
            }
            if (sj.contains("device_rkey_frame") || s.device_remote_address != 0) {
                TANDEM_ASSIGN_OR_RETURN(s.device_rkey,
                                        named_frame(sj, frames, "device_rkey_frame", s.index));
                TANDEM_RETURN_IF_ERROR(check_device_rkey(s));
            }
            d.shards.push_back(std::move(s));
        }
        return d;
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(std::string("version descriptor message: ") + e.what());
    }
}

Status VersionDirectory::announce(const VersionDescriptor& shard_version) {
    if (shard_version.shards.size() != 1) {
        return invalid_argument(
            fmt::format("announcement of version {} carries {} shards, "
                        "expected one",
                        shard_version.version, shard_version.shards.size()));
    }
    const ShardDescriptor& shard = shard_version.shards.front();
    if (shard.index >= shard_version.shard_count) {
        return invalid_argument(fmt::format("shard {} of version {} is out of range ({} shards)",
                                            shard.index, shard_version.version,
                                            shard_version.shard_count));
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto key = std::make_pair(shard_version.job.number(), shard_version.version);
        auto [it, inserted] = versions_.try_emplace(key, shard_version);
        VersionDescriptor& d = it->second;
        if (!inserted) {
            if (d.layout_fingerprint != shard_version.layout_fingerprint ||
                d.shard_count != shard_version.shard_count) {
                return invalid_argument(fmt::format(
                    "shard {} of version {} has layout {} with {} shards; earlier shards said "
                    "{} with {}",
                    shard.index, shard_version.version,
                    fingerprint_text(shard_version.layout_fingerprint), shard_version.shard_count,
                    fingerprint_text(d.layout_fingerprint), d.shard_count));
            }
            std::erase_if(d.shards,
                          [&](const ShardDescriptor& s) { return s.index == shard.index; });
            d.shards.push_back(shard);
            std::sort(d.shards.begin(), d.shards.end(),
                      [](const auto& a, const auto& b) { return a.index < b.index; });
        }
    }
    changed_.notify_all();
    return Status();
}

void VersionDirectory::retire(JobId job, Version version, uint32_t shard) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = versions_.find({job.number(), version});
    if (it == versions_.end()) return;
    std::erase_if(it->second.shards, [&](const ShardDescriptor& s) { return s.index == shard; });
    if (it->second.shards.empty()) versions_.erase(it);
}

std::optional<VersionDescriptor> VersionDirectory::get(JobId job, Version version) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = versions_.find({job.number(), version});
    if (it == versions_.end() || !it->second.complete()) return std::nullopt;
    return it->second;
}

std::optional<VersionDescriptor> VersionDirectory::newest(JobId job) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = versions_.rbegin(); it != versions_.rend(); ++it) {
        if (it->first.first == job.number() && it->second.complete()) return it->second;
    }
    return std::nullopt;
}

Result<VersionDescriptor> VersionDirectory::wait_for(
    JobId job, Version at_least, std::chrono::steady_clock::time_point deadline) const {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
        for (auto it = versions_.rbegin(); it != versions_.rend(); ++it) {
            if (it->first.first == job.number() && it->first.second >= at_least &&
                it->second.complete()) {
                return it->second;
            }
        }
        if (changed_.wait_until(lock, deadline) == std::cv_status::timeout &&
            std::chrono::steady_clock::now() >= deadline) {
            return deadline_exceeded(
                fmt::format("no complete version >= {} of {} was announced", at_least, job.str()));
        }
    }
}

void VersionDirectory::mark_publisher_gone(const std::string& publisher) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(versions_, [&](const auto& kv) {
        return std::any_of(kv.second.shards.begin(), kv.second.shards.end(),
                           [&](const ShardDescriptor& s) { return s.publisher == publisher; });
    });
}

nlohmann::json to_json(const RelaySource& relay) {
    return {{"reader", relay.reader},
            {"worker_address", base64_encode(relay.worker_address)},
            {"host", relay.host},
            {"pid", relay.pid}};
}

Result<RelaySource> relay_source_from_json(const nlohmann::json& json) {
    try {
        RelaySource r;
        r.reader = json.at("reader").get<std::string>();
        TANDEM_ASSIGN_OR_RETURN(r.worker_address,
                                base64_decode(json.at("worker_address").get<std::string>()));
        r.host = json.value("host", "");
        r.pid = json.value("pid", int64_t{0});
        return r;
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(std::string("relay source JSON: ") + e.what());
    }
}

std::vector<RelayAssignment> plan_relay_tree(const std::vector<std::string>& readers,
                                             uint32_t fan_out) {
    std::vector<RelayAssignment> plan;
    const size_t f = std::max<uint32_t>(fan_out, 1);
    for (size_t i = 0; i < readers.size(); ++i) {
        RelayAssignment a;
        a.reader = readers[i];
        if (i >= f) {
            a.source = (i - f) / f;
            a.depth = plan[*a.source].depth + 1;
        }
        plan.push_back(std::move(a));
    }
    return plan;
}

}  // namespace tandem::weights
