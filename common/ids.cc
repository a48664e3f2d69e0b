#include "common/ids.h"

#include <charconv>

#include <fmt/format.h>

namespace tandem {

namespace {
constexpr std::string_view kJobPrefix = "job-";

Result<uint64_t> parse_number(std::string_view text, std::string_view what) {
    uint64_t n = 0;
    const char* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, n);
    if (text.empty() || ec != std::errc() || p != end) {
        return invalid_argument(fmt::format("{}: expected a number, got \"{}\"", what, text));
    }
    return n;
}
}  // namespace

Result<JobId> JobId::parse(std::string_view text) {
    std::string_view digits = text;
    if (digits.starts_with(kJobPrefix)) digits.remove_prefix(kJobPrefix.size());
    auto n = parse_number(digits, fmt::format("job id \"{}\"", text));
    if (!n.ok()) return n.status();
    if (*n == 0) return invalid_argument(fmt::format("job id \"{}\": must not be 0", text));
    return JobId(*n);
}

std::string JobId::str() const { return fmt::format("job-{:06d}", n_); }

std::string_view actor_role_name(ActorRole role) {
    return role == ActorRole::kTrainer ? "trainer" : "rollout";
}

Result<ActorRole> parse_actor_role(std::string_view text) {
    if (text == "trainer") return ActorRole::kTrainer;
    if (text == "rollout") return ActorRole::kRollout;
    return invalid_argument(
        fmt::format("unknown actor role \"{}\" (expected trainer or rollout)", text));
}

Result<ActorId> ActorId::parse(std::string_view text) {
    const auto slash = text.find('/');
    const auto dash = text.rfind('-');
    if (slash == std::string_view::npos || dash == std::string_view::npos || dash < slash) {
        return invalid_argument(fmt::format(
            "actor id \"{}\": expected JOB/ROLE-INDEX such as job-000042/rollout-1", text));
    }
    ActorId id;
    TANDEM_ASSIGN_OR_RETURN(id.job, JobId::parse(text.substr(0, slash)));
    TANDEM_ASSIGN_OR_RETURN(id.role, parse_actor_role(text.substr(slash + 1, dash - slash - 1)));
    TANDEM_ASSIGN_OR_RETURN(
        auto index, parse_number(text.substr(dash + 1), fmt::format("actor id \"{}\"", text)));
    if (index > UINT32_MAX)
        return invalid_argument(fmt::format("actor id \"{}\": index too large", text));
    id.index = static_cast<uint32_t>(index);
    return id;
}

std::string ActorId::str() const {
    return fmt::format("{}/{}-{}", job.str(), actor_role_name(role), index);
}

Status validate_node_id(std::string_view id) {
    if (id.empty()) return invalid_argument("node id must not be empty");
    if (id.size() > 128)
        return invalid_argument(fmt::format("node id \"{}\" is longer than 128", id));
    for (char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok) {
            return invalid_argument(fmt::format(
                "node id \"{}\": only letters, digits, '.', '_' and '-' are allowed", id));
        }
    }
    return Status();
}

std::string default_node_id(std::string_view hostname, std::string_view role, int index) {
    return fmt::format("{}-{}-{}", hostname, role, index);
}

}  // namespace tandem
