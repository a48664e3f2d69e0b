#pragma once

// One description per config struct serves decoding (YAML -> struct, with errors that name file,
// line, column and key path), encoding (struct -> YAML, for printing the resolved configuration)
// and cross-field checks. A struct describes itself with a static `visit`:
//
//   struct Sampling {
//       double temperature = 1.0;
//       template <typename V, typename S>
//       static void visit(V& v, S& s) {
//           v.field("temperature", s.temperature, Range{0.0, 10.0});
//           v.check(s.temperature > 0 || ..., "temperature", "must be ...");
//       }
//   };
//
// S is the struct or the const struct; V is a Decoder or an Encoder.

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "common/status.h"

namespace tandem::config {

// Field options.
struct Required {};
struct NonEmpty {};
template <typename T>
struct Range {
    T lo;
    T hi;
};
template <typename T>
Range(T, T) -> Range<T>;

// Specialise for each enum used in configs: `static constexpr std::array<std::pair<E, const char*>,
// N> kNames{...}`.
template <typename E>
struct EnumNames;

template <typename E>
std::string_view enum_name(E value) {
    for (const auto& [v, n] : EnumNames<E>::kNames) {
        if (v == value) return n;
    }
    return "?";
}

template <typename E>
std::string enum_choices() {
    std::string out;
    for (const auto& [v, n] : EnumNames<E>::kNames) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

// A struct with a static `template <typename V, typename S> static void visit(V&, S&)`.
template <typename T>
concept Described = requires(T& t, int& v) {
    T::visit(v, t);
};

template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<std::optional<T>> : std::true_type {};
template <typename T>
struct IsVector : std::false_type {};
template <typename T>
struct IsVector<std::vector<T>> : std::true_type {};
template <typename T>
struct IsStringMap : std::false_type {};
template <typename T>
struct IsStringMap<std::map<std::string, T>> : std::true_type {};

// A position in a source: `file:line:col`, or an override given on the command line.
struct Where {
    std::string file;
    int line = 0;  // 1-based; 0: unknown
    int col = 0;
    std::string override_text;  // non-empty when the value came from `key=value`
};

struct ConfigError {
    Where where;
    std::string path;  // key path, "rollout.sampling.top_p", "nodes[2].id"
    std::string what;
    std::string str() const;
};

// Collects errors while decoding one document; remembers which paths came from overrides.
class DecodeContext {
public:
    explicit DecodeContext(std::string file) : file_(std::move(file)) {}

    void add_override(std::string path, std::string text) {
        overrides_.emplace_back(std::move(path), std::move(text));
    }
    void error(const YAML::Node& at, const std::string& path, std::string what);
    const std::vector<ConfigError>& errors() const { return errors_; }
    bool ok() const { return errors_.empty(); }
    // All errors, one per line, as an invalid_argument Status.
    Status status() const;

private:
    Where locate(const YAML::Node& at, const std::string& path) const;

    std::string file_;
    std::vector<std::pair<std::string, std::string>> overrides_;  // dotted path, "k=v" text
    std::vector<ConfigError> errors_;
};

std::string join_path(const std::string& base, std::string_view key);
std::string index_path(const std::string& base, size_t i);
std::string describe_node(const YAML::Node& node);  // "a mapping", "\"two\"", ...
// The closest of `candidates` to `key` if it is a plausible typo, else "".
std::string closest_key(std::string_view key, const std::vector<std::string_view>& candidates);

// Scalar parsers: nullopt when the text is not of the type.
std::optional<bool> parse_bool(const std::string& text);
std::optional<int64_t> parse_int(const std::string& text);
std::optional<uint64_t> parse_uint(const std::string& text);
std::optional<double> parse_double(const std::string& text);
// The shortest text that reads back as `v` ("0.2", not yaml-cpp's "0.20000000000000001"); a
// whole number keeps ".0" so that it still reads as a float; infinities as ".inf" / "-.inf".
std::string format_double(double v);

class Decoder;

// Decodes `node` into `out`, reporting problems to `ctx` under `path`. `out` keeps its default
// where the node is absent.
template <typename T>
void decode_value(DecodeContext& ctx, const YAML::Node& node, const std::string& path, T& out);

// Walks the fields of one mapping.
class Decoder {
public:
    Decoder(DecodeContext& ctx, const YAML::Node& map, std::string path)
        : ctx_(ctx), map_(map), path_(std::move(path)) {}

    template <typename T, typename... Opts>
    void field(std::string_view key, T& out, Opts... opts) {
        known_.push_back(key);
        const std::string path = join_path(path_, key);
        const YAML::Node child = find(key);
        if (!child) {
            if ((std::is_same_v<Opts, Required> || ...)) {
                ctx_.error(map_, path, "missing required field");
            }
            return;
        }
        const size_t before = ctx_.errors().size();
        decode_value(ctx_, child, path, out);
        if (ctx_.errors().size() == before) (apply_option(child, path, out, opts), ...);
    }

    // A cross-field rule; `key` names the field the message is attached to.
    void check(bool ok, std::string_view key, std::string what) {
        if (ok) return;
        const YAML::Node child = find(key);
        ctx_.error(child ? child : map_, join_path(path_, key), std::move(what));
    }

    // Reports keys that no field() asked for, and duplicate keys.
    void finish();

    const std::string& path() const { return path_; }

private:
    YAML::Node find(std::string_view key) const;

    template <typename T, typename O>
    void apply_option(const YAML::Node& node, const std::string& path, const T& value, const O& o) {
        if constexpr (std::is_same_v<O, NonEmpty>) {
            if constexpr (requires { value.empty(); }) {
                if (value.empty()) ctx_.error(node, path, "must not be empty");
            }
        } else if constexpr (requires {
                                 o.lo;
                                 o.hi;
                             }) {
            if constexpr (requires { value.has_value(); }) {
                if (value) check_range(node, path, *value, o);
            } else {
                check_range(node, path, value, o);
            }
        }
    }

    template <typename T, typename R>
    void check_range(const YAML::Node& node, const std::string& path, const T& value, const R& r) {
        if constexpr (std::is_arithmetic_v<T>) {
            if (value < r.lo || value > r.hi) {
                ctx_.error(node, path,
                           fmt::format("{} is out of range [{}, {}]", value, r.lo, r.hi));
            }
        }
    }

    DecodeContext& ctx_;
    const YAML::Node& map_;
    std::string path_;
    std::vector<std::string_view> known_;
};

template <typename T>
void decode_value(DecodeContext& ctx, const YAML::Node& node, const std::string& path, T& out) {
    if constexpr (Described<T>) {
        if (!node.IsMap()) {
            ctx.error(node, path, fmt::format("expected a mapping, got {}", describe_node(node)));
            return;
        }
        Decoder d(ctx, node, path);
        T::visit(d, out);
        d.finish();
    } else if constexpr (IsOptional<T>::value) {
        // std::optional<U>: null leaves it empty.
        if (node.IsNull()) {
            out.reset();
            return;
        }
        typename T::value_type v{};
        const size_t before = ctx.errors().size();
        decode_value(ctx, node, path, v);
        if (ctx.errors().size() == before) out = std::move(v);
    } else if constexpr (std::is_same_v<T, std::string>) {
        if (!node.IsScalar()) {
            ctx.error(node, path, fmt::format("expected a string, got {}", describe_node(node)));
            return;
        }
        out = node.Scalar();
    } else if constexpr (std::is_same_v<T, bool>) {
        auto v = node.IsScalar() ? parse_bool(node.Scalar()) : std::nullopt;
        if (!v) {
            ctx.error(node, path,
                      fmt::format("expected true or false, got {}", describe_node(node)));
            return;
        }
        out = *v;
    } else if constexpr (std::is_enum_v<T>) {
        if (node.IsScalar()) {
            for (const auto& [v, n] : EnumNames<T>::kNames) {
                if (node.Scalar() == n) {
                    out = v;
                    return;
                }
            }
        }
        ctx.error(
            node, path,
            fmt::format("expected one of {}, got {}", enum_choices<T>(), describe_node(node)));
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
        auto v = node.IsScalar() ? parse_int(node.Scalar()) : std::nullopt;
        if (!v || *v < std::numeric_limits<T>::min() || *v > std::numeric_limits<T>::max()) {
            ctx.error(node, path, fmt::format("expected an integer, got {}", describe_node(node)));
            return;
        }
        out = static_cast<T>(*v);
    } else if constexpr (std::is_integral_v<T>) {
        auto v = node.IsScalar() ? parse_uint(node.Scalar()) : std::nullopt;
        if (!v || *v > std::numeric_limits<T>::max()) {
            ctx.error(node, path,
                      fmt::format("expected a non-negative integer, got {}", describe_node(node)));
            return;
        }
        out = static_cast<T>(*v);
    } else if constexpr (std::is_floating_point_v<T>) {
        auto v = node.IsScalar() ? parse_double(node.Scalar()) : std::nullopt;
        if (!v) {
            ctx.error(node, path, fmt::format("expected a number, got {}", describe_node(node)));
            return;
        }
        out = static_cast<T>(*v);
    } else if constexpr (IsVector<T>::value) {
        if (!node.IsSequence()) {
            ctx.error(node, path, fmt::format("expected a list, got {}", describe_node(node)));
            return;
        }
        out.clear();
        for (size_t i = 0; i < node.size(); ++i) {
            typename T::value_type v{};
            decode_value(ctx, node[i], index_path(path, i), v);
            out.push_back(std::move(v));
        }
    } else if constexpr (IsStringMap<T>::value) {
        if (!node.IsMap()) {
            ctx.error(node, path, fmt::format("expected a mapping, got {}", describe_node(node)));
            return;
        }
        out.clear();
        for (const auto& kv : node) {
            const std::string key = kv.first.Scalar();
            typename T::mapped_type v{};
            decode_value(ctx, kv.second, join_path(path, key), v);
            out.emplace(key, std::move(v));
        }
    } else {
        static_assert(sizeof(T) == 0, "no YAML decoding for this type");
    }
}

// Builds a YAML node from a described struct (every field, defaults included).
template <typename T>
YAML::Node encode_value(const T& value);

class Encoder {
public:
    template <typename T, typename... Opts>
    void field(std::string_view key, const T& value, Opts...) {
        node_[std::string(key)] = encode_value(value);
    }
    void check(bool, std::string_view, const std::string&) {}
    YAML::Node node() const { return node_; }

private:
    YAML::Node node_{YAML::NodeType::Map};
};

template <typename T>
YAML::Node encode_value(const T& value) {
    if constexpr (Described<T>) {
        Encoder e;
        T::visit(e, value);
        return e.node();
    } else if constexpr (IsOptional<T>::value) {
        return value ? encode_value(*value) : YAML::Node(YAML::NodeType::Null);
    } else if constexpr (std::is_enum_v<T>) {
        return YAML::Node(std::string(enum_name(value)));
    } else if constexpr (std::is_floating_point_v<T>) {
        return YAML::Node(format_double(static_cast<double>(value)));
    } else if constexpr (std::is_same_v<T, std::string> || std::is_arithmetic_v<T>) {
        return YAML::Node(value);
    } else if constexpr (IsStringMap<T>::value) {
        YAML::Node n(YAML::NodeType::Map);
        for (const auto& [k, v] : value) n[k] = encode_value(v);
        return n;
    } else if constexpr (IsVector<T>::value) {
        YAML::Node n(YAML::NodeType::Sequence);
        for (const auto& v : value) n.push_back(encode_value(v));
        return n;
    } else {
        static_assert(sizeof(T) == 0, "no YAML encoding for this type");
    }
}

}  // namespace tandem::config
