#include "common/config/schema.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

namespace tandem::config {

std::string ConfigError::str() const {
    std::string loc;
    if (!where.override_text.empty()) {
        loc = fmt::format("override '{}'", where.override_text);
    } else if (where.line > 0) {
        loc = fmt::format("{}:{}:{}", where.file, where.line, where.col);
    } else {
        loc = where.file;
    }
    if (path.empty()) return fmt::format("{}: {}", loc, what);
    return fmt::format("{}: {}: {}", loc, path, what);
}

Where DecodeContext::locate(const YAML::Node& at, const std::string& path) const {
    Where w;
    w.file = file_;
    // Overrides create nodes without a position; name the override instead.
    for (const auto& [opath, text] : overrides_) {
        std::string dotted = path;
        std::replace(dotted.begin(), dotted.end(), '[', '.');
        dotted.erase(std::remove(dotted.begin(), dotted.end(), ']'), dotted.end());
        if (dotted == opath || dotted.starts_with(opath + ".") || opath.starts_with(dotted + ".")) {
            const YAML::Mark m = at.IsDefined() ? at.Mark() : YAML::Mark::null_mark();
            if (m.is_null() || dotted == opath) {
                w.override_text = text;
                return w;
            }
        }
    }
    if (at.IsDefined()) {
        const YAML::Mark m = at.Mark();
        if (!m.is_null()) {
            w.line = m.line + 1;
            w.col = m.column + 1;
        }
    }
    return w;
}

void DecodeContext::error(const YAML::Node& at, const std::string& path, std::string what) {
    errors_.push_back(ConfigError{locate(at, path), path, std::move(what)});
}

Status DecodeContext::status() const {
    if (errors_.empty()) return Status();
    std::string msg;
    for (const auto& e : errors_) {
        if (!msg.empty()) msg += '\n';
        msg += e.str();
    }
    return invalid_argument(std::move(msg));
}

std::string join_path(const std::string& base, std::string_view key) {
    if (base.empty()) return std::string(key);
    return fmt::format("{}.{}", base, key);
}

std::string index_path(const std::string& base, size_t i) { return fmt::format("{}[{}]", base, i); }

std::string describe_node(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Null:
            return "nothing (null)";
        case YAML::NodeType::Scalar:
            return fmt::format("\"{}\"", node.Scalar());
        default:
            return "nothing";
    }
}

namespace {
size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}
}  // namespace

std::string closest_key(std::string_view key, const std::vector<std::string_view>& candidates) {
    std::string_view best;
    size_t best_d = SIZE_MAX;
    for (auto c : candidates) {
        const size_t d = edit_distance(key, c);
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    if (best.empty() || best_d > std::max<size_t>(2, key.size() / 3)) return "";
    return std::string(best);
}

std::optional<bool> parse_bool(const std::string& t) {
    if (t == "true" || t == "True" || t == "TRUE" || t == "yes" || t == "on") return true;
    if (t == "false" || t == "False" || t == "FALSE" || t == "no" || t == "off") return false;
    return std::nullopt;
}

std::optional<int64_t> parse_int(const std::string& t) {
    int64_t v = 0;
    const char* end = t.data() + t.size();
    const char* begin = t.data() + (!t.empty() && t[0] == '+' ? 1 : 0);
    auto [p, ec] = std::from_chars(begin, end, v);
    if (t.empty() || ec != std::errc() || p != end) return std::nullopt;
    return v;
}

std::optional<uint64_t> parse_uint(const std::string& t) {
    uint64_t v = 0;
    const char* end = t.data() + t.size();
    const char* begin = t.data() + (!t.empty() && t[0] == '+' ? 1 : 0);
    auto [p, ec] = std::from_chars(begin, end, v);
    if (t.empty() || ec != std::errc() || p != end) return std::nullopt;
    return v;
}

std::optional<double> parse_double(const std::string& t) {
    if (t.empty()) return std::nullopt;
    if (t == ".inf" || t == ".Inf") return HUGE_VAL;
    if (t == "-.inf" || t == "-.Inf") return -HUGE_VAL;
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(t.c_str(), &end);
    if (errno != 0 || end != t.c_str() + t.size() || std::isnan(v)) return std::nullopt;
    return v;
}

std::string format_double(double v) {
    if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
    if (std::isnan(v)) return ".nan";
    std::string s = fmt::format("{}", v);  // shortest round-trip representation
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
}

YAML::Node Decoder::find(std::string_view key) const {
    for (const auto& kv : map_) {
        if (kv.first.IsScalar() && kv.first.Scalar() == key) return kv.second;
    }
    return YAML::Node(YAML::NodeType::Undefined);
}

void Decoder::finish() {
    std::set<std::string> seen;
    for (const auto& kv : map_) {
        if (!kv.first.IsScalar()) {
            ctx_.error(kv.first, path_, "keys must be plain strings");
            continue;
        }
        const std::string& key = kv.first.Scalar();
        const std::string path = join_path(path_, key);
        if (!seen.insert(key).second) {
            ctx_.error(kv.first, path, "duplicate key");
            continue;
        }
        if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
        const std::string hint = closest_key(key, known_);
        ctx_.error(kv.first, path,
                   hint.empty() ? std::string("unknown key")
                                : fmt::format("unknown key (did you mean '{}'?)", hint));
    }
}

}  // namespace tandem::config
