#pragma once

// Reads typed fields out of a JSON object and collects every problem with its field name, so a
// malformed message is refused with one clear error ("register: node_id: missing field").

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tandem::wire {

using Json = nlohmann::json;

class JsonFields {
public:
    JsonFields(const Json& j, std::string context) : j_(j), context_(std::move(context)) {
        if (!j_.is_object()) problems_.push_back("expected a JSON object");
    }

    void req(const char* key, std::string& out) { read(key, out, true); }
    void req(const char* key, int64_t& out) { read(key, out, true); }
    void req(const char* key, uint64_t& out) { read(key, out, true); }
    void req(const char* key, double& out) { read(key, out, true); }
    void req(const char* key, bool& out) { read(key, out, true); }
    void req(const char* key, Json& out) { read(key, out, true); }
    void opt(const char* key, std::string& out) { read(key, out, false); }
    void opt(const char* key, int64_t& out) { read(key, out, false); }
    void opt(const char* key, uint64_t& out) { read(key, out, false); }
    void opt(const char* key, double& out) { read(key, out, false); }
    void opt(const char* key, bool& out) { read(key, out, false); }
    void opt(const char* key, Json& out) { read(key, out, false); }
    void opt(const char* key, std::map<std::string, std::string>& out);

    // A list of objects, each decoded by T::from_json.
    template <typename T>
    void req_list(const char* key, std::vector<T>& out) {
        list(key, out, true);
    }
    template <typename T>
    void opt_list(const char* key, std::vector<T>& out) {
        list(key, out, false);
    }
    // A nested object decoded by T::from_json.
    template <typename T>
    void req_object(const char* key, T& out) {
        object(key, out, true);
    }
    template <typename T>
    void opt_object(const char* key, T& out) {
        object(key, out, false);
    }

    void problem(std::string what) { problems_.push_back(std::move(what)); }
    Status status() const;

private:
    const Json* find(const char* key, bool required);
    template <typename T>
    void read(const char* key, T& out, bool required);
    template <typename T>
    void list(const char* key, std::vector<T>& out, bool required) {
        const Json* v = find(key, required);
        if (!v) return;
        if (!v->is_array()) {
            problems_.push_back(fmt::format("{}: expected a list", key));
            return;
        }
        out.clear();
        for (size_t i = 0; i < v->size(); ++i) {
            auto item = T::from_json((*v)[i]);
            if (!item.ok()) {
                problems_.push_back(fmt::format("{}[{}]: {}", key, i, item.status().message()));
                continue;
            }
            out.push_back(std::move(*item));
        }
    }
    template <typename T>
    void object(const char* key, T& out, bool required) {
        const Json* v = find(key, required);
        if (!v) return;
        auto item = T::from_json(*v);
        if (!item.ok()) {
            problems_.push_back(fmt::format("{}: {}", key, item.status().message()));
            return;
        }
        out = std::move(*item);
    }

    const Json& j_;
    std::string context_;
    std::vector<std::string> problems_;
};

}  // namespace tandem::wire
