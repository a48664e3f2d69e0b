#include "coordinator/auth.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/run_dir.h"

namespace tandem::coord {

namespace {

using Json = nlohmann::json;

constexpr std::string_view kBearer = "Bearer ";

// Compares in time that depends only on the lengths, so a token cannot be guessed byte by byte.
bool constant_time_equal(std::string_view a, std::string_view b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    const size_t n = std::min(a.size(), b.size());
    for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

}  // namespace

std::string_view role_name(Role r) {
    switch (r) {
        case Role::kScrape:
            return "scrape";
        case Role::kViewer:
            return "viewer";
        case Role::kSubmitter:
            return "submitter";
        case Role::kActor:
            return "actor";
        case Role::kAdmin:
            return "admin";
    }
    return "?";
}

std::optional<Role> parse_role(std::string_view name) {
    for (Role r : {Role::kScrape, Role::kViewer, Role::kSubmitter, Role::kActor, Role::kAdmin}) {
        if (role_name(r) == name) return r;
    }
    return std::nullopt;
}

bool role_allows(Role have, Role need) {
    if (have == Role::kAdmin || have == need) return true;
    switch (need) {
        case Role::kScrape:
            return true;  // every role may scrape
        case Role::kViewer:
            return have != Role::kScrape;
        default:
            return false;  // submitter, actor, admin: only themselves (and admin)
    }
}

HttpResponse AuthDecision::response() const {
    // The message quotes the request path, which need not be UTF-8.
    return {status, "application/json",
            Json{{"error", error}}.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

Result<Auth> Auth::load(const std::string& path) {
    Auth a;
    a.path_ = path;
    if (path.empty()) return a;
    auto text = read_file(path);
    if (!text.ok()) {
        if (text.status().code() == StatusCode::kNotFound) return a;
        return text.status();
    }
    const Json j = Json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("tokens") || !j["tokens"].is_array())
        return invalid_argument(fmt::format("{}: expected {{\"tokens\": [...]}}", path));
    for (size_t i = 0; i < j["tokens"].size(); ++i) {
        const Json& e = j["tokens"][i];
        const auto role = e.is_object() && e.value("role", Json()).is_string()
                              ? parse_role(e["role"].get<std::string>())
                              : std::nullopt;
        if (!role || !e.value("token", Json()).is_string() ||
            e["token"].get<std::string>().empty() || !e.value("name", Json()).is_string()) {
            return invalid_argument(
                fmt::format("{}: tokens[{}]: expected {{\"name\": ..., \"role\": "
                            "scrape|viewer|submitter|actor|admin, \"token\": ...}}",
                            path, i));
        }
        a.entries_.push_back({e["token"].get<std::string>(),
                              {e["name"].get<std::string>(), *role},
                              /*persisted=*/true});
    }
    return a;
}

void Auth::add(std::string token, Role role, std::string name) {
    entries_.push_back({std::move(token), {std::move(name), role}, /*persisted=*/false});
}

Result<std::string> Auth::create(Role role, std::string name) {
    if (name.empty()) name = std::string(role_name(role));
    std::string unique = name;
    for (int n = 2; token_named(unique); ++n) unique = fmt::format("{}-{}", name, n);
    TANDEM_ASSIGN_OR_RETURN(std::string token, random_hex(24));
    entries_.push_back({token, {unique, role}, /*persisted=*/true});
    if (Status s = save(); !s.ok()) {
        entries_.pop_back();
        return s;
    }
    return token;
}

std::optional<std::string> Auth::token_named(std::string_view name) const {
    for (const auto& e : entries_) {
        if (e.who.name == name) return e.token;
    }
    return std::nullopt;
}

Status Auth::save() const {
    if (path_.empty()) return Status::ok_status();
    Json list = Json::array();
    for (const auto& e : entries_) {
        if (!e.persisted) continue;
        list.push_back({{"name", e.who.name},
                        {"role", std::string(role_name(e.who.role))},
                        {"token", e.token}});
    }
    return write_file_atomic(path_, Json{{"tokens", list}}.dump(2) + "\n", 0600);
}

std::optional<Principal> Auth::identify(std::string_view authorization) const {
    if (!authorization.starts_with(kBearer)) return std::nullopt;
    const std::string_view token = authorization.substr(kBearer.size());
    if (token.empty()) return std::nullopt;
    std::optional<Principal> found;
    for (const auto& e : entries_) {  // no early exit: the time does not say which entry matched
        if (constant_time_equal(token, e.token) && !found) found = e.who;
    }
    return found;
}

AuthDecision Auth::check(const HttpRequest& r, Role need) const {
    AuthDecision d;
    auto who = identify(r.authorization);
    if (!who) {
        d.status = 401;
        d.error = r.authorization.empty()
                      ? "missing API token (Authorization: Bearer TOKEN; the admin token is in "
                        "the run directory's api-token file)"
                      : "unknown API token";
        return d;
    }
    d.who = std::move(*who);
    if (!role_allows(d.who.role, need)) {
        d.status = 403;
        d.error = fmt::format("token '{}' has role {}; {} {} needs {}", d.who.name,
                              role_name(d.who.role), r.method, r.path, role_name(need));
    }
    return d;
}

}  // namespace tandem::coord
