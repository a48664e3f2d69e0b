#include "common/wire/json_fields.h"

namespace tandem::wire {

const Json* JsonFields::find(const char* key, bool required) {
    if (!j_.is_object()) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end() || (it->is_null() && !required)) {
        if (required) problems_.push_back(fmt::format("{}: missing field", key));
        return nullptr;
    }
    return &*it;
}

template <typename T>
void JsonFields::read(const char* key, T& out, bool required) {
    const Json* v = find(key, required);
    if (!v) return;
    if constexpr (std::is_same_v<T, std::string>) {
        if (!v->is_string()) return problem(fmt::format("{}: expected a string", key));
        out = v->get<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
        if (!v->is_boolean()) return problem(fmt::format("{}: expected true or false", key));
        out = v->get<bool>();
    } else if constexpr (std::is_same_v<T, int64_t>) {
        if (!v->is_number_integer()) return problem(fmt::format("{}: expected an integer", key));
        if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)) {
            return problem(fmt::format("{}: integer too large", key));
        }
        out = v->get<int64_t>();
    } else if constexpr (std::is_same_v<T, uint64_t>) {
        // A signed integer that is not negative counts (JSON built in C++ from an int64).
        if (!v->is_number_integer() || (!v->is_number_unsigned() && v->get<int64_t>() < 0)) {
            return problem(fmt::format("{}: expected a non-negative integer", key));
        }
        out = v->get<uint64_t>();
    } else if constexpr (std::is_same_v<T, double>) {
        if (!v->is_number()) return problem(fmt::format("{}: expected a number", key));
        out = v->get<double>();
    } else {
        out = *v;
    }
}

template void JsonFields::read(const char*, std::string&, bool);
template void JsonFields::read(const char*, bool&, bool);
template void JsonFields::read(const char*, int64_t&, bool);
template void JsonFields::read(const char*, uint64_t&, bool);
template void JsonFields::read(const char*, double&, bool);
template void JsonFields::read(const char*, Json&, bool);

void JsonFields::opt(const char* key, std::map<std::string, std::string>& out) {
    const Json* v = find(key, false);
    if (!v) return;
    if (!v->is_object()) return problem(fmt::format("{}: expected an object", key));
    out.clear();
    for (auto it = v->begin(); it != v->end(); ++it) {
        if (!it->is_string())
            return problem(fmt::format("{}.{}: expected a string", key, it.key()));
        out[it.key()] = it->get<std::string>();
    }
}

Status JsonFields::status() const {
    if (problems_.empty()) return Status();
    std::string msg = context_ + ": ";
    for (size_t i = 0; i < problems_.size(); ++i) msg += (i ? "; " : "") + problems_[i];
    return invalid_argument(std::move(msg));
}

}  // namespace tandem::wire
