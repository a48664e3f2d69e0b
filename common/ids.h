#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tandem {

// Job ids are numbers shown as "job-000042".
class JobId {
public:
    JobId() = default;
    explicit JobId(uint64_t n) : n_(n) {}
    static Result<JobId> parse(std::string_view text);

    uint64_t number() const { return n_; }
    bool valid() const { return n_ != 0; }
    std::string str() const;

    auto operator<=>(const JobId&) const = default;

private:
    uint64_t n_ = 0;  // 0 means "no job"
};

// The two actor roles of an RL job.
enum class ActorRole { kTrainer, kRollout };
std::string_view actor_role_name(ActorRole role);
Result<ActorRole> parse_actor_role(std::string_view text);

// Actor ids name the job, the role and an index: "job-000042/rollout-1".
struct ActorId {
    JobId job;
    ActorRole role = ActorRole::kTrainer;
    uint32_t index = 0;

    static Result<ActorId> parse(std::string_view text);
    std::string str() const;
    auto operator<=>(const ActorId&) const = default;
};

// Node ids come from the cluster file; they are non-empty and made of [A-Za-z0-9._-].
Status validate_node_id(std::string_view id);
// The default node id: hostname, role and index ("myhost-rollout-1").
std::string default_node_id(std::string_view hostname, std::string_view role, int index);

// Weight versions are per job; version 0 is the initial policy.
using Version = uint64_t;

}  // namespace tandem

template <>
struct std::hash<tandem::JobId> {
    size_t operator()(const tandem::JobId& id) const noexcept {
        return std::hash<uint64_t>()(id.number());
    }
};
