#pragma once

// Auth: the HTTP API's bearer tokens and their roles (docs/security.md).
//
//   scrape     GET /metrics only (for Prometheus)
//   viewer     every GET except weight descriptors, and /metrics
//   submitter  viewer + submit jobs + cancel the jobs it submitted
//   actor      viewer + weight-version descriptors (the token node agents hand their actors)
//   admin      everything, including cancelling any job and creating tokens
//
// Tokens live in a JSON file in the run directory (mode 0600), written only by the coordinator:
// {"tokens": [{"name": "...", "role": "viewer", "token": "..."}]}. A token is compared in constant
// time against every known token. Owned by the coordinator loop; not thread-safe.
//
// Handlers check a request with
//   if (auto d = auth.check(request, Role::kViewer); !d.ok()) return d.response();

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/http_server.h"

namespace tandem::coord {

enum class Role { kScrape, kViewer, kSubmitter, kActor, kAdmin };

std::string_view role_name(Role r);
std::optional<Role> parse_role(std::string_view name);
// Whether a token of role `have` may do what needs role `need` (admin may do everything; scrape
// only scrape; viewer and submitter and actor include viewer; only actor and admin read
// descriptors).
bool role_allows(Role have, Role need);

struct Principal {
    std::string name;  // the token's name ("admin", "actors", "ci-viewer"...)
    Role role = Role::kViewer;
};

// The outcome of checking a request: 200 (allowed, `who` set), 401 (no or unknown token) or 403
// (a known token whose role is too little).
struct AuthDecision {
    int status = 200;
    Principal who;
    std::string error;

    bool ok() const { return status == 200; }
    HttpResponse response() const;  // the 401/403 JSON reply
};

class Auth {
public:
    // Tokens from `path` (a missing file is an empty set; an unreadable or malformed one is an
    // error naming it). `path` empty: in memory only (tests).
    static Result<Auth> load(const std::string& path);
    Auth() = default;

    // Adds a token without saving (the run directory's api-token as admin, tests).
    void add(std::string token, Role role, std::string name);
    // A fresh random token of `role` named `name` (unique: "-2"... appended), saved to the file
    // before it is returned.
    Result<std::string> create(Role role, std::string name);
    // The token of the first entry named `name`, if any.
    std::optional<std::string> token_named(std::string_view name) const;

    // Checks the request's "Authorization: Bearer TOKEN" against `need`.
    AuthDecision check(const HttpRequest& r, Role need) const;
    // The principal of a bearer token, if it is known.
    std::optional<Principal> identify(std::string_view authorization) const;

    size_t size() const { return entries_.size(); }

private:
    struct Entry {
        std::string token;
        Principal who;
        bool persisted = false;  // false: added with add(), never written to the file
    };
    Status save() const;

    std::string path_;
    std::vector<Entry> entries_;
};

}  // namespace tandem::coord
